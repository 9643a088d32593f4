"""The report's figures, drawn with matplotlib from the tidy tables only."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402

from evalvae.io import atomic_path  # noqa: E402
from evalvae.metrics import stats  # noqa: E402
from evalvae.report.format import metric_name, metric_title  # noqa: E402
from evalvae.report.sections import Section  # noqa: E402

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 10.5,
    "axes.titlesize": 11.5,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "axes.edgecolor": "#888888",
    "font.family": "DejaVu Sans",
}
PALETTE = plt.get_cmap("tab10").colors
GREY = {"color": "#444444"}
MARKER = dict(s=70, edgecolor="black", linewidth=0.6, zorder=3)
# matplotlib 3.10 replaced vert=False with orientation="horizontal" (and deprecates vert)
NEW = tuple(map(int, matplotlib.__version__.split(".")[:2])) >= (3, 10)
HORIZONTAL = {"orientation": "horizontal"} if NEW else {"vert": False}


def finite(values: pd.Series) -> np.ndarray:
    """The finite values: plots leave out missing ones and infinities (the PSNR of an exact reconstruction)."""
    v = values.to_numpy(dtype=float)
    return v[np.isfinite(v)]


def has_infinite(section: Section) -> bool:
    """Whether a plot of this section leaves out infinite values (its caption says so)."""
    return any(
        np.isinf(section.per_image[m].to_numpy(dtype=float)).any() for m in section.metrics if m in section.per_image
    )


def colours(section: Section) -> dict[str, tuple]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(section.labels)}


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _panels(n: int, rows_per_panel: int, width: float | None = None, max_cols: int = 4):
    """Axes for ``n`` panels; without ``width``, one or two panels take 3.4 in each, more share 13.2 in."""
    cols = min(n, max_cols)
    width = width or (3.4 if cols <= 2 else 13.2 / cols)
    nrows = math.ceil(n / cols)
    height = 1.1 + 0.42 * max(rows_per_panel, 2)
    fig, axes = plt.subplots(nrows, cols, figsize=(width * cols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def bars(section: Section, summary: pd.DataFrame, path: Path) -> Path | None:
    """Mean of each quality metric per VAE: bars with 95% bootstrap CI whiskers; the best bar is outlined
    (the summary's ``best``: none where every VAE ties). Facts (bpp, region counts) are not qualities: no bars."""
    metrics = [
        m
        for m in section.metrics + section.set_metrics
        if section.is_quality(m) and (summary[summary["metric"] == m]["status"] == "ok").any()
    ]
    if not metrics:
        return None
    colour = colours(section)
    labels = section.labels[::-1]
    with plt.rc_context(STYLE):
        fig, axes = _panels(len(metrics), len(labels))
        for ax, metric in zip(axes, metrics):
            rows = summary[summary["metric"] == metric].set_index("entry").reindex(labels)
            y = np.arange(len(labels))
            ok = rows["status"] == "ok"
            shown = rows["mean"].where(ok)
            means = shown.where(np.isfinite(shown.astype(float)))  # an infinite mean (an exact PSNR): no bar, a label
            xerr = np.vstack([means - rows["ci_low"], rows["ci_high"] - means]).clip(min=0)
            outline = ["black" if b else "none" for b in rows["best"].fillna(False)]
            bar = dict(alpha=0.85, height=0.62, edgecolor=outline, linewidth=1.6)
            ax.barh(y, means.fillna(0), color=[colour[lab] for lab in labels], **bar)
            ax.errorbar(means, y, xerr=np.nan_to_num(xerr), fmt="none", ecolor="#222222", elinewidth=1.2, capsize=3)
            for yi, (m, status, hi) in enumerate(zip(shown, rows["status"], rows["ci_high"])):
                text = (
                    (f"{m:.4g}" if np.isfinite(m) else ("∞" if m > 0 else "−∞"))
                    if status == "ok"
                    else ("n/a" if status == "unavailable" else "not run")
                )
                x = hi if np.isfinite(hi) else (m if np.isfinite(m) else 0)
                ax.text(x, yi, "  " + text, va="center", fontsize=9.5, color="#333333")
            ax.set_yticks(y, labels)
            ax.set_title(metric_title(section.info(metric)))
            ax.grid(axis="y", visible=False)
            ax.margins(x=0.22)
            ax.xaxis.set_major_locator(MaxNLocator(4))
        fig.tight_layout()
        return _save(fig, path)


def distributions(section: Section, path: Path) -> Path | None:
    """Per-image scores of each quality metric per VAE: violin, box (median, quartiles) and every image as a dot."""
    metrics = [m for m in section.quality_metrics if np.isfinite(section.per_image[m].astype(float)).any()]
    if not metrics:
        return None
    colour = colours(section)
    labels = [lab for lab in section.labels[::-1] if lab in set(section.per_image["entry"])]
    rng = np.random.default_rng(0)
    with plt.rc_context(STYLE):
        fig, axes = _panels(len(metrics), len(labels))
        for ax, metric in zip(axes, metrics):
            data = [finite(section.per_image.loc[section.per_image["entry"] == lab, metric]) for lab in labels]
            pos = [i for i, d in enumerate(data) if d.size]
            if any(data[i].size > 2 and np.ptp(data[i]) > 0 for i in pos):
                parts = ax.violinplot(
                    [data[i] for i in pos], positions=pos, **HORIZONTAL, showextrema=False, widths=0.8
                )
                for body, i in zip(parts["bodies"], pos):
                    body.set_facecolor(colour[labels[i]])
                    body.set_alpha(0.25)
            grey = dict(boxprops=GREY, whiskerprops=GREY, capprops=GREY, medianprops={"color": "black"})
            ax.boxplot([data[i] for i in pos], positions=pos, **HORIZONTAL, widths=0.25, showfliers=False, **grey)
            for i in pos:
                y = i + rng.uniform(-0.12, 0.12, data[i].size)
                ax.scatter(data[i], y, s=9, color=colour[labels[i]], alpha=0.8, linewidths=0, zorder=3)
            ax.set_yticks(range(len(labels)), labels)
            ax.set_title(metric_title(section.info(metric)) + " per image")
            ax.grid(axis="y", visible=False)
        fig.tight_layout()
        return _save(fig, path)


def paired_forest(section: Section, paired: pd.DataFrame, path: Path) -> Path | None:
    """Mean paired difference (A − B) with its 95% CI per pair; filled markers are significant."""
    # an infinite Δ (exact reconstructions on one side) has no place on an axis
    paired = paired[np.isfinite(paired["mean_diff"].astype(float))]
    if paired.empty:
        return None
    metrics = list(dict.fromkeys(paired["metric"]))
    n_pairs = paired.groupby("metric").size().max()
    with plt.rc_context(STYLE):
        fig, axes = _panels(len(metrics), max(n_pairs, 2), width=6.0, max_cols=1)
        for ax, metric in zip(axes, metrics):
            rows = paired[paired["metric"] == metric].iloc[::-1]
            y = np.arange(len(rows))
            err = np.vstack([rows["mean_diff"] - rows["ci_low"], rows["ci_high"] - rows["mean_diff"]]).clip(min=0)
            ax.axvline(0, color="#999999", linewidth=1, zorder=1)
            bar = dict(fmt="none", ecolor="#333333", elinewidth=1.3, capsize=3, zorder=2)
            ax.errorbar(rows["mean_diff"], y, xerr=np.nan_to_num(err), **bar)
            sig = rows["significant"].to_numpy(bool)
            d = rows["mean_diff"]
            ax.scatter(d[sig], y[sig], s=40, color="#c0392b", zorder=3, label="significant (Holm p < 0.05)")
            ax.scatter(
                d[~sig], y[~sig], s=40, facecolor="white", edgecolor="#333333", zorder=3, label="not significant"
            )
            ax.set_yticks(y, [f"{a}\n− {b}" for a, b in zip(rows["a"], rows["b"])], fontsize=9)
            ax.set_title(f"Δ {metric_title(section.info(metric))}")
            ax.grid(axis="y", visible=False)
            ax.set_ylim(-0.8, len(rows) - 0.2)
            ax.xaxis.set_major_locator(MaxNLocator(6))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
            lim = np.nanmax(np.abs(np.concatenate([rows["ci_low"], rows["ci_high"], rows["mean_diff"]])))
            if np.isfinite(lim) and lim > 0:  # symmetric around zero, so the side that is better reads at a glance
                ax.set_xlim(-1.15 * lim, 1.15 * lim)
        handles, names = axes[0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.12 / len(metrics), 1, 1))
        fig.legend(handles, names, loc="lower center", ncol=2, frameon=False, fontsize=9)
        return _save(fig, path)


