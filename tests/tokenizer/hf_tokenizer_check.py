#!/usr/bin/env python3
"""Checks tokenizer files sambay exported against tiktoken's ids.

usage: hf_tokenizer_check.py REFDIR ENC TOKENIZER_DIR

REFDIR is the output of tiktoken_reference.py; TOKENIZER_DIR holds the tokenizer.json that
sambay wrote for the vocabulary ENC. Every document of REFDIR/corpus.jsonl is encoded by the
Hugging Face `tokenizers` library from that file and must give REFDIR/ENC.special.ids (special
token text becomes special ids in both), and decode back to the document. Exits 77 naming what
is missing when `tokenizers` is not installed (scripts/setup.sh installs it).
"""
import json
import os
import sys

try:
    from tokenizers import Tokenizer
except ImportError as e:
    print(f"skipped: {e.name} is not installed (scripts/setup.sh installs tokenizers with pip)")
    sys.exit(77)


def main():
    ref, enc, tokdir = sys.argv[1:4]
    tok = Tokenizer.from_file(os.path.join(tokdir, "tokenizer.json"))
    with open(os.path.join(ref, "corpus.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    with open(os.path.join(ref, f"{enc}.special.ids")) as f:
        want = [list(map(int, line.split())) for line in f]
    bad = 0
    for i, (doc, ids) in enumerate(zip(docs, want)):
        got = tok.encode(doc, add_special_tokens=False).ids
        if got != ids:
            bad += 1
            if bad <= 3:
                k = next((j for j in range(min(len(got), len(ids))) if got[j] != ids[j]),
                         min(len(got), len(ids)))
                print(f"document {i}: ids differ at {k}: {got[k:k + 8]} vs tiktoken's "
                      f"{ids[k:k + 8]} ({doc[:80]!r})")
        elif tok.decode(got, skip_special_tokens=False) != doc:
            bad += 1
            print(f"document {i}: decodes differently")
    print(f"{len(docs) - bad} of {len(docs)} documents equal to tiktoken's ids through "
          f"tokenizer.json ({tok.get_vocab_size()} tokens)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
