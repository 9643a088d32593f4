"""Plots read from ``bench.csv``: time per image and peak memory against resolution, log-log.

One figure per metric and batch size; panels are ops (rows) by memory modes (columns); one line
per VAE (colour) and dtype (line style). Out-of-memory configurations are crosses along the top
edge of their panel, non-finite outputs are circled in red.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullLocator

from evalvae.bench.results import flagged
from evalvae.io import atomic_path
from evalvae.vocab import BENCH_OPS, MEMORY_MODES

STYLES = {"fp32": ("-", "o"), "fp16": ("--", "s"), "bf16": (":", "^")}
# file stem -> (column, y label, title)
METRICS = {
    "time": ("ms_per_image_median", "ms per image", "time per image (median)"),
    "memory": ("peak_mem_mb", "peak MiB", "peak memory"),
}
MEMORY_TITLES = {
    "cuda_max_allocated": "peak memory (torch.cuda.max_memory_allocated)",
    "rss_peak": "peak memory (resident set of the whole process)",
    "rss_peak_process": "peak memory (resident set of the whole process)",
}


def write_plots(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write ``bench_time_b<batch>.png`` and ``bench_memory_b<batch>.png`` for each batch size."""
    out, paths = Path(out_dir), []
    for batch in sorted(df["batch"].unique()):
        sub = df[df["batch"] == batch]
        for name, (column, label, title) in METRICS.items():
            if name == "memory":
                metrics = sub["mem_metric"].dropna().unique()
                title = MEMORY_TITLES.get(metrics[0], title) if len(metrics) == 1 else title
            fig = figure(sub, column, label, f"{title} vs resolution, batch {batch}, {_device(sub)}")
            path = out / f"bench_{name}_b{batch}.png"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=110)
            paths.append(path)
    return paths


def _number(value: float, _pos=None) -> str:
    return f"{value:g}"


def _minor_number(ax):
    """Label minor ticks only when the axis spans less than about one decade (else they crowd)."""

    def fmt(value: float, _pos=None) -> str:
        low, high = ax.get_ylim()
        return f"{value:g}" if low > 0 and high / low < 12 else ""

    return fmt


def _device(df: pd.DataFrame) -> str:
    names = df["device_name"].dropna().unique() if "device_name" in df else []
    return str(names[0]) if len(names) == 1 else ", ".join(map(str, df["device"].unique()))


def figure(df: pd.DataFrame, column: str, ylabel: str, title: str) -> Figure:
    """Panels of ops x modes with one line per (vae, dtype)."""
    ops = [o for o in BENCH_OPS if o in set(df["op"])]
    modes = [m for m in MEMORY_MODES if m in set(df["mode"])]
    vaes = list(dict.fromkeys(df["vae"]))
    colors = {v: f"C{i % 10}" for i, v in enumerate(vaes)}
    resolutions = sorted(df["resolution"].unique())
    fig = Figure(figsize=(3.6 * len(modes) + 1.5, 2.9 * len(ops)), layout="constrained")
    axes = fig.subplots(len(ops), len(modes), squeeze=False, sharex=True, sharey="row")
    handles: dict[str, Line2D] = {}
    marks = set()
    for i, op in enumerate(ops):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            panel = df[(df["op"] == op) & (df["mode"] == mode)]
            for (vae, dtype), line in panel.groupby(["vae", "dtype"], sort=False):
                style, marker = STYLES.get(dtype, ("-.", "d"))
                ok = line[(line["status"] == "ok") & (line[column] > 0)].sort_values("resolution")
                look = dict(linestyle=style, marker=marker, color=colors[vae], label=f"{vae} {dtype}")
                (h,) = ax.plot(ok["resolution"], ok[column], **look)
                handles.setdefault(f"{vae} {dtype}", h)
                bad = ok[ok["nonfinite"].map(flagged)]
                if len(bad):
                    ring = dict(s=160, facecolors="none", edgecolors="red", linewidths=1.5, zorder=3)
                    ax.scatter(bad["resolution"], bad[column], **ring)
                    marks.add("nonfinite")
                oom = line[line["status"] == "oom"]
                if len(oom):
                    top = dict(transform=ax.get_xaxis_transform(), clip_on=False)
                    ax.plot(oom["resolution"], [0.95] * len(oom), "x", color=colors[vae], markersize=9, **top)
                    marks.add("oom")
            if len(panel[(panel["status"] == "ok") & (panel[column] > 0)]):
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FuncFormatter(_number))
                ax.yaxis.set_minor_formatter(FuncFormatter(_minor_number(ax)))
            ax.set_xscale("log", base=2)
            ax.set_xticks(resolutions, [str(r) for r in resolutions])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{op}, {mode}", fontsize=10)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=9)
            if i == len(ops) - 1:
                ax.set_xlabel("resolution (px, square)")
    extra = []
    if "oom" in marks:
        extra.append(Line2D([], [], linestyle="none", marker="x", color="grey", label="out of memory"))
    if "nonfinite" in marks:
        ring = dict(marker="o", markerfacecolor="none", markeredgecolor="red", label="non-finite output")
        extra.append(Line2D([], [], linestyle="none", **ring))
    fig.legend(handles=[*handles.values(), *extra], loc="outside right center", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return fig
