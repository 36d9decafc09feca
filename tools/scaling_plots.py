#!/usr/bin/python3
"""PNG plots of scaling experiments, from the CSV files sambay_sweep writes.

usage: tools/scaling_plots.py --out DIR [--results results.csv [--fit fit.ini] [--label TEXT]]...
                              [--x COLUMN] [--perf perf.csv --perf-label TEXT]...

  --results  `sambay_sweep collect` output. Runs of a scaling study (kind strong or weak) give
             throughput.png and efficiency.png (one line per layout); runs of a depth sweep give
             loss_vs_compute.png (with --fit: the fitted L(C) = A C^-alpha + E drawn through).
             Repeatable: several depth sweeps (one per architecture) share one loss_vs_compute.png,
             the i-th --fit and --label going with the i-th --results.
  --x        the compute column: flops (sambay's exact count, the default), flops_archscale_estimate
             (ArchScale's estimate_flops) or flops_6nt (6 N T, ArchScale's plots); a --fit file
             names the column it was fitted on, which must agree.
  --perf     `sambay_sweep perf --out` predictions (repeatable, each with its --perf-label),
             drawn as dashed lines in throughput.png and efficiency.png (alone when there are
             no measured runs), one per TP degree.
Efficiency: measured runs against the smallest run of the same layout; predictions against one
GPU (with the same replica batch, or with the whole global batch in a strong-scaling prediction).
Runs Debian's python3 (matplotlib from python3-matplotlib, installed by scripts/setup.sh).
"""
import argparse
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(row, key):
    value = row.get(key, "")
    return float(value) if value not in ("", None) else math.nan


# The compute conventions of the collector's CSV (tools/sweep/collect.h), as axis labels.
COMPUTE_LABELS = {
    "flops": "training compute C (FLOPs, sambay's exact count)",
    "flops_archscale_estimate": "training compute C (FLOPs, ArchScale's estimate_flops)",
    "flops_6nt": "training compute C = 6 N T (FLOPs, ArchScale's plots)",
}


def read_fit(path):
    fit = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if "=" in line:
                key, value = (part.strip() for part in line.split("=", 1))
                fit[key] = value
    return float(fit["A"]), float(fit["alpha"]), float(fit["E"]), fit.get("x", "flops")


def gpu_axis(ax, title, ylabel):
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel("GPUs")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def measured_series(rows):
    """{layout: [(gpus, tokens/s)]} for finished scaling-study runs with a throughput."""
    series = {}
    for r in rows:
        if r["kind"] not in ("strong", "weak") or r["status"] != "finished":
            continue
        tps = number(r, "tokens_per_s")
        if math.isfinite(tps):
            series.setdefault(r["layout"], []).append((int(r["gpus"]), tps))
    return {k: sorted(v) for k, v in series.items()}


def predicted_series(rows):
    """{tp: [(gpus, tokens/s, efficiency)]} from perf predictions."""
    series = {}
    for r in rows:
        series.setdefault(int(r["tp"]), []).append(
            (int(r["gpus"]), number(r, "tokens_per_s"), number(r, "efficiency")))
    return {k: sorted(v) for k, v in series.items()}


def plot_scaling(measured, predicted, out):
    fig_t, ax_t = plt.subplots(figsize=(7, 4.5))
    fig_e, ax_e = plt.subplots(figsize=(7, 4.5))
    for layout, points in measured.items():
        gpus = [g for g, _ in points]
        tps = [t for _, t in points]
        base_g, base_t = points[0]
        eff = [(t / g) / (base_t / base_g) for g, t in points]
        ax_t.plot(gpus, tps, "o-", label=f"measured, {layout}")
        ax_e.plot(gpus, eff, "o-", label=f"measured, {layout}")
    for label, series in predicted.items():
        for tp, points in series.items():
            gpus = [p[0] for p in points]
            ax_t.plot(gpus, [p[1] for p in points], "--", label=f"{label}, TP {tp}")
            ax_e.plot(gpus, [p[2] for p in points], "--", label=f"{label}, TP {tp}")
    gpu_axis(ax_t, "Throughput", "tokens/s")
    ax_t.set_yscale("log")
    gpu_axis(ax_e, "Scaling efficiency", "tokens/s per GPU relative to the baseline")
    ax_e.set_ylim(0, 1.1 * max(1.0, *(line.get_ydata().max() for line in ax_e.get_lines())))
    for fig, ax, name in ((fig_t, ax_t, "throughput.png"), (fig_e, ax_e, "efficiency.png")):
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=120)
        print(os.path.join(out, name))
        plt.close(fig)


