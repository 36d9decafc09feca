#!/usr/bin/python3
"""Training curves of one or several runs, as one PNG.

usage: tools/plot_run.py RUN... [--out run.png] [--label NAME]... [--x step|tokens] [--smooth N]

RUN is a run directory (out_dir, holding metrics.jsonl) or a metrics.jsonl file. Three panels:
training loss, validation loss and throughput (tokens/s), each run a line in its own colour,
labelled with its directory's name (or --label, once per run in order). --x tokens puts the
tokens trained on the horizontal axis (step is the default). --smooth N draws the training loss
as a running mean over N logged points, the raw values faint behind it.

A resumed run logs some steps twice (before the interruption and after the resume): the last
record of a step counts, and resumes are marked by dotted vertical lines. Records whose value is
null (a NaN) leave a gap. Runs Debian's python3 (matplotlib from python3-matplotlib, installed
by scripts/setup.sh).
"""
import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def read_run(path):
    """{"step": {step: record}, "valid": {step: record}, "resumes": [steps]} of a run."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    run = {"step": {}, "valid": {}, "resumes": []}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a run killed while writing it
            # Records name their kind; those of older runs are told apart by their keys.
            kind = rec.get("kind") or ("valid" if "valid_loss" in rec else
                                       "step" if "loss" in rec else
                                       "resume" if "resumed_from_step" in rec else "other")
            if kind in ("step", "valid") and "step" in rec:
                run[kind][rec["step"]] = rec
            elif kind == "resume":
                run["resumes"].append(rec.get("step", rec.get("resumed_from_step")))
    if not run["step"] and not run["valid"]:
        sys.exit(f"{path}: no training or validation records")
    return run


def series(records, key, x_key):
    xs, ys = [], []
    for step in sorted(records):
        rec = records[step]
        value = rec.get(key)
        x = rec.get(x_key) if x_key != "step" else step
        if x is None:
            continue
        xs.append(x)
        ys.append(math.nan if value is None else value)
    return xs, ys


def running_mean(ys, n):
    out, window = [], []
    for y in ys:
        window.append(y)
        if len(window) > n:
            window.pop(0)
        finite = [v for v in window if not math.isnan(v)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN")
    ap.add_argument("--out", default="run.png")
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--x", choices=("step", "tokens"), default="step")
    ap.add_argument("--smooth", type=int, default=1)
    args = ap.parse_args()
    if args.label and len(args.label) != len(args.runs):
        sys.exit(f"--label given {len(args.label)} times for {len(args.runs)} runs")
    if args.smooth < 1:
        sys.exit("--smooth must be at least 1")

    fig, (ax_loss, ax_valid, ax_rate) = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, path in enumerate(args.runs):
        run = read_run(path)
        label = args.label[i] if args.label else os.path.basename(os.path.normpath(path))
        color = f"C{i % 10}"
        x_key = "tokens" if args.x == "tokens" else "step"
        xs, ys = series(run["step"], "loss", x_key)
        if args.smooth > 1:
            ax_loss.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
            ax_loss.plot(xs, running_mean(ys, args.smooth), color=color, label=label)
        else:
            ax_loss.plot(xs, ys, color=color, label=label)
        # Validation records carry no token count: place them by the step records' tokens.
        tokens_at = {s: r.get("tokens") for s, r in run["step"].items()}
        vx, vy = [], []
        for step in sorted(run["valid"]):
            x = step if args.x == "step" else (0 if step == 0 else tokens_at.get(step))
            if x is None:
                continue
            value = run["valid"][step].get("valid_loss")
            vx.append(x)
            vy.append(math.nan if value is None else value)
        ax_valid.plot(vx, vy, color=color, marker="o", markersize=3, label=label)
        rx, ry = series(run["step"], "tokens_per_s", x_key)
        ax_rate.plot(rx, ry, color=color, label=label)
        if args.x == "step":
            for step in run["resumes"]:
                for ax in (ax_loss, ax_valid, ax_rate):
                    ax.axvline(step, color=color, linestyle=":", linewidth=1)
    xlabel = "step" if args.x == "step" else "tokens"
    for ax, title, ylabel in ((ax_loss, "training loss", "loss (nats/token)"),
                              (ax_valid, "validation loss", "loss (nats/token)"),
                              (ax_rate, "throughput", "tokens/s")):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax_rate.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"{len(args.runs)} run(s) -> {args.out}")


if __name__ == "__main__":
    main()
