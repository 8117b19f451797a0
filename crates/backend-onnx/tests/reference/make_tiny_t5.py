"""Writes tests/fixtures/tiny-t5: a tiny T5 with seeded random weights, exported by optimum
as ONNX with a KV cache (encoder_model.onnx, decoder_model.onnx,
decoder_with_past_model.onnx), its safetensors and config (for the candle backend), a
word-level tokenizer, and expected.json: greedy outputs of transformers' own `generate` and of
an onnxruntime loop over the exported files.

Run once; the outputs are checked in and CI never runs Python. It needs torch, onnxruntime,
transformers < 4.58 and optimum-onnx 0.1.0 (optimum's exporter), e.g.

    pip install --target /tmp/optpkgs --no-deps optimum==2.1.0 optimum-onnx==0.1.0 \
        transformers==4.57.6 huggingface_hub==0.36.0 tokenizers==0.22.1
    PYTHONPATH=/tmp/optpkgs python make_tiny_t5.py ../fixtures/tiny-t5
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
from optimum.exporters.onnx import main_export
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import T5Config, T5ForConditionalGeneration

VOCAB = 64
MAX_NEW = 12
PROMPTS = [
    "w5 w9 w33",
    "",
    "w30",
    "w50 w4 w19",
    "w12 w40 w7 w7 w21",
    "w63 w10 w11 w45 w57",
    "w8 w16 w24 w32 w40 w48",
    "w3 w60 w3 w60 w3 w60 w3 w60 w3 w60",
]


def tokenizer():
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({f"w{i}": i for i in range(3, VOCAB)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tok


def model():
    config = T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
    )
    torch.manual_seed(11)
    m = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.5, 0.5)
        # A louder end token, so that some outputs end before the length limit.
        m.lm_head.weight[1] *= 3.0
    return m


def onnx_greedy(folder, ids, with_past):
    """Greedy decoding with onnxruntime over optimum's files, with or without the cache."""
    run = lambda name, feed: ort.InferenceSession(os.path.join(folder, name)).run(None, feed)
    ids = np.array([ids], dtype=np.int64)
    mask = np.ones_like(ids)
    hidden = run("encoder_model.onnx", {"input_ids": ids, "attention_mask": mask})[0]
    out, past = [0], None
    for _ in range(MAX_NEW):
        if past is None or not with_past:
            feed = {"input_ids": np.array([out], dtype=np.int64),
                    "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
            results = run("decoder_model.onnx", feed)
            names = [o.name for o in ort.InferenceSession(os.path.join(folder, "decoder_model.onnx")).get_outputs()]
        else:
            feed = {"input_ids": np.array([[out[-1]]], dtype=np.int64), "encoder_attention_mask": mask}
            feed.update(past)
            results = run("decoder_with_past_model.onnx", feed)
            names = [o.name for o in ort.InferenceSession(os.path.join(folder, "decoder_with_past_model.onnx")).get_outputs()]
        outputs = dict(zip(names, results))
        presents = {k.replace("present.", "past_key_values."): v for k, v in outputs.items() if k.startswith("present.")}
        past = {**(past or {}), **presents}
        token = int(outputs["logits"][0, -1].argmax())
        if token == 1:
            break
        out.append(token)
    return out[1:]


def main(dest):
    os.makedirs(dest, exist_ok=True)
    staging = dest + ".pt"
    m = model()
    m.save_pretrained(staging)
    main_export(staging, output=dest, task="text2text-generation-with-past", no_post_process=True)
    m.save_pretrained(dest)  # config.json, generation_config.json, model.safetensors
    for extra in os.listdir(staging):
        os.remove(os.path.join(staging, extra))
    os.rmdir(staging)
    tok = tokenizer()
    tok.save(os.path.join(dest, "tokenizer.json"))
    cases = []
    for prompt in PROMPTS:
        ids = tok.encode(prompt).ids
        with torch.no_grad():
            generated = m.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=MAX_NEW, num_beams=1, do_sample=False)
        torch_ids = [t for t in generated[0].tolist()[1:] if t != 1]
        cached, uncached = onnx_greedy(dest, ids, True), onnx_greedy(dest, ids, False)
        assert cached == uncached == torch_ids, (prompt, torch_ids, cached, uncached)
        cases.append({"prompt": prompt, "input_ids": ids, "greedy": torch_ids})
    with open(os.path.join(dest, "expected.json"), "w") as f:
        json.dump({"max_new_tokens": MAX_NEW, "cases": cases}, f, indent=1)
        f.write("\n")
    print(json.dumps([c["greedy"] for c in cases]))


if __name__ == "__main__":
    main(sys.argv[1])
