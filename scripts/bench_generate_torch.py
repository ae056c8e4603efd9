"""HuggingFace transformers side of the generation benchmark: greedy `model.generate` speed of a
model directory made by scripts/make_bench_models.py, on CPU or CUDA.

    .venv/bin/python scripts/bench_generate_torch.py --model target/bench-models/gpt2-124m-f32 \
        --dtype f32 --tokens 128 --batch 1 --threads 2 [--device cpu|cuda] [--runs 3]

Loads the directory with AutoModelForCausalLM (eager PyTorch, transformers' default attention,
default dynamic KV cache) cast to --dtype, feeds the same short fixed prompt (PROMPT, 10 GPT-2
tokens) to each of the --batch rows (so no padding), makes one warm-up `generate` call, then times
--runs calls of `generate(max_new_tokens=N, min_new_tokens=N, do_sample=False)`: min_new_tokens
masks EOS, so every call makes exactly N new tokens per row (checked). The time includes the
prompt's prefill (10 tokens) and everything `generate` does per step (logits processors, argmax,
cache update). On CUDA each timed call ends with torch.cuda.synchronize().

Prints one JSON line on stdout:
    {"impl": "transformers", "model": "gpt2-124m-f32", "dtype": "f32", "device": "cpu",
     "batch": 1, "threads": 2, "new_tokens": 128, "prompt_tokens": 10,
     "tokens_per_s": ..., "tokens_per_s_best": ..., "tokens_per_s_runs": [...],
     "seconds_runs": [...], "torch": ..., ...}
tokens_per_s = new tokens x batch / seconds, median over the runs; tokens_per_s_best = the fastest
run (on a shared machine, the least disturbed one); loadavg_1m_before = the 1-minute load average
before the warm-up (other work on the machine shows up here). Progress goes to stderr.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = "The quick brown fox jumps over the lazy dog and"
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF model directory")
    ap.add_argument("--dtype", choices=list(DTYPES), default="f32")
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per row")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--runs", type=int, default=3, help="timed runs (median reported)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    dev = torch.device(args.device)
    dtype = DTYPES[args.dtype]

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(dev).eval()
    ids = torch.tensor([tok.encode(PROMPT)] * args.batch, device=dev)
    mask = torch.ones_like(ids)
    pad = tok.eos_token_id if tok.eos_token_id is not None else 0

    def run():
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.tokens,
                             min_new_tokens=args.tokens, do_sample=False, pad_token_id=pad,
                             num_beams=1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        assert out.shape == (args.batch, ids.shape[1] + args.tokens), out.shape
        return dt

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    run()  # warm-up
    print(f"warm-up {time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)
    secs = []
    for i in range(args.runs):
        secs.append(run())
        print(f"run {i}: {secs[-1]:.3f} s, {args.tokens * args.batch / secs[-1]:.2f} tok/s",
              file=sys.stderr, flush=True)
    tps = [args.tokens * args.batch / s for s in secs]
    print(json.dumps({
        "impl": "transformers", "model": os.path.basename(os.path.normpath(args.model)),
        "dtype": args.dtype, "device": args.device, "batch": args.batch,
        "threads": args.threads if args.device == "cpu" else None,
        "new_tokens": args.tokens, "prompt_tokens": ids.shape[1],
        "tokens_per_s": round(statistics.median(tps), 2),
        "tokens_per_s_best": round(max(tps), 2), "tokens_per_s_runs": [round(x, 2) for x in tps],
        "seconds_runs": [round(s, 3) for s in secs],
        "torch": torch.__version__, "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "loadavg_1m_before": load,
    }), flush=True)


if __name__ == "__main__":
    main()
