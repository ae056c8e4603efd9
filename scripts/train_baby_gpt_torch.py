#!/usr/bin/env python3
"""PyTorch baseline for the RustyGradients "baby GPT" benchmark.

A self-contained character-level GPT trainer that mirrors nanoGPT's model
(GPT with bias=True, tied token embedding / LM head) and training loop
(AdamW, linear warmup + cosine decay, global-norm grad clipping). The Rust
trainer is compared against the numbers this script prints.

Usage (from the repository root):

    .venv/bin/python scripts/train_baby_gpt_torch.py                 # full run
    .venv/bin/python scripts/train_baby_gpt_torch.py --max-iters 30 \
        --eval-interval 15 --eval-iters 2                             # smoke test

Defaults are nanoGPT's CPU "baby GPT" settings: 4 layers, 4 heads,
n_embd 128, block 64, batch 12, dropout 0, lr 1e-3 -> 1e-4 over 2000 iters
with 100 warmup iters, AdamW(0.9, 0.99), weight decay 0.1, clip 1.0.

Output: progress lines "step N: train loss X, val loss Y", a 300-character
sample, and finally one line

    RESULT {"impl": "pytorch", "torch_version": ..., "threads": ...,
            "final_train_loss": ..., "final_val_loss": ..., "tokens_per_s": ...,
            "train_seconds": ..., "peak_rss_mb": ..., "steps": ..., "params": ...}

tokens_per_s = batch_size * block_size * steps / train_seconds, where
train_seconds covers only the training steps (batch sampling, forward,
backward, clipping, optimizer step) and excludes evaluation and sampling.
"params" counts every distinct parameter tensor once (the tied
wte / lm_head weight is counted once; position embeddings are included).
"""

import argparse
import json
import math
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "shakespeare" / "shakespeare.txt"


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="training text file")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--max-iters", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=100, help="warmup iterations")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.99)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="0 disables clipping")
    ap.add_argument("--eval-interval", type=int, default=250)
    ap.add_argument("--eval-iters", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's own default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16 on the CPU: f32 tensors, matmuls multiplied in bf16 by oneDNN "
                         "(torch.backends.mkldnn.matmul.fp32_precision), as the Rust trainer's "
                         "--precision bf16 does on a CPU")
    ap.add_argument("--sample-chars", type=int, default=300)
    return ap.parse_args()


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


class CharData:
    """Character-level tokenisation of one text file, split 90% / 10%."""

    def __init__(self, path):
        text = Path(path).read_text(encoding="utf-8")
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)
        self.itos = dict(enumerate(self.chars))
        # Encode in bulk: code points of the text, mapped to their rank in the
        # sorted vocabulary (every code point is present, so searchsorted is exact).
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        vocab_cp = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        ids = np.searchsorted(vocab_cp, codepoints).astype(np.int64, copy=False)
        data = torch.from_numpy(ids)
        n = int(0.9 * len(data))
        self.splits = {"train": data[:n], "val": data[n:]}

    def decode(self, ids):
        return "".join(self.itos[i] for i in ids)

    def get_batch(self, split, batch_size, block_size, device):
        """Random contiguous windows: x = data[i:i+block], y = data[i+1:i+1+block]."""
        data = self.splits[split]
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([data[i:i + block_size] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + block_size] for i in ix])
        return x.to(device), y.to(device)


# ---------------------------------------------------------------------------
# Model (nanoGPT's GPT with bias=True)
# ---------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        assert n_embd % n_head == 0
        self.n_head = n_head
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)  # q, k, v projections in one
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd, dropout):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU()  # exact (erf) GELU
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, dropout):
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList([Block(n_embd, n_head, dropout) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd, eps=1e-5),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        # Weight tying: the token embedding and the output projection share one
        # (vocab, n_embd) matrix.
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # Residual projections get a depth-scaled std (GPT-2 paper).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        # LayerNorm keeps its default init: weight 1, bias 0.

    def num_params(self):
        # named_parameters() de-duplicates shared tensors, so the tied weight
        # is counted once.
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None):
        B, T = idx.shape
        assert T <= self.block_size, f"sequence length {T} > block size {self.block_size}"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.block_size:]  # crop the context to the block
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits, dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
        return idx


