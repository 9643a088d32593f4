"""A VAE's :class:`~evalvae.latents.diagnose.Diagnosis` as tidy rows: the per-VAE row of ``latents.csv``
and the rows of the per-channel, noise, spectra and histogram tables."""

from __future__ import annotations

import math

import numpy as np

from evalvae.latents.diagnose import Diagnosis
from evalvae.metrics.latentstats import CLAMP, suggested_factors
from evalvae.vae import VAEAdapter


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def noise_rows(name: str, d: Diagnosis) -> list[dict]:
    """Per noise level: mean clean and noisy PSNR over the images both decoded finitely, and their mean drop."""
    rows = []
    clean = np.asarray(d.psnr, dtype=np.float64)
    for k, values in d.noisy.items():
        noisy = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(clean) & ~np.isnan(noisy)
        with np.errstate(invalid="ignore"):
            drop = clean[ok] - noisy[ok]  # inf - inf (a lossless stand-in at k=0) is NaN, left out
        means = [_mean(list(v)) for v in (clean[ok], noisy[ok], drop)]
        row = {"vae": name, "noise_rel_std": k, "n": int(ok.sum()), "psnr": means[0], "psnr_noisy": means[1]}
        rows.append(row | {"psnr_drop": means[2], "nonfinite": int(len(noisy) - ok.sum())})
    return rows


def summary_row(name: str, vae: VAEAdapter, d: Diagnosis) -> dict:
    """``latents.csv``'s row: all-element statistics of the raw latents, the suggested against the configured
    factors, the clamp share, the spectra's high-frequency shares and the PSNR drop per noise level."""
    s = d.moments.stats()
    suggested = suggested_factors(s["mean"][-1], s["std"][-1])
    elements = d.moments.n * vae.latent_channels
    row = {
        "vae": name,
        "latent_space": vae.latent_space.family,
        "channels": vae.latent_channels,
        "downsample": vae.downsample,
        "n_images": d.n_images,
        "n_elements": elements,
        **{k: float(s[k][-1]) for k in ("mean", "std", "min", "max", "kurtosis")},
        "scaling_factor": vae.scaling_factor,
        "suggested_scaling_factor": suggested["scaling_factor"],
        "shift_factor": vae.shift_factor,
        "suggested_shift_factor": suggested["shift_factor"],
        # the latents a diffusion model sees under the configured factors: 0 and 1 when they fit
        "scaled_mean": (float(s["mean"][-1]) - vae.shift_factor) * vae.scaling_factor,
        "scaled_std": float(s["std"][-1]) * vae.scaling_factor,
        "clamp_threshold": CLAMP,
        "clamp_saturated": float(d.saturated[-1] / elements),
        "spectrum_high_latent": d.latent_spectrum.high_share(),
        "spectrum_high_image": d.image_spectrum.high_share(),
        "psnr": _mean(d.psnr),
    }
    for r in noise_rows(name, d):
        row[f"psnr_drop_{r['noise_rel_std']:g}"] = r["psnr_drop"]
    return row


def channel_rows(name: str, d: Diagnosis) -> list[dict]:
    s = d.moments.stats()
    h = d.histograms
    rows = []
    for c in range(d.moments.channels):
        row = {"vae": name, "channel": c, **{k: float(s[k][c]) for k in ("mean", "std", "min", "max", "kurtosis")}}
        row["suggested_scaling_factor"] = 1.0 / row["std"] if row["std"] > 0 else math.nan
        row["clamp_saturated"] = float(d.saturated[c] / d.moments.n)
        row["hist_below"], row["hist_above"] = int(h.below[c]), int(h.above[c])
        rows.append(row)
    return rows


def spectrum_rows(name: str, d: Diagnosis) -> list[dict]:
    rows = []
    for signal, spectrum in (("latent", d.latent_spectrum), ("image", d.image_spectrum)):
        for b, (f, p) in enumerate(zip(spectrum.frequencies, spectrum.profile())):
            rows.append({"vae": name, "signal": signal, "bin": b, "frequency": float(f), "power": float(p)})
    return rows


def histogram_rows(name: str, d: Diagnosis) -> list[dict]:
    h = d.histograms
    return [
        {"vae": name, "channel": c, "left": float(h.edges[c, b]), "right": float(h.edges[c, b + 1]), "count": int(n)}
        for c in range(len(h.counts))
        for b, n in enumerate(h.counts[c])
    ]
