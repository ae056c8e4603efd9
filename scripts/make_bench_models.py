"""Write the randomly initialised HuggingFace model directories used by the generation benchmarks
(scripts/bench_generate_torch.py, scripts/bench_llamacpp.sh and RustyGradients' own generate).

Run from the repository root (no network needed; CPU is enough):

    .venv/bin/python scripts/make_bench_models.py                 # all four directories
    .venv/bin/python scripts/make_bench_models.py --only gpt2     # just the three GPT-2s
    .venv/bin/python scripts/make_bench_models.py --only llama    # just the 1.1B Llama
    .venv/bin/python scripts/make_bench_models.py --force         # rewrite existing ones

Needs torch, transformers (5.x), tokenizers and safetensors. Output goes to target/bench-models/
(git-ignored); a directory that already exists is skipped unless --force. Prints one line per
directory (name, parameter count, dtype, size on disk, seconds). The output is deterministic
(fixed seeds), so the Rust and Python benchmarks can rebuild the same models independently.

target/bench-models/
    gpt2-124m-f32/, gpt2-124m-f16/, gpt2-124m-bf16/
        transformers' default GPT2Config() (12 layers, 12 heads, 768 embd, n_positions 1024,
        vocab 50257, 124.4M parameters, lm_head tied to wte) plus the unused key n_ctx 1024 that
        llama.cpp's converter needs; random init by GPT-2's own _init_weights after
        torch.manual_seed(SEED); the same f32 weights, cast once to f16 / bf16.
    llama-1b-bf16/
        TinyLlama-1.1B shape (hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 KV heads,
        rope_theta 10000, rms_norm_eps 1e-5, max_position_embeddings 2048, untied lm_head) but with
        GPT-2's vocabulary of 50257 (the GPT-2 tokenizer is reused: there is no SentencePiece
        model offline), so 1.17B parameters rather than 1.10B; bf16. For GPU benchmarks.

Each directory holds config.json, generation_config.json (bos = eos = pad = 50256), a single
model.safetensors, tokenizer.json + tokenizer_config.json (GPT-2's real byte-level BPE; its
pre-tokenizer is the one llama.cpp's convert_hf_to_gguf.py recognises as "gpt-2") and, like the
openai-community/gpt2 repository, the BPE source files as vocab.json and merges.txt. The BPE files
come from $GPT2_BPE_DIR, else /work/shared/data/gpt2-bpe/{encoder.json,vocab.bpe}, else the other
places in BPE_DIRS (on a machine without /work/shared, copy the two files into target/gpt2-bpe/).
"""
import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch
from transformers import (GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, LlamaConfig,
                          LlamaForCausalLM)

SEED = 1234
REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "target" / "bench-models"
# GPT-2's encoder.json + vocab.bpe: $GPT2_BPE_DIR, else the first of these that has them (on a
# machine without /work/shared, e.g. a GPU box, copy the two files into target/gpt2-bpe/).
BPE_DIRS = [Path(p) for p in [os.environ.get("GPT2_BPE_DIR"), "/work/shared/data/gpt2-bpe",
                              REPO.parent / "shared/data/gpt2-bpe", REPO / "shared/data/gpt2-bpe",
                              REPO / "target/gpt2-bpe"] if p]
BPE_DIR = next((d for d in BPE_DIRS if (d / "encoder.json").exists() and (d / "vocab.bpe").exists()),
               None)
EOT = 50256  # <|endoftext|>


def gpt2_tokenizer():
    if BPE_DIR is None:
        raise SystemExit("GPT-2 BPE files (encoder.json, vocab.bpe) not found in any of: "
                         + ", ".join(map(str, BPE_DIRS)) + "; set GPT2_BPE_DIR")
    # transformers 5 ignores GPT2TokenizerFast(vocab_file=..., merges_file=...) (the tokenizer
    # comes out empty), so read the two files and pass vocab + merges themselves.
    vocab = json.loads((BPE_DIR / "encoder.json").read_text(encoding="utf-8"))
    lines = (BPE_DIR / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    merges = [tuple(l.split(" ")) for l in lines if l and not l.startswith("#version")]
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges, model_max_length=1024)
    assert len(tok) == 50257 and tok.encode("Hello world") == [15496, 995], "bad GPT-2 BPE files"
    return tok


def save(model, tok, name, dtype, t0):
    d = OUT / name
    tmp = OUT / (name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.generation_config.bos_token_id = EOT
    model.generation_config.eos_token_id = EOT
    model.generation_config.pad_token_id = EOT
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.copyfile(BPE_DIR / "encoder.json", tmp / "vocab.json")
    shutil.copyfile(BPE_DIR / "vocab.bpe", tmp / "merges.txt")
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    size = sum(f.stat().st_size for f in d.iterdir()) / 2**20
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n / 1e6:.1f}M params, {dtype}, {size:.0f} MiB, {time.time() - t0:.1f} s",
          flush=True)


def make_gpt2(force):
    names = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
    todo = [k for k in names if force or not (OUT / f"gpt2-124m-{k}").exists()]
    if not todo:
        print("gpt2-124m-*: already there (--force to rewrite)")
        return
    t0 = time.time()
    tok = gpt2_tokenizer()
    # 124M: n_layer 12, n_head 12, n_embd 768, n_positions 1024, vocab 50257. n_ctx is an unused
    # extra key (as in openai-community/gpt2's config.json) that llama.cpp's converter requires.
    cfg = GPT2Config(n_ctx=1024)
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(cfg).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k in todo:
        model.to(torch.float32).load_state_dict(state)  # the same f32 weights, then one cast
        model.to(names[k])
        save(model, tok, f"gpt2-124m-{k}", k, t0)
        t0 = time.time()


def make_llama(force):
    name = "llama-1b-bf16"
    if not force and (OUT / name).exists():
        print(f"{name}: already there (--force to rewrite)")
        return
    t0 = time.time()
    tok = gpt2_tokenizer()
    cfg = LlamaConfig(vocab_size=50257, hidden_size=2048, intermediate_size=5632,
                      num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                      max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
                      hidden_act="silu", tie_word_embeddings=False, bos_token_id=EOT,
                      eos_token_id=EOT, pad_token_id=EOT)
    torch.manual_seed(SEED)
    # Initialise in f32 (about 5 GB of RAM) and cast, rather than initialising in bf16.
    model = LlamaForCausalLM(cfg).eval().to(torch.bfloat16)
    save(model, tok, name, "bf16", t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["gpt2", "llama"], help="make only this family")
    ap.add_argument("--force", action="store_true", help="rewrite directories that exist")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    if args.only in (None, "gpt2"):
        make_gpt2(args.force)
    if args.only in (None, "llama"):
        make_llama(args.force)


if __name__ == "__main__":
    main()