# ---------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------


def make_optimizer(model, weight_decay, lr, betas):
    """AdamW with decay only on the Linear weights.

    Parameters with dim >= 2 are decayed unless they are embeddings; wte is
    tied to lm_head.weight and is treated as an embedding (no decay). Biases
    and LayerNorm parameters are never decayed.
    """
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # unique tensors, tied weight once
        if p.dim() >= 2 and id(p) not in embedding_ids:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    print(f"decayed tensors: {len(decay)} ({sum(p.numel() for p in decay):,} params), "
          f"non-decayed tensors: {len(no_decay)} ({sum(p.numel() for p in no_decay):,} params)")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)


def get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """nanoGPT's schedule: linear warmup, cosine decay to min_lr, then flat."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


@torch.no_grad()
def estimate_loss(model, data, args):
    """Mean loss over eval_iters random batches of each split, in eval mode."""
    model.eval()
    out = {}
    for split in ("train", "val"):
        losses = torch.zeros(args.eval_iters)
        for k in range(args.eval_iters):
            x, y = data.get_batch(split, args.batch_size, args.block_size, args.device)
            _, loss = model(x, y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train()
    return out


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main():
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.precision == "bf16":
        if args.device != "cpu":
            raise SystemExit("--precision bf16 is the CPU's f32-with-bf16-matmuls mode")
        try:
            torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        except AttributeError:  # PyTorch before 2.9: the older switch
            torch.set_float32_matmul_precision("medium")
    torch.manual_seed(args.seed)

    data = CharData(args.data)
    print(f"data: {args.data} ({len(data.splits['train']):,} train / "
          f"{len(data.splits['val']):,} val chars, vocab {data.vocab_size})")

    model = GPT(data.vocab_size, args.block_size, args.n_layer, args.n_head,
                args.n_embd, args.dropout).to(args.device)
    n_params = model.num_params()
    print(f"model: {args.n_layer} layers, {args.n_head} heads, n_embd {args.n_embd}, "
          f"block {args.block_size}: {n_params:,} parameters")
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"precision {args.precision}")

    optimizer = make_optimizer(model, args.weight_decay, args.lr, (args.beta1, args.beta2))

    train_seconds = 0.0
    losses = None
    model.train()
    for it in range(args.max_iters):
        if it % args.eval_interval == 0:
            losses = estimate_loss(model, data, args)
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}",
                  flush=True)

        # --- one timed training step ---
        sync(args.device)
        t0 = time.perf_counter()
        lr = get_lr(it, args.lr, args.min_lr, args.warmup, args.max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = data.get_batch("train", args.batch_size, args.block_size, args.device)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0.0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        sync(args.device)
        train_seconds += time.perf_counter() - t0

    losses = estimate_loss(model, data, args)
    print(f"step {args.max_iters}: train loss {losses['train']:.4f}, "
          f"val loss {losses['val']:.4f}", flush=True)

    tokens = args.batch_size * args.block_size * args.max_iters
    tokens_per_s = tokens / train_seconds if train_seconds > 0 else 0.0
    print(f"trained {args.max_iters} steps in {train_seconds:.2f} s: {tokens_per_s:,.0f} tokens/s")

    # A sample from a newline prompt, so a reader can judge the text.
    model.eval()
    prompt = torch.tensor([[data.chars.index("\n")]], dtype=torch.long, device=args.device)
    sample = model.generate(prompt, args.sample_chars, temperature=0.8, top_k=200)
    print("---- sample ----")
    print(data.decode(sample[0, 1:].tolist()))
    print("----------------")

    result = {
        "impl": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "final_train_loss": losses["train"],
        "final_val_loss": losses["val"],
        "tokens_per_s": tokens_per_s,
        "train_seconds": train_seconds,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps": args.max_iters,
        "params": n_params,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
