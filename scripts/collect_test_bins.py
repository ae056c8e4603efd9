"""Copies the test executables named in `cargo test --no-run --message-format=json` output
(on stdin) into the folder given, stripped, for the GPU machine (see scripts/gpu_check.sh)."""
import json
import os
import shutil
import subprocess
import sys

dest = sys.argv[1]
os.makedirs(dest, exist_ok=True)
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    # Proc-macro crates' unit tests link libstd dynamically: they run only where they were built.
    kinds = m.get("target", {}).get("kind", [])
    if (m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]
            and "proc-macro" not in kinds):
        path = m["executable"]
        target = os.path.join(dest, os.path.basename(path))
        shutil.copy(path, target)
        subprocess.run(["strip", target], check=False)
        print(target)
