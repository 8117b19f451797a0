"""Greedy decoding of the default text2text model (traceforge-title-model 0.2.0, fetched by
scripts/fetch-models.sh into models/flan-t5-small-title-onnx) with onnxruntime: the encoder
once, then the decoder over the whole prefix each step (the export has no KV cache), the
argmax of the last position, T5's special tokens (start 0, end 1). Writes
tests/fixtures/title-model-greedy.json, which tests/text2text.rs compares the ONNX backend
with. Run once (onnxruntime, tokenizers, numpy); CI never runs Python.

    python title_model_greedy.py ../../../../models/flan-t5-small-title-onnx ../fixtures/title-model-greedy.json
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_NEW = 32
PROMPTS = [
    "Read the file src/main.rs and fix the failing test in the parser module",
    "summarize: The quick brown fox jumps over the lazy dog.",
    "How do I get my money back?",
    "User asked to refund an order; the agent looked up order 1234, issued the refund through "
    "the payments API and sent a confirmation email",
    "Ran cargo test --workspace: 3 failures in crates/cli/tests/http.rs, all timeouts on "
    "loopback; raised the header timeout, reran, everything passed. Then updated the README "
    "and the changelog, opened a pull request and asked for a review from the maintainers of "
    "the server crate, who approved it after one round of comments about naming.",
    "Déploiement du service en production: mise à jour de la base de données",
    "",
]


def main(folder, out):
    enc = ort.InferenceSession(os.path.join(folder, "encoder.onnx"))
    dec = ort.InferenceSession(os.path.join(folder, "decoder.onnx"))
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    cases = []
    for prompt in PROMPTS:
        ids = tok.encode(prompt).ids
        input_ids = np.array([ids], dtype=np.int64)
        mask = np.ones_like(input_ids)
        hidden = enc.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        out_ids = [0]
        for _ in range(MAX_NEW):
            feed = {"input_ids": np.array([out_ids], dtype=np.int64),
                    "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
            logits = dec.run(None, feed)[0]
            token = int(logits[0, -1].argmax())
            if token == 1:
                break
            out_ids.append(token)
        generated = out_ids[1:]
        cases.append({"prompt": prompt, "input_tokens": len(ids), "ids": generated,
                      "text": tok.decode(generated, skip_special_tokens=True)})
    with open(out, "w") as f:
        json.dump({"max_new_tokens": MAX_NEW, "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
