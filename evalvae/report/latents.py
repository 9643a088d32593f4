"""The report's "Latent diagnostics" sections: read from the ``latents.csv`` an ``evalvae latents`` run wrote.

One section per directory holding ``latents.csv`` (an input directory, or a run directory the
latents command was pointed at with ``hydra.run.dir``): its tables of suggested against configured
factors, and of clamp share, spectra shares and PSNR drops, and the run's plots (copied into the report).
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from evalvae.report.verdict import latents_recommendation

FILE = "latents.csv"
# column -> (title, format)
COLUMNS = {
    "vae": ("VAE", "{}"),
    "channels": ("channels", "{:d}"),
    "n_images": ("images", "{:d}"),
    "std": ("raw std", "{:.4g}"),
    "suggested_scaling_factor": ("suggested scaling_factor (1/std)", "{:.4g}"),
    "scaling_factor": ("configured scaling_factor", "{:.4g}"),
    "suggested_shift_factor": ("suggested shift_factor (mean)", "{:.4g}"),
    "shift_factor": ("configured shift_factor", "{:.4g}"),
    "scaled_std": ("std after configured factors", "{:.3f}"),
    "kurtosis": ("excess kurtosis", "{:.3f}"),
    "clamp_saturated": ("|z| > 3 (TAESD clamp)", "{:.3%}"),
    "spectrum_high_latent": ("latent power > ½ Nyquist", "{:.1%}"),
    "spectrum_high_image": ("image power > ½ Nyquist", "{:.1%}"),
    "psnr": ("PSNR (dB)", "{:.2f}"),
}
# The columns split into two tables that each fit a window's width: the factors, then how the latents behave.
FACTORS = list(COLUMNS)[:9]  # vae ... scaled_std
TABLES = (
    ("Scale and shift", FACTORS),
    ("Distribution, spectrum and decoder sensitivity", ["vae", *list(COLUMNS)[9:]]),
)
HIST_CAPTION = (
    "Density of each channel's raw latents; dotted red lines at ±3, where TAESD's decoder clamp 3·tanh(z/3) saturates."
)
PLOTS = (
    (
        "latents_spectrum.png",
        "Power spectra: latents vs images",
        "Radially averaged power spectrum of each latent "
        "channel and each RGB channel (means removed), against radial frequency as a fraction of its own grid's Nyquist "
        "frequency, averaged over maps and normalised to sum 1.",
    ),
    (
        "latents_noise.png",
        "Decoder sensitivity",
        "Mean PSNR drop when Gaussian noise of σ = k × the image's latent "
        "std is added to its latent before decoding (seeded per image).",
    ),
)


def latent_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """The directories among ``paths`` that hold ``latents.csv``, each once, in order."""
    seen: dict[Path, Path] = {}
    for p in map(Path, paths):
        p = p.expanduser()
        if (p / FILE).is_file():
            seen.setdefault(p.resolve(), p)
    return list(seen.values())


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if fmt == "{:d}":
        return str(int(value))
    return fmt.format(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "run"


def latent_sections(dirs: list[Path], plot_dir: Path) -> tuple[list[dict], list[str]]:
    """Per directory: a section view (title, slug, table, plots copied into ``plot_dir``); and the problems."""
    views, problems = [], []
    for i, d in enumerate(dirs):
        try:
            frame = pd.read_csv(d / FILE)
        except (OSError, ValueError) as e:
            problems.append(f"{d / FILE} is unreadable ({type(e).__name__}: {e})")
            continue
        if frame.empty:
            problems.append(f"{d / FILE}: no VAE produced latent diagnostics")
            continue
        label = d.resolve().name
        slug = f"latents-{i}-{_slug(label)}"
        drops = [c for c in frame.columns if c.startswith("psnr_drop_")]
        tables = []
        for i_table, (title, names) in enumerate(TABLES):
            columns = [c for c in names if c in frame.columns]
            extra = drops if i_table == len(TABLES) - 1 else []
            header = [COLUMNS[c][0] for c in columns] + [
                f"PSNR drop, σ = {c[len('psnr_drop_') :]} × std" for c in extra
            ]
            rows = [
                [_cell(r[c], COLUMNS[c][1]) for c in columns] + [_cell(r[c], "{:.3f}") for c in extra]
                for r in frame.to_dict("records")
            ]
            tables.append({"title": title, "header": header, "rows": rows})
        plot_dir.mkdir(parents=True, exist_ok=True)
        plots = []
        named = list(PLOTS)
        for vae in frame["vae"]:
            hist = f"latents_hist_{re.sub(r'[^A-Za-z0-9_.-]+', '-', str(vae))}.png"
            named.append((hist, f"{vae}: latent histograms", HIST_CAPTION))
        for name, title, caption in named:
            src = d / "plots" / name
            if src.is_file():
                dst = plot_dir / f"{slug}-{name}"
                shutil.copyfile(src, dst)
                plots.append({"title": title, "path": dst, "caption": caption, "wide": False})
        view = dict(title=f"Latent diagnostics · {label}", slug=slug, source=str(d), tables=tables)
        views.append(view | dict(recommendation=latents_recommendation(frame), vaes=len(frame), plots=plots))
    return views, problems
