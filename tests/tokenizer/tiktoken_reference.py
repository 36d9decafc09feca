#!/usr/bin/env python3
"""tiktoken's ids for a multilingual test corpus, to check sambay's BPE tokenizer against.

usage: tiktoken_reference.py OUTDIR

Writes into OUTDIR:
  corpus.jsonl          one document per line in {"text": ...} (some lines ASCII-escaped)
  ENC.ordinary.ids      per document, tiktoken's encode_ordinary ids, space-separated, a line each
  ENC.special.ids       the same with encode(allowed_special="all")
  ENC.path              the vocabulary file used (the one the bpe-openai wheel ships)
  ENC.pattern           tiktoken's pre-tokenisation pattern
for ENC in o200k_base and cl100k_base. The vocabularies are read from the wheel and tiktoken's
Encoding is built from them here, so nothing is downloaded. Exits 77 naming what is missing
when tiktoken or bpe-openai is not installed (scripts/setup.sh installs both).
"""
import base64
import gzip
import json
import os
import random
import sys
import unicodedata

try:
    import tiktoken
    import tiktoken_ext.openai_public as openai_public
    import bpe_openai
except ImportError as e:
    print(f"skipped: {e.name} is not installed (scripts/setup.sh installs tiktoken and bpe-openai "
          f"with pip)")
    sys.exit(77)


def load_encoding(name):
    path = os.path.join(os.path.dirname(bpe_openai.__file__), "data", f"{name}.tiktoken.gz")
    ranks = {}
    with gzip.open(path, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    # tiktoken's own definition (pattern, special tokens), its download replaced by the file read.
    saved = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *args, **kwargs: ranks
    try:
        params = getattr(openai_public, name)()
    finally:
        openai_public.load_tiktoken_bpe = saved
    return path, tiktoken.Encoding(name=name, pat_str=params["pat_str"],
                                   mergeable_ranks=ranks, special_tokens=params["special_tokens"])


def generated_documents(rng):
    """Text that exercises every branch of the pre-tokenisation patterns."""
    samples = [
        "Hello, world! It's 2024; we'll see what they've done. I'm sure you'd agree, wouldn't you?",
        "DON'T SHOUT. I'LL WAIT. We'RE here, he'S there, THEY'VE gone, she'D know, i'M fine.",
        "The long s: he'\u017f and the Kelvin sign \u212a; 'S and 'ſ and 'K.",
        "中文文本测试：今天天气很好，我们去公园散步吧。机器学习与自然语言处理。",
        "日本語のテキスト：ひらがな、カタカナ、漢字を混ぜた文章です。東京は大きい都市だ。",
        "한국어 문장입니다. 오늘은 날씨가 좋네요! 대한민국 서울특별시.",
        "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ 🏳️‍🌈 and text after 🎉🎉🎉.",
        "Combining marks: e\u0301te\u0301, a\u0308, n\u0303, Z\u0335\u0321a\u0334\u0322l\u0337g\u0336o\u0338, "
        "Vietnamese Tiếng Việt có dấu, Hindi हिन्दी भाषा, Arabic العَرَبِيَّة, Hebrew עִבְרִית.",
        "Digits 1234567890 12 3.14159 2,718,281 0x1F 007 ١٢٣٤٥ ௧௨௩ ½ ² Ⅻ 1st 2nd",
        "   leading spaces\n\n\n\t\t tabs and newlines   \n   \r\n\r\n  trailing spaces   ",
        "Mixed scripts: helloмир世界שלוםκόσμοςदुनिया123abcАБВ",
        "Cyrillic: Съешь же ещё этих мягких французских булок, да выпей чаю. ПРИВЕТ Мир.",
        "Greek: Ξεσκεπάζω τὴν ψυχοφθόρα βδελυγμία. ΑΒΓΔ αβγδ.",
        "Thai: ภาษาไทยเป็นภาษาที่ไม่มีช่องว่างระหว่างคำ",
        "Unicode spaces: a\u00a0b\u3000c\u2028d\u2029e\u0085f\u180eg\u2009h\u200bi\u202fj\u205fk",
        "Code: def f(x):\n    return x**2 + 1  # comment\n\nif __name__ == '__main__':\n\tprint(f(3))\n",
        "URLs https://example.com/path?q=1&r=2#frag and emails someone@example.org, paths /usr/bin/env",
        "Punctuation runs: !!!??? ... --- *** /// \\\\ ||| <<<>>> ((())) [[[]]] {{{}}} ''' \"\"\"",
        "Special text inside a document: end<|endoftext|>start and <|endofprompt|> and <|fim_prefix|>.",
        "CamelCase and SHOUTINGCase and mixedUPPERlower and ÀÉÎõü and ǅungla (titlecase ǅ).",
        "\n\n\n",
        "   ",
        "x",
        "Line one\r\nLine two\rLine three\n/slash after newline\n//\n",
    ]
    docs = list(samples)
    # Long runs: the merge of long pieces and deep regex backtracking.
    docs.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3000)))
    docs.append("ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 80 + "lower")
    docs.append(" " * 2000 + "word" + "\t" * 500 + "\n" * 300 + " " * 100)
    docs.append("9" * 1000 + " " + "".join(rng.choice("0123456789") for _ in range(997)))
    docs.append("🙂" * 700 + "好" * 700)
    # Random mixtures of fragments from the samples.
    fragments = [w for s in samples for w in s.split(" ") if w]
    for _ in range(300):
        n = rng.randint(1, 60)
        seps = [" ", "  ", "\n", "\t", "", " \n ", "\u3000", "'s ", "'LL "]
        docs.append("".join(rng.choice(fragments) + rng.choice(seps) for _ in range(n)))
    # Random assigned code points (this Python's Unicode tables, 14.0 on Python 3.11: the version
    # Debian 12's PCRE2 knows), in every plane that has letters, marks, numbers or symbols.
    pool = []
    for cp in list(range(0x20, 0x3400)) + list(range(0xA000, 0xD800)) + list(range(0xF900, 0x10000)) \
            + list(range(0x10000, 0x1FB00)) + list(range(0x20000, 0x20400)):
        ch = chr(cp)
        if unicodedata.category(ch) not in ("Cn", "Cs", "Co"):
            pool.append(ch)
    for _ in range(200):
        docs.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 200))))
    return docs


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20240601)
    docs = []
    license_dir = "/usr/share/common-licenses"
    for name in sorted(os.listdir(license_dir)):
        path = os.path.join(license_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                docs.append(f.read())
    docs += generated_documents(rng)
    with open(os.path.join(out, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, "text": d, "meta": {"n": len(d)}}, ensure_ascii=i % 3 == 0))
            f.write("\n")
    for name in ("o200k_base", "cl100k_base"):
        path, enc = load_encoding(name)
        with open(os.path.join(out, f"{name}.path"), "w") as f:
            f.write(path)
        with open(os.path.join(out, f"{name}.pattern"), "w") as f:
            f.write(enc._pat_str)
        with open(os.path.join(out, f"{name}.ordinary.ids"), "w") as f:
            for d in docs:
                f.write(" ".join(map(str, enc.encode_ordinary(d))) + "\n")
        with open(os.path.join(out, f"{name}.special.ids"), "w") as f:
            for d in docs:
                f.write(" ".join(map(str, enc.encode(d, allowed_special="all"))) + "\n")
    print(f"{len(docs)} documents, {sum(len(d.encode()) for d in docs)} bytes")


if __name__ == "__main__":
    main()
