"""Python baseline for the ONNX embedding bench: the same work with onnxruntime and HF
tokenizers (input-order batches padded to their longest, mean pooling, normalization).

usage: python_baseline.py MODEL.onnx TOKENIZER.json CORPUS.jsonl BATCH PASSES
CORPUS.jsonl holds {"corpus": name, "text": ...} lines; prints {name: median_seconds} as JSON.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main():
    model, tokenizer_file, corpus_file, batch, passes = sys.argv[1:]
    batch, passes = int(batch), int(passes)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    tokenizer = Tokenizer.from_file(tokenizer_file)
    tokenizer.enable_padding()
    tokenizer.enable_truncation(max_length=256)
    corpora = {}
    with open(corpus_file) as f:
        for line in f:
            row = json.loads(line)
            corpora.setdefault(row["corpus"], []).append(row["text"])

    def embed(texts):
        out = []
        for start in range(0, len(texts), batch):
            enc = tokenizer.encode_batch(texts[start:start + batch])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in inputs:
                feed["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
            hidden = session.run(None, feed)[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
            out.append(pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None))
        return np.concatenate(out)

    results = {}
    for name, texts in corpora.items():
        embed(texts[:batch])
        times = []
        for _ in range(passes):
            start = time.perf_counter()
            assert len(embed(texts)) == len(texts)
            times.append(time.perf_counter() - start)
        results[name] = sorted(times)[len(times) // 2]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
