"""safetensors interop fixtures for crates/rustygradients-io/tests/safetensors_io.rs.

  .venv/bin/python scripts/gen_safetensors_fixtures.py          # write the PyTorch-side fixtures
  .venv/bin/python scripts/gen_safetensors_fixtures.py --check  # open the file RustyGradients wrote

The first writes tests/fixtures/torch_tensors.safetensors with safetensors.torch.save_file
(f32, f64, f16, bf16, int64, uint8) and torch_tensors.json with every value as a float, which the
Rust test compares exactly. The second loads tests/fixtures/ours.safetensors (written by
`save_safetensors`, see the test `our_file_for_pytorch_is_stable`) with
safetensors.torch.load_file and checks each tensor against the values the Rust test wrote.
"""
import json
import zlib
import math
import pathlib
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

FIX = pathlib.Path(__file__).resolve().parent.parent / "crates/rustygradients-io/tests/fixtures"


def write_torch_fixtures():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, generator=g, dtype=torch.float64) * 3
    tensors = {
        "f32": base.to(torch.float32),
        "f64": base.clone(),
        "f16": base.to(torch.float16),
        "bf16": base.to(torch.bfloat16),
        "i64": torch.tensor([-(2**40), -1, 0, 7, 2**40], dtype=torch.int64),
        "u8": torch.arange(0, 256, 51, dtype=torch.uint8).reshape(2, 3),
        "transposed_f32": base.to(torch.float32).t().contiguous(),
    }
    save_file(tensors, FIX / "torch_tensors.safetensors", metadata={"written_by": "torch"})
    names = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16",
             torch.bfloat16: "bf16", torch.int64: "i64", torch.uint8: "u8"}
    expected = {
        k: {"dtype": names[v.dtype], "shape": list(v.shape),
            "values": [float(x) for x in v.to(torch.float64).flatten().tolist()]}
        for k, v in tensors.items()
    }
    (FIX / "torch_tensors.json").write_text(json.dumps(expected, indent=1) + "\n")
    print("wrote", FIX / "torch_tensors.safetensors")


def check_ours():
    path = FIX / "ours.safetensors"
    t = load_file(path)
    with safe_open(path, framework="pt") as f:
        meta = dict(f.metadata())
    sums = json.loads(meta.pop("rustygradients.crc32"))
    assert meta == {"written_by": "rustygradients"}, meta
    # The checksums are plain CRC-32 (zlib's) of each tensor's little-endian bytes.
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        crc = zlib.crc32(raw[8 + n + start:8 + n + end])
        assert sums[name] == f"{crc:08x}", (name, sums[name], crc)
    assert sorted(sums) == sorted(k for k in header if k != "__metadata__")
    f32max = torch.finfo(torch.float32).max
    want = {
        "f32": (torch.float32, [2, 3], [1.5, -2.25, 3.0e-8, f32max, -0.0, 7.0]),
        "f64": (torch.float64, [2], [math.pi, -1e300]),
        "f16": (torch.float16, [3], [0.5, -65504.0, 1e-5]),
        "bf16": (torch.bfloat16, [1, 2], [1.0, -3.0e38]),
        "i64": (torch.int64, [3], [-(2**63), 0, 2**63 - 1]),
        "u32": (torch.uint32, [2], [0, 2**32 - 1]),
        "u8": (torch.uint8, [3, 1], [0, 1, 255]),
        "scalar": (torch.float32, [], [42.0]),
    }
    assert sorted(t) == sorted(want), sorted(t)
    for name, (dtype, shape, values) in want.items():
        x = t[name]
        assert x.dtype == dtype, (name, x.dtype)
        assert list(x.shape) == shape, (name, x.shape)
        if dtype == torch.uint32:
            got = [int(v) for v in x.to(torch.int64).flatten().tolist()]
            exp = values
        elif dtype == torch.int64:
            got, exp = x.flatten().tolist(), values
        else:
            got = x.to(torch.float64).flatten().tolist()
            exp = torch.tensor(values, dtype=torch.float64).to(dtype).to(torch.float64).tolist()
        assert got == exp, (name, got, exp)
    print(f"{path}: {len(t)} tensors load in PyTorch with the expected dtypes, shapes and values")


if __name__ == "__main__":
    check_ours() if "--check" in sys.argv else write_torch_fixtures()