def pareto(section: Section, points: pd.DataFrame, speed_note: str, path: Path) -> Path | None:
    """Quality against throughput; the line joins the VAEs no other VAE beats on both axes."""
    points = points[np.isfinite(points["quality"].astype(float))]
    if len(points) < 2:
        return None
    metric = points["metric"].iloc[0]
    higher = section.direction(metric)
    colour = colours(section)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.6, 4.4))
        for _, p in points.iterrows():
            xy = (p["images_per_s"], p["quality"])
            ax.scatter(*xy, color=colour[p["entry"]], **MARKER)
            ax.annotate(f"{p['entry']}\n{p['detail']}", xy, xytext=(7, 4), textcoords="offset points", fontsize=9)
        q = points["quality"] * (1 if higher else -1)
        order = points.assign(q=q).sort_values("images_per_s", ascending=False)
        front, best = [], -np.inf
        for _, p in order.iterrows():
            if p["q"] > best:
                front.append(p)
                best = p["q"]
        if len(front) > 1:
            f = pd.DataFrame(front)
            line = dict(color="#555555", linestyle="--", linewidth=1, zorder=2, label="Pareto front")
            ax.plot(f["images_per_s"], f["quality"], **line)
            ax.legend(frameon=False, fontsize=9)
        if points["images_per_s"].max() > 10 * points["images_per_s"].min():
            ax.set_xscale("log")
        ax.set_xlabel("images / s  (" + speed_note + ")", fontsize=9.5)
        ax.set_ylabel(metric_title(section.info(metric)))
        ax.set_title(f"Quality vs speed: {'up' if higher else 'down'} and to the right is better")
        ax.margins(x=0.25, y=0.2)
        fig.tight_layout()
        return _save(fig, path)


