"""``robustness-<vae>.png``, read from the tidy table: one figure per VAE, three panels.

1. PSNR of the tiled decode and of each reduced precision against the fp32 plain output (an
   infinite PSNR, identical outputs, is drawn at the top of the axis and labelled ∞);
2. the largest |difference| in 8-bit levels: tiled on the seam band and off it, and per precision;
3. the resolution sweep: PSNR against the originals by resolution, SSIM on a second axis.
Unavailable settings are labelled "n/a".
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from evalvae.io import atomic_path


def _value(df: pd.DataFrame, check: str, setting: str | None, metric: str) -> float:
    sel = df[(df["check"] == check) & (df["metric"] == metric)]
    if setting is not None:
        sel = sel[sel["setting"] == setting]
    return float(sel["value"].iloc[0]) if len(sel) else math.nan


def _bars(ax, labels: list[str], values: list[float], ylabel: str, title: str) -> None:
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite, default=1.0) * 1.15 or 1.0
    shown = [top if v == math.inf else (0 if math.isnan(v) else v) for v in values]
    bars = ax.bar(range(len(labels)), shown, color=["#4c72b0" if math.isfinite(v) else "#bbbbbb" for v in values])
    for b, v in zip(bars, values):
        text = "∞" if v == math.inf else ("n/a" if math.isnan(v) else f"{v:.3g}")
        ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(0, top * 1.1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def plot_vae(df: pd.DataFrame, vae: str, path: Path) -> Path:
    """Draw one VAE's rows of the table into ``path``."""
    df = df[df["vae"] == vae]
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    dtypes = list(dict.fromkeys(df.loc[df["check"] == "precision", "setting"]))
    tiled = df.loc[df["check"] == "tiled", "setting"]
    tile = tiled.iloc[0] if len(tiled) else None
    labels, psnr = [], []
    if tile is not None:
        labels.append(tile.replace("=", " "))
        psnr.append(_value(df, "tiled", tile, "psnr"))
    for d in dtypes:
        labels.append(d)
        psnr.append(_value(df, "precision", d, "psnr"))
    _bars(ax1, labels, psnr, "PSNR (dB)", "vs its fp32 plain output")
    labels, errs = [], []
    if tile is not None:
        labels += ["seams", "off seams"]
        errs += [_value(df, "tiled", tile, "seam_max_abs"), _value(df, "tiled", tile, "off_seam_max_abs")]
    for d in dtypes:
        labels.append(d)
        errs.append(_value(df, "precision", d, "max_abs"))
    _bars(ax2, labels, errs, "max |difference| (8-bit levels)", "largest pixel error")
    sweep = df[df["check"] == "resolution"]
    resolutions = sorted({int(s) for s in sweep["setting"] if re.fullmatch(r"\d+", str(s))})
    if resolutions:
        ps = [_value(sweep, "resolution", str(r), "psnr") for r in resolutions]
        ax3.plot(resolutions, ps, "o-", color="#4c72b0", label="PSNR")
        ax3.set_xscale("log", base=2)
        ax3.set_xticks(resolutions, [str(r) for r in resolutions])
        ax3.set_xlabel("resolution (px)")
        ax3.set_ylabel("PSNR vs originals (dB)", color="#4c72b0")
        ss = [_value(sweep, "resolution", str(r), "ssim") for r in resolutions]
        if any(math.isfinite(v) for v in ss):
            twin = ax3.twinx()
            twin.plot(resolutions, ss, "s--", color="#dd8452")
            twin.set_ylabel("SSIM", color="#dd8452")
    ax3.set_title("resolution sweep", fontsize=10)
    fig.suptitle(f"{vae}: robustness", fontsize=11)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def write_plots(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``robustness-<vae>.png`` for every VAE of the table."""
    out = Path(out_dir)
    return [plot_vae(df, vae, out / f"robustness-{plot_name(vae)}.png") for vae in dict.fromkeys(df["vae"])]


def plot_name(vae: str) -> str:
    """A file-name-safe form of a VAE name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(vae))
