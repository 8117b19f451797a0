"""The bulk baseline of the engine bench: a plain Python pipeline doing what `mm embed
--input CORPUS --output OUT.npy` does, on the same ONNX file: tokenize every text (truncated
at 256), sort by length once, batches of 32 padded to their longest, mean pooling,
normalization, vectors saved in input order.

usage: bulk_python.py MODEL.onnx TOKENIZER.json CORPUS.txt OUT.npy
"""
import sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

model, tokenizer_file, corpus, out_file = sys.argv[1:]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
tokenizer = Tokenizer.from_file(tokenizer_file)
tokenizer.no_padding()
tokenizer.enable_truncation(max_length=256)
texts = [line.rstrip("\n") for line in open(corpus, encoding="utf-8") if line.strip()]
encodings = tokenizer.encode_batch(texts)
order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
vectors = [None] * len(texts)
for start in range(0, len(order), 32):
    rows = order[start:start + 32]
    width = max(len(encodings[i].ids) for i in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, i in enumerate(rows):
        n = len(encodings[i].ids)
        ids[r, :n], mask[r, :n] = encodings[i].ids, 1
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    hidden = session.run(None, feed)[0]
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    for r, i in enumerate(rows):
        vectors[i] = pooled[r]
np.save(out_file, np.stack(vectors).astype(np.float32))
