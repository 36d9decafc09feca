#!/usr/bin/env python3
"""Checks that a resumed run's metrics.jsonl equals an uninterrupted run's, bit for bit.

usage: compare_metrics.py [--rtol R] REFERENCE.jsonl RESUMED.jsonl

For every record of the reference (a training step's loss, learning rate, gradient norm and
token count, or a validation loss), the resumed run must hold a record of the same step and
kind whose values are the same numbers, compared as the exact text the trainer printed (the
shortest round-trip form of a double, so equal text means equal bits). Timing fields differ
between runs and are ignored, and so are event records (start and resume markers, checkpoint
written, end). A resumed run may log a step twice (once before the interruption,
once after); the last record counts. Records only the resumed run has (a validation right after
resuming, say) are listed but allowed. Exits 1 with the differences listed.

With --rtol R the numbers need only agree to R relative (token counts still exactly): for runs
whose ranks sum in another order than the reference's, such as a parallel layout against one
process.
"""
import json
import sys

COMPARED = ("loss", "lr", "grad_norm", "tokens", "valid_loss")


def records(path):
    """{(step, kind): {field: text}} with the raw number text of each compared field."""
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            # Keep the numbers' text: parse_float/parse_int receive it unconverted.
            try:
                rec = json.loads(line, parse_float=str, parse_int=str)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not a JSON record ({e}): {line.strip()[:80]}")
            # Events (run start, resume, checkpoint, end) are not metrics: only the runs' numbers
            # count. Records name their kind; older ones are told apart by their keys.
            if "kind" in rec:
                if rec["kind"] not in ("step", "valid"):
                    continue
            elif "checkpoint" in rec or "resumed_from_step" in rec:
                continue
            if "step" not in rec:
                sys.exit(f"{path}:{n}: a record without a step: {line.strip()}")
            kind = "valid" if "valid_loss" in rec else "train"
            out[(int(rec["step"]), kind)] = {k: rec[k] for k in COMPARED if k in rec}
    return out


def same(a, b, rtol):
    """Equal records: the same text, or with rtol the same numbers to rtol relative."""
    if rtol is None or a.keys() != b.keys():
        return a == b
    for k in a:
        x, y = float(a[k]), float(b[k])
        if k == "tokens" and x != y:
            return False
        if abs(x - y) > rtol * abs(x):
            return False
    return True


def main():
    args = sys.argv[1:]
    rtol = None
    if len(args) == 4 and args[0] == "--rtol":
        rtol = float(args[1])
        args = args[2:]
    if len(args) != 2:
        sys.exit(__doc__)
    ref, got = records(args[0]), records(args[1])
    if not ref:
        sys.exit(f"{args[0]} holds no records")
    problems = []
    for key in sorted(ref):
        if key not in got:
            problems.append(f"step {key[0]} ({key[1]}): missing from the resumed run")
        elif not same(ref[key], got[key], rtol):
            problems.append(f"step {key[0]} ({key[1]}): {ref[key]} != {got[key]}")
    for key in sorted(set(got) - set(ref)):
        print(f"note: step {key[0]} ({key[1]}) is only in the resumed run: {got[key]}")
    last = max(k for k in ref if k[1] == "train")
    if problems:
        print("\n".join(problems[:20]))
        print(f"{len(problems)} differences over {len(ref)} records")
        sys.exit(1)
    how = "bit for bit" if rtol is None else f"to {rtol:g} relative"
    print(f"{len(ref)} records equal {how}; final loss {ref[last]['loss']} at step {last[0]}")


if __name__ == "__main__":
    main()