def depth_points(rows, x):
    points = []
    for r in rows:
        if r["kind"] != "depth" or r["status"] != "finished":
            continue
        loss = number(r, "final_valid_loss")
        if not math.isfinite(loss):
            loss = number(r, "final_loss")
        points.append((number(r, x), loss, r["depth"]))
    return sorted(points)


def plot_loss_vs_compute(series, x, out):
    """series: (label, rows, fit or None) per depth sweep."""
    series = [(label, depth_points(rows, x), fit) for label, rows, fit in series]
    series = [s for s in series if s[1]]
    if not series:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, points, fit) in enumerate(series):
        color = f"C{i}"
        ax.plot([p[0] for p in points], [p[1] for p in points], "o", color=color,
                label=f"{label}: runs (final validation loss)" if label else "runs (final validation loss)")
        for c, loss, depth in points:
            ax.annotate(f"d{depth}", (c, loss), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if fit:
            A, alpha, E, _ = fit
            lo, hi = points[0][0] / 1.5, points[-1][0] * 1.5
            cs = [lo * (hi / lo) ** (j / 200) for j in range(201)]
            ax.plot(cs, [A * c ** -alpha + E for c in cs], "-", color=color,
                    label=f"{label + ': ' if label else ''}L(C) = {A:.3g} C^-{alpha:.3g} + {E:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel(COMPUTE_LABELS.get(x, x))
    ax.set_ylabel("loss")
    ax.set_title("Loss against compute")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "loss_vs_compute.png")
    fig.savefig(path, dpi=120)
    print(path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--results", action="append", default=[])
    parser.add_argument("--fit", action="append", default=[])
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--x", default=None, choices=sorted(COMPUTE_LABELS))
    parser.add_argument("--perf", action="append", default=[])
    parser.add_argument("--perf-label", action="append", default=[])
    args = parser.parse_args()
    if not args.results and not args.perf:
        sys.exit("scaling_plots: nothing to plot: give --results and/or --perf")
    if len(args.fit) > len(args.results) or len(args.label) > len(args.results):
        sys.exit("scaling_plots: more --fit or --label than --results (they pair up in order)")
    os.makedirs(args.out, exist_ok=True)
    fits = [read_fit(f) for f in args.fit]
    x = args.x
    for path, fit in zip(args.fit, fits):
        if x is None:
            x = fit[3]
        elif fit[3] != x:
            sys.exit(f"scaling_plots: {path} was fitted on '{fit[3]}', the plot's compute is '{x}'")
    x = x or "flops"
    all_rows = [read_csv(r) for r in args.results]
    rows = [r for rs in all_rows for r in rs]
    measured = measured_series(rows)
    labels = args.perf_label + [f"predicted {i + 1}" for i in range(len(args.perf))]
    predicted = {labels[i]: predicted_series(read_csv(p)) for i, p in enumerate(args.perf)}
    if measured or predicted:
        plot_scaling(measured, predicted, args.out)
    series = [(args.label[i] if i < len(args.label) else "", rs, fits[i] if i < len(fits) else None)
              for i, rs in enumerate(all_rows)]
    plot_loss_vs_compute(series, x, args.out)


if __name__ == "__main__":
    main()
