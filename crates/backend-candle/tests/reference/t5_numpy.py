#!/usr/bin/env python3
"""Independent numpy-only reference for Hugging Face T5 generation (greedy and beam search).

Semantics followed: transformers v4.37-v4.48, i.e. between PR #27808 (Dec 2023: `generated_len`,
`decoder_prompt_len`) and PR #35802 (vectorised beam search, "pin <=4.48" for BeamScorer users). Read from
huggingface/transformers `generation/beam_search.py` @ 4e7bd11fa959587a64a649050c30c999afae66c8,
`models/t5/modeling_t5.py` @ 6b8b757dfcb582379a64f013cdce46c43629f2b0 and `_beam_search`/`_sample` of
`generation/utils.py` in those releases. For T5, decoder_prompt_len = 1 (the start token) and
max_length = max_new_tokens + 1. Formulas (beam_search.py):
  process():  cur_len = input_ids.shape[-1] + 1   # length including the token being scored
              eos candidate of rank < num_beams: add(..., generated_len=cur_len - decoder_prompt_len)
  finalize(): open beams: generated_len = final_tokens.shape[-1] - decoder_prompt_len (only if not done)
  add():      score = sum_logprobs / (generated_len ** length_penalty)
  is_done(best_sum_logprobs = next_scores.max(), cur_len):  False while len(beams) < num_beams, else
      early_stopping True:    True
      early_stopping False:   worst_score >= best_sum_logprobs / (cur_len - decoder_prompt_len) ** lp
      "never", lp > 0:        worst_score >= best_sum_logprobs / (max_length - decoder_prompt_len) ** lp
      "never", lp <= 0:       as for False
Top-k: torch.topk's order among exactly equal scores is unspecified; here ties go to the lower flat
index (beam * vocab + token).  Everything is computed in float64 (HF runs float32), except the
relative-position bucket, which mimics torch's float32 `log` arithmetic.

Usage (numpy only):
  make-model DIR --seed S [--tied] [--ff relu|gated-gelu] [--buckets N] [--max-distance M] [--d-model D]
             [--layers L] [--heads H] [--d-kv K] [--d-ff F] [--vocab V]   -> DIR/config.json, model.safetensors
  generate DIR  (stdin: {"cases": [{"input_ids": [..], "max_new_tokens": N, "num_beams": K,
                "early_stopping": true|false|"never", "length_penalty": 1.0}]})
                -> {"results": [{"tokens": [..], "eos": bool, "score": float|null}]}  (no start token, no eos)
  buckets [--num-buckets 32] [--max-distance 128]  -> buckets for relative positions -200..200
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

PAD, EOS, DECODER_START = 0, 1, 0
# Rows of the output projection (lm_head, or `shared` when tied) are rescaled so that, with seeded
# random weights, eos wins the argmax for some prompts before a 12-token limit while others run to
# the limit, and the pad id 0 (indistinguishable from padding in a result) is rarely generated.
EOS_BOOST, PAD_DAMP = 1.6, 0.5
ST_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2"}


# ----------------------------------------------------------------------------- safetensors
def save_safetensors(path, tensors):
    """8-byte LE header length, JSON header (name -> dtype/shape/data_offsets), raw LE data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # pad like the safetensors library does (aligned data start)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def load_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header, base, out = json.loads(buf[8:8 + n]), 8 + n, {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        chunk = buf[base + meta["data_offsets"][0]:base + meta["data_offsets"][1]]
        if meta["dtype"] == "BF16":  # bf16 is the top half of an f32
            arr = (np.frombuffer(chunk, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(chunk, ST_DTYPES[meta["dtype"]])
        out[name] = arr.astype(np.float64).reshape(meta["shape"])
    return out


# ----------------------------------------------------------------------------- model creation
def param_shapes(cfg):
    """Tensor names/shapes exactly as T5ForConditionalGeneration.save_pretrained writes them."""
    d, inner, ff, nb, h = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"], \
        cfg["relative_attention_num_buckets"], cfg["num_heads"]
    ff_names = ["wi_0", "wi_1"] if cfg["feed_forward_proj"] == "gated-gelu" else ["wi"]
    shapes = {"shared.weight": (cfg["vocab_size"], d)}

    def attn(prefix, with_bias):
        for m, shp in (("q", (inner, d)), ("k", (inner, d)), ("v", (inner, d)), ("o", (d, inner))):
            shapes[f"{prefix}.{m}.weight"] = shp
        if with_bias:
            shapes[f"{prefix}.relative_attention_bias.weight"] = (nb, h)

    def ffn(prefix):
        for m in ff_names:
            shapes[f"{prefix}.DenseReluDense.{m}.weight"] = (ff, d)
        shapes[f"{prefix}.DenseReluDense.wo.weight"] = (d, ff)
        shapes[f"{prefix}.layer_norm.weight"] = (d,)

    for stack, n_layers in (("encoder", cfg["num_layers"]), ("decoder", cfg["num_decoder_layers"])):
        for i in range(n_layers):
            b = f"{stack}.block.{i}.layer"
            attn(f"{b}.0.SelfAttention", i == 0)  # only the first block owns the bias table
            shapes[f"{b}.0.layer_norm.weight"] = (d,)
            if stack == "decoder":
                attn(f"{b}.1.EncDecAttention", False)
                shapes[f"{b}.1.layer_norm.weight"] = (d,)
            ffn(f"{b}.{2 if stack == 'decoder' else 1}")
        shapes[f"{stack}.final_layer_norm.weight"] = (d,)
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (cfg["vocab_size"], d)
    return shapes


def make_model(a):
    cfg = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
           "vocab_size": a.vocab, "d_model": a.d_model, "d_kv": a.d_kv, "d_ff": a.d_ff,
           "num_layers": a.layers, "num_decoder_layers": a.decoder_layers or a.layers, "num_heads": a.heads,
           "relative_attention_num_buckets": a.buckets, "relative_attention_max_distance": a.max_distance,
           "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0,
           "feed_forward_proj": a.ff, "dense_act_fn": "gelu_new" if a.ff == "gated-gelu" else "relu",
           "is_gated_act": a.ff == "gated-gelu", "tie_word_embeddings": a.tied,
           "is_encoder_decoder": True, "use_cache": True, "pad_token_id": PAD, "eos_token_id": a.eos,
           "decoder_start_token_id": a.start}
    rng = np.random.default_rng(a.seed)
    tensors = {}
    for name, shape in param_shapes(cfg).items():  # insertion order = draw order (deterministic)
        if name.endswith("layer_norm.weight"):
            tensors[name] = rng.uniform(0.8, 1.2, shape)  # RMS-norm gains near 1
        elif "relative_attention_bias" in name:
            tensors[name] = rng.uniform(-2.0, 2.0, shape)  # strong, so bucket mistakes show up
        else:
            tensors[name] = rng.uniform(-0.5, 0.5, shape)
    head = tensors["shared.weight" if a.tied else "lm_head.weight"]
    head[a.eos] *= EOS_BOOST
    head[PAD] *= PAD_DAMP
    os.makedirs(a.dir, exist_ok=True)
    with open(os.path.join(a.dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    save_safetensors(os.path.join(a.dir, "model.safetensors"), tensors)


# ----------------------------------------------------------------------------- forward pass
def relative_position_bucket(relative_position, bidirectional, num_buckets=32, max_distance=128):
    """T5Attention._relative_position_bucket; the log branch runs in float32 like torch's `.float()`."""
    rp = np.asarray(relative_position, dtype=np.int64)
    buckets = np.zeros_like(rp)
    if bidirectional:
        num_buckets //= 2
        buckets += (rp > 0).astype(np.int64) * num_buckets
        rp = np.abs(rp)
    else:
        rp = -np.minimum(rp, 0)
    max_exact = num_buckets // 2
    is_small = rp < max_exact
    safe = np.maximum(rp, max(max_exact, 1)).astype(np.float32)  # log(0) is masked out by is_small
    large = (np.log(safe / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
             * np.float32(num_buckets - max_exact)).astype(np.int64) + max_exact  # trunc like .to(long)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(is_small, rp, large)


def rms_norm(x, w, eps):  # T5LayerNorm: no mean subtraction, no bias
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def gelu_new(x):  # tanh approximation (ACT2FN["gelu_new"])
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x):
    z = x - np.max(x)
    return z - np.log(np.sum(np.exp(z)))


class T5:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = c = json.load(f)
        self.p = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.h, self.dkv, self.eps = c["num_heads"], c["d_kv"], c["layer_norm_epsilon"]
        self.n_dec = c.get("num_decoder_layers") or c["num_layers"]
        # Generation ids from the config, as Hugging Face reads them.
        self.eos = c.get("eos_token_id", EOS)
        start = c.get("decoder_start_token_id")
        self.start = c.get("pad_token_id", PAD) if start is None else start
        self.tied = c.get("tie_word_embeddings", True)  # HF's default is tied
        if c.get("feed_forward_proj", "relu") not in ("relu", "gated-gelu"):
            raise ValueError("only feed_forward_proj relu and gated-gelu are implemented")
        self.gated = c.get("feed_forward_proj", "relu") == "gated-gelu"
        self.lm_head = self.p["shared.weight"] if self.tied else self.p["lm_head.weight"]

    def bias(self, stack, q_len, k_len, bidirectional):
        """compute_bias: relative_position = memory_position - context_position -> [heads, q, k]."""
        rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
        b = relative_position_bucket(rel, bidirectional, self.cfg["relative_attention_num_buckets"],
                                     self.cfg.get("relative_attention_max_distance", 128))
        table = self.p[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        return table[b].transpose(2, 0, 1)

    def attention(self, pre, x, kv, bias):
        """T5Attention without 1/sqrt(d_kv) scaling (folded into T5's initialisation)."""
        split = lambda t: t.reshape(t.shape[0], self.h, self.dkv).transpose(1, 0, 2)
        q = split(x @ self.p[pre + ".q.weight"].T)
        k = split(kv @ self.p[pre + ".k.weight"].T)
        v = split(kv @ self.p[pre + ".v.weight"].T)
        scores = q @ k.transpose(0, 2, 1)
        if bias is not None:  # cross-attention gets no position bias (zeros in HF)
            scores = scores + bias
        out = (softmax(scores) @ v).transpose(1, 0, 2).reshape(x.shape[0], -1)
        return out @ self.p[pre + ".o.weight"].T

    def feed_forward(self, pre, x):
        h = rms_norm(x, self.p[pre + ".layer_norm.weight"], self.eps)
        d = pre + ".DenseReluDense."
        if self.gated:  # T5DenseGatedActDense: gelu_new(wi_0 x) * (wi_1 x)
            h = gelu_new(h @ self.p[d + "wi_0.weight"].T) * (h @ self.p[d + "wi_1.weight"].T)
        else:           # T5DenseActDense: relu(wi x)
            h = np.maximum(h @ self.p[d + "wi.weight"].T, 0.0)
        return x + h @ self.p[d + "wo.weight"].T

    def encode(self, ids):
        x = self.p["shared.weight"][ids]
        bias = self.bias("encoder", len(ids), len(ids), bidirectional=True)  # reused by all blocks
        for i in range(self.cfg["num_layers"]):
            b = f"encoder.block.{i}.layer"
            h = rms_norm(x, self.p[b + ".0.layer_norm.weight"], self.eps)
            x = x + self.attention(b + ".0.SelfAttention", h, h, bias)
            x = self.feed_forward(b + ".1", x)
        return rms_norm(x, self.p["encoder.final_layer_norm.weight"], self.eps)

    def next_logits(self, enc, dec_ids):
        """Logits for the token after `dec_ids` (whole prefix recomputed: no KV cache)."""
        n = len(dec_ids)
        x = self.p["shared.weight"][dec_ids]
        # The decoder is causal: unidirectional buckets (bidirectional=not is_decoder) plus a mask.
        causal = np.where(np.arange(n)[None, :] > np.arange(n)[:, None], -np.inf, 0.0)
        bias = self.bias("decoder", n, n, bidirectional=False) + causal
        for i in range(self.n_dec):
            b = f"decoder.block.{i}.layer"
            h = rms_norm(x, self.p[b + ".0.layer_norm.weight"], self.eps)
            x = x + self.attention(b + ".0.SelfAttention", h, h, bias)
            h = rms_norm(x, self.p[b + ".1.layer_norm.weight"], self.eps)
            x = x + self.attention(b + ".1.EncDecAttention", h, enc, None)
            x = self.feed_forward(b + ".2", x)
        h = rms_norm(x[-1], self.p["decoder.final_layer_norm.weight"], self.eps)
        if self.tied:  # "Rescale output before projecting on vocab"
            h = h * self.cfg["d_model"] ** -0.5
        return self.lm_head @ h


# ----------------------------------------------------------------------------- generation
def greedy(model, enc, max_new_tokens):
    """_sample with do_sample=False: argmax (first maximum) until eos or max_length."""
    seq = [model.start]
    for _ in range(max_new_tokens):
        tok = int(np.argmax(model.next_logits(enc, seq)))
        if tok == model.eos:
            return {"tokens": seq[1:], "eos": True, "score": None}
        seq.append(tok)
    return {"tokens": seq[1:], "eos": False, "score": None}


class BeamHypotheses:
    """n-best list of finished hypotheses, as in beam_search.py (worst_score starts at 1e9)."""

    def __init__(self, num_beams, length_penalty, early_stopping, max_length):
        self.num_beams, self.lp, self.early_stopping, self.max_length = \
            num_beams, length_penalty, early_stopping, max_length
        self.beams, self.worst_score = [], 1e9

    def add(self, hyp, sum_logprobs, generated_len, eos):
        score = sum_logprobs / (generated_len ** self.lp)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp, eos))
            if len(self.beams) > self.num_beams:
                # (score, index) tuples: on equal scores the earliest-added entry is dropped
                ranked = sorted((s, i) for i, (s, _, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs, cur_len, decoder_prompt_len):
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping is False or self.lp <= 0.0:
            highest = best_sum_logprobs / (cur_len - decoder_prompt_len) ** self.lp
        else:  # "never" with a positive length penalty: the longest possible length is the best case
            highest = best_sum_logprobs / (self.max_length - decoder_prompt_len) ** self.lp
        return self.worst_score >= highest


def beam_search(model, enc, max_new_tokens, num_beams, early_stopping, length_penalty):
    """_beam_search + BeamSearchScorer for batch 1, num_return_sequences 1, no logits processors."""
    prompt_len, max_length = 1, max_new_tokens + 1  # decoder prompt = [decoder_start_token_id]
    hyps = BeamHypotheses(num_beams, length_penalty, early_stopping, max_length)
    seqs = [[model.start] for _ in range(num_beams)]
    beam_scores = np.array([0.0] + [-1e9] * (num_beams - 1))  # identical beams: only #0 may expand
    done = False
    while True:
        cur_len = len(seqs[0]) + 1  # process(): input_ids.shape[-1] + 1
        scores = np.stack([log_softmax(model.next_logits(enc, s)) for s in seqs]) + beam_scores[:, None]
        vocab, flat = scores.shape[1], scores.reshape(-1)
        top = np.argsort(-flat, kind="stable")[:2 * num_beams]  # ties: lower flat index first
        new_seqs, new_scores = [], []
        for rank, idx in enumerate(top):
            beam, tok = divmod(int(idx), vocab)
            if tok == model.eos:
                if rank >= num_beams:  # eos outside the top num_beams is not a hypothesis
                    continue
                hyps.add(seqs[beam][1:], float(flat[idx]), cur_len - prompt_len, eos=True)
            else:
                new_seqs.append(seqs[beam] + [tok])
                new_scores.append(flat[idx])
            if len(new_seqs) == num_beams:
                break
        done = hyps.is_done(float(flat[top[0]]), cur_len, prompt_len)
        seqs, beam_scores = new_seqs, np.array(new_scores)
        if done or len(seqs[0]) >= max_length:  # beam_scorer.is_done or MaxLengthCriteria
            break
    if not done:  # finalize(): open beams join the n-best list
        for s, sc in zip(seqs, beam_scores):
            hyps.add(s[1:], float(sc), len(s) - prompt_len, eos=False)
    # sorted() is stable and pop() takes the last: among equal scores the later entry wins
    score, tokens, eos = sorted(hyps.beams, key=lambda x: x[0]).pop()
    return {"tokens": [int(t) for t in tokens], "eos": eos, "score": score}


def generate(model, case):
    max_new, num_beams = int(case["max_new_tokens"]), int(case.get("num_beams", 1))
    early_stopping = case.get("early_stopping", False)  # HF default: False
    if max_new < 1 or num_beams < 1 or early_stopping not in (True, False, "never"):
        raise ValueError(f"unsupported case: {case}")
    enc = model.encode(np.asarray(case["input_ids"], dtype=np.int64))
    if num_beams == 1:
        return greedy(model, enc, max_new)
    return beam_search(model, enc, max_new, num_beams, early_stopping, float(case.get("length_penalty", 1.0)))


# ----------------------------------------------------------------------------- CLI
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-model")
    mk.add_argument("dir")
    mk.add_argument("--seed", type=int, required=True)
    mk.add_argument("--tied", action="store_true")
    mk.add_argument("--ff", choices=["relu", "gated-gelu"], default="gated-gelu")
    for flag, default in (("--buckets", 8), ("--max-distance", 16), ("--d-model", 32), ("--layers", 2),
                          ("--heads", 4), ("--d-kv", 8), ("--d-ff", 64), ("--vocab", 64),
                          ("--decoder-layers", 0), ("--eos", EOS), ("--start", DECODER_START)):
        mk.add_argument(flag, type=int, default=default)
    sub.add_parser("generate").add_argument("dir")
    bk = sub.add_parser("buckets")
    bk.add_argument("--num-buckets", type=int, default=32)
    bk.add_argument("--max-distance", type=int, default=128)
    a = ap.parse_args(argv)
    if a.cmd == "make-model":
        make_model(a)
    elif a.cmd == "generate":
        model = T5(a.dir)
        print(json.dumps({"results": [generate(model, c) for c in json.load(sys.stdin)["cases"]]}))
    else:
        rel = np.arange(-200, 201)
        print(json.dumps({
            "num_buckets": a.num_buckets, "max_distance": a.max_distance, "relative_position": rel.tolist(),
            "bidirectional": relative_position_bucket(rel, True, a.num_buckets, a.max_distance).tolist(),
            "unidirectional": relative_position_bucket(rel, False, a.num_buckets, a.max_distance).tolist()}))


if __name__ == "__main__":
    main()
