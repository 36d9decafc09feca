#!/usr/bin/env python3
"""sambay's BPE tokenizer against tiktoken on the same text: MB/s per core, and thread scaling.

usage: bench/tokenizer_bench.py SAMBAY [--mb 32] [--corpus repeated|distinct] [--threads 1,2]
                                [--vocab o200k_base] [--work DIR] [--repeats 3]

The corpus is JSONL of about --mb megabytes, one of
  --corpus repeated (the default): the license texts of /usr/share/common-licenses and the
            generated multilingual documents of the tokenizer test, repeated (so a piece cache
            sees each word again and again);
  --corpus distinct: text that does not repeat: each translated manual page of /usr/share/man
            (cs, de, ja, ko, ru, zh_CN and the other languages there; roff source) and each
            Debian changelog of /usr/share/doc is one document, taken once in a fixed order.
  tiktoken: Encoding.encode_ordinary on each document, one thread, timed by process CPU time.
  sambay:   `sambay data tokenize --threads T` on the JSONL file, end to end (vocabulary load,
            reading, JSON parsing, encoding, writing .bin/.idx), timed by wall clock and by the
            CPU time of the process (all its threads), so "per core" is MB per CPU-second. The
            steady-state column subtracts the fixed cost (the CPU time of tokenizing a one-line
            file: mostly loading the vocabulary), as tiktoken's timing excludes building its
            Encoding.
Every measurement is repeated --repeats times (3) and the median counts; the load average is
printed before and after, since a shared machine slows both programs unevenly.
sambay's .bin must hold tiktoken's ids exactly (each document's, then the end-of-document id).
Needs tiktoken and bpe-openai for /usr/bin/python3 (scripts/setup.sh installs them).
"""
import argparse
import array
import gzip
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "tokenizer"))
import tiktoken_reference as ref  # noqa: E402  (exits 77 naming what is missing)


def child_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def repeated_documents(mb):
    """The license texts and the test's generated documents, repeated to `mb` megabytes."""
    base = []
    for name in sorted(os.listdir("/usr/share/common-licenses")):
        path = os.path.join("/usr/share/common-licenses", name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                base.append(f.read())
    base += ref.generated_documents(random.Random(1))
    docs, size = [], 0
    while size < mb * 1e6:
        for d in base:
            docs.append(d)
            size += len(d.encode())
    return docs


def distinct_documents(mb):
    """Translated manual pages (the languages interleaved), then changelogs, each file once, to
    `mb` megabytes."""
    by_language = []
    for lang in sorted(os.listdir("/usr/share/man")):
        root = os.path.join("/usr/share/man", lang)
        if lang.startswith("man") or not os.path.isdir(root):
            continue
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                       if f.endswith(".gz"))
        if files:
            by_language.append(files)
    paths = []
    for i in range(max((len(g) for g in by_language), default=0)):
        paths += [g[i] for g in by_language if i < len(g)]
    for d, _, fs in sorted(os.walk("/usr/share/doc")):
        paths += sorted(os.path.join(d, f) for f in fs
                        if f.startswith("changelog") and f.endswith(".gz"))
    docs, size, seen = [], 0, set()
    for path in paths:
        if size >= mb * 1e6:
            break
        try:
            with gzip.open(path, "rb") as f:
                text = f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue  # not UTF-8 (JSON text must be) or not gzip
        if text in seen:
            continue
        seen.add(text)
        docs.append(text)
        size += len(text.encode())
    if size < mb * 1e6:
        sys.exit(f"--corpus distinct: only {size / 1e6:.1f} MB of text in /usr/share/man and "
                 f"/usr/share/doc; ask for fewer --mb")
    return docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sambay")
    ap.add_argument("--mb", type=float, default=32)
    ap.add_argument("--corpus", choices=["repeated", "distinct"], default="repeated")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--vocab", default="o200k_base")
    ap.add_argument("--work", default="/tmp/sambay-tokenizer-bench")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    docs = repeated_documents(args.mb) if args.corpus == "repeated" else distinct_documents(args.mb)
    size = sum(len(d.encode()) for d in docs)
    corpus = os.path.join(args.work, "corpus.jsonl")
    with open(corpus, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    print(f"corpus: {args.corpus}, {len(docs)} documents, {size / 1e6:.1f} MB of text "
          f"({os.path.getsize(corpus) / 1e6:.1f} MB of JSONL), vocabulary {args.vocab}")

    path, enc = ref.load_encoding(args.vocab)
    tik_cpus = []
    for _ in range(args.repeats):
        c0 = time.process_time()
        tiktoken_tokens = sum(len(enc.encode_ordinary(d)) for d in docs)
        tik_cpus.append(time.process_time() - c0)
    tik_rate = size / 1e6 / statistics.median(tik_cpus)
    print(f"tiktoken encode_ordinary, 1 thread: {tik_rate:6.2f} MB/s per core "
          f"({tiktoken_tokens} tokens; CPU s {', '.join(f'{c:.2f}' for c in tik_cpus)})")
    expected = array.array("i")  # what sambay's .bin must hold (empty documents are skipped)
    for d in docs:
        if d:
            expected.extend(enc.encode_ordinary(d))
            expected.append(enc.eot_token)

    def run_sambay(threads, corpus_path, out):
        c0, t0 = child_cpu_seconds(), time.perf_counter()
        p = subprocess.run([args.sambay, "data", "tokenize", "--tokenizer", path, "--threads",
                            str(threads), "--out", out, corpus_path], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"sambay failed:\n{p.stdout}{p.stderr}")
        return time.perf_counter() - t0, child_cpu_seconds() - c0

    tiny = os.path.join(args.work, "tiny.jsonl")
    with open(tiny, "w") as f:
        f.write('{"text": "x"}\n')
    fixed = statistics.median(run_sambay(1, tiny, os.path.join(args.work, "tiny"))[1]
                              for _ in range(args.repeats))
    print(f"sambay fixed cost (one-line file): {fixed:.2f} CPU s")
    print("| sambay threads | wall s | MB/s | CPU s | MB/s per core | vs tiktoken | "
          "steady MB/s per core | vs tiktoken |")
    print("|---|---|---|---|---|---|---|---|")
    for threads in [int(t) for t in args.threads.split(",")]:
        out = os.path.join(args.work, f"out{threads}")
        runs = [run_sambay(threads, corpus, out) for _ in range(args.repeats)]
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        got = array.array("i")
        with open(out + ".bin", "rb") as f:
            got.frombytes(f.read())
        if got != expected:
            sys.exit(f"sambay's ids ({len(got)}) differ from tiktoken's ({len(expected)})")
        rate, steady = size / 1e6 / cpu, size / 1e6 / (cpu - fixed)
        print(f"| {threads} | {wall:.2f} | {size / 1e6 / wall:.2f} | {cpu:.2f} | {rate:.2f} | "
              f"{rate / tik_rate:.2f}x | {steady:.2f} | {steady / tik_rate:.2f}x |")
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