def categories(section: Section, metric: str, path: Path) -> Path | None:
    """Mean per category for each VAE, with 95% bootstrap CI whiskers."""
    df = section.per_image
    if "category" not in df or not np.isfinite(df[metric].astype(float)).any():
        return None
    cats = sorted(df["category"].dropna().astype(str).unique())
    labels = [lab for lab in section.labels if lab in set(df["entry"])]
    if not cats:
        return None
    colour = colours(section)
    width = 0.8 / len(labels)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(cats) * max(1, len(labels) / 2)), 3.8))
        for j, lab in enumerate(labels):
            means, lo, hi = [], [], []
            for c in cats:
                v = finite(df.loc[(df["entry"] == lab) & (df["category"].astype(str) == c), metric])
                ci = stats.bootstrap_ci(v, n_resamples=1999)
                m = float(v.mean()) if v.size else np.nan
                means.append(m)
                lo.append(m - ci.low if np.isfinite(ci.low) else 0)
                hi.append(ci.high - m if np.isfinite(ci.high) else 0)
            x = np.arange(len(cats)) + (j - (len(labels) - 1) / 2) * width
            ax.bar(x, np.nan_to_num(means), width=width * 0.92, color=colour[lab], label=lab, alpha=0.9)
            ax.errorbar(x, means, yerr=[lo, hi], fmt="none", ecolor="#222222", elinewidth=1, capsize=2)
        tilt = len(cats) > 5
        ax.set_xticks(np.arange(len(cats)), cats, rotation=30 if tilt else 0, ha="right" if tilt else "center")
        ax.set_title(metric_title(section.info(metric)) + " by category")
        ax.grid(axis="x", visible=False)
        ax.legend(frameon=False, fontsize=9, ncol=min(4, len(labels)))
        fig.tight_layout()
        return _save(fig, path)


RD_METRICS = ("psnr", "ssim", "lpips")  # quality axes of the rate-distortion plot, where measured
RD_TICKS = tuple(2.0**k for k in range(-6, 7))  # 1/64 to 64 bpp: powers of two read as "bits"


def _log_axis(axis, low: float, high: float) -> None:
    """A log axis over ``[low, high]`` with plain-number labels at powers of two (at least two inside)."""
    ticks = [t for t in RD_TICKS if low <= t <= high]
    if len(ticks) >= 2:
        axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def rate_distortion(section: Section, summary: pd.DataFrame, path: Path) -> Path | None:
    """Mean quality against mean bits per pixel, one marker per VAE or codec and one panel per quality
    metric (PSNR, SSIM, LPIPS where measured); None without ``bpp`` for at least two entries.

    Entries with an unknown or infinite mean (an exact PSNR) get no marker on that panel. The entries
    are named in one legend (colours as in the other plots), so close markers never hide each other's
    names. Rates spanning more than 10x are on a log axis, and so is a positive lower-is-better metric
    spanning more than 10x (LPIPS of a good VAE next to a poor baseline).
    """
    ok = summary[summary["status"] == "ok"]
    rate = ok[ok["metric"] == "bpp"].set_index("entry")["mean"].astype(float)
    rate = rate[np.isfinite(rate) & (rate > 0)]
    metrics = [m for m in RD_METRICS if m in section.metrics and (ok["metric"] == m).any()]
    if len(rate) < 2 or not metrics:
        return None
    colour = colours(section)
    shown: dict[str, object] = {}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.9), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            quality = ok[ok["metric"] == metric].set_index("entry")["mean"].astype(float)
            ys = []
            for label in section.labels:
                x, y = rate.get(label, np.nan), quality.get(label, np.nan)
                if not (np.isfinite(x) and np.isfinite(y)):
                    continue
                ys.append(y)
                shown[label] = ax.scatter(x, y, color=colour[label], label=label, **MARKER)
            if rate.max() > 10 * rate.min():  # every panel on one log axis of all entries' rates
                ax.set_xscale("log")
                ax.set_xlim(rate.min() / 1.6, rate.max() * 1.6)
                _log_axis(ax.xaxis, rate.min() / 1.6, rate.max() * 1.6)
            higher = section.direction(metric)
            if ys and not higher and min(ys) > 0 and max(ys) > 10 * min(ys):
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            else:
                ax.margins(y=0.15)
            ax.set_xlabel("bits per pixel")
            ax.set_ylabel(metric_title(section.info(metric)))
            better = "up" if higher else "down"
            ax.set_title(f"{metric_name(section.info(metric))}: {better} and left is better", fontsize=10.5)
        fig.tight_layout()
        if shown:
            fig.subplots_adjust(right=1 - 1.6 / fig.get_figwidth())
            anchor = (1 - 1.5 / fig.get_figwidth(), 0.5)
            fig.legend(
                list(shown.values()), list(shown), loc="center left", bbox_to_anchor=anchor, frameon=False, fontsize=9
            )
        return _save(fig, path)
