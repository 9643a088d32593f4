"""Plots of an ``evalvae latents`` run, read from its tables: histograms per VAE, spectra, noise sensitivity."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from evalvae.io import atomic_path


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _finish(fig: Figure, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name))


def histograms(hist: pd.DataFrame, vae: str, path: Path) -> Path:
    """The density of each channel's raw latents, one line per channel (coloured by channel index)."""
    from matplotlib import colormaps

    sub = hist[hist["vae"] == vae]
    channels = list(dict.fromkeys(sub["channel"]))
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for i, (c, h) in enumerate(sub.groupby("channel", sort=False)):
        width = (h["right"] - h["left"]).to_numpy()
        density = h["count"].to_numpy() / width / max(h["count"].sum(), 1)
        label = f"ch {c}" if len(channels) <= 8 else None
        ax.step(h["left"], density, where="post", lw=0.8, color=cmap(i / max(len(channels) - 1, 1)), label=label)
    for x in (-3, 3):
        ax.axvline(x, color="tab:red", lw=0.8, ls=":")
    ax.set_xlabel("raw latent value")
    ax.set_ylabel("density")
    ax.set_title(f"{vae}: histogram of each of its {len(channels)} latent channels (red: TAESD clamp ±3)", fontsize=9)
    if len(channels) <= 8:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def spectra(spec: pd.DataFrame, path: Path) -> Path:
    """Normalised radially averaged power spectra: each VAE's latents (solid) and the images it saw (dashed grey)."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, (vae, sub) in enumerate(spec.groupby("vae", sort=False)):
        sub = sub.dropna(subset=["power"])  # bins the grid's frequencies do not reach
        lat = sub[sub["signal"] == "latent"]
        ax.plot(lat["frequency"], lat["power"], marker="o", ms=3, label=f"{vae} latents", color=f"C{i}")
        img = sub[sub["signal"] == "image"]
        ax.plot(img["frequency"], img["power"], ls="--", color="0.5", lw=1, label="images" if i == 0 else None)
    ax.set_yscale("log")
    title = "Radially averaged power spectrum: latents vs images"
    return _finish(fig, ax, path, "radial frequency / Nyquist of its own grid", "power (normalised to sum 1)", title)


def noise(rows: pd.DataFrame, path: Path) -> Path:
    """PSNR drop against the relative latent noise, one line per VAE."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, (vae, sub) in enumerate(rows.groupby("vae", sort=False)):
        ax.plot(sub["noise_rel_std"], sub["psnr_drop"], marker="o", label=vae, color=f"C{i}")
    ax.set_xscale("log")
    title = "Decoder sensitivity to Gaussian latent noise"
    return _finish(fig, ax, path, "latent noise σ / latent std", "PSNR drop (dB)", title)


def write_plots(run_dir: str | Path) -> list[Path]:
    """``plots/latents_hist_<vae>.png``, ``plots/latents_spectrum.png`` and ``plots/latents_noise.png``."""
    out = Path(run_dir)
    paths = []
    hist = pd.read_csv(out / "latents_histograms.csv")
    for vae in dict.fromkeys(hist["vae"]):
        paths.append(histograms(hist, vae, out / "plots" / f"latents_hist_{slug(vae)}.png"))
    paths.append(spectra(pd.read_csv(out / "latents_spectra.csv"), out / "plots" / "latents_spectrum.png"))
    rows = pd.read_csv(out / "latents_noise.csv")
    if not rows.empty:
        paths.append(noise(rows, out / "plots" / "latents_noise.png"))
    return paths
