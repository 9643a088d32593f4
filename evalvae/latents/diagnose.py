"""One VAE's pass over the dataset: its latents' statistics, spectra and the decoder's noise sensitivity.

Per image, the 8-bit original (centre-cropped to the VAE's downsampling factor, as ``run`` crops
it) is encoded with the VAE's posterior setting; the statistics are of the raw latents
(``encode``'s output undone by ``denormalize``: ``z / scaling_factor + shift_factor``), the clamp share of the
latents ``encode`` returns (what a diffusion model and a TAESD-layout decoder see). Decoder
sensitivity: each latent plus Gaussian noise of ``k × std`` of that image's latent for each ``k``,
decoded, and PSNR (8-bit, as ``run`` scores) against the original compared with the clean decode's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from evalvae.data.loader import Batch
from evalvae.data.transforms import crop_to_multiple
from evalvae.jobs.runtime import StageTimes
from evalvae.metrics.base import from_uint8, to_pixels
from evalvae.metrics.latentstats import Histograms, Moments, Spectrum, add_latent_noise, saturated_counts
from evalvae.metrics.pixel import psnr
from evalvae.vae import VAEAdapter

STAGES = ("data", "encode", "stats", "decode")


@dataclass
class Options:
    noise: tuple[float, ...] = (0.01, 0.05, 0.1)  # σ of the latent noise, × each image's latent std
    seed: int = 0  # image i: posterior seed seed + i, noise seed seed + i
    histogram_bins: int = 100
    spectrum_bins: int = 16


@dataclass
class Diagnosis:
    """What one VAE's pass accumulated."""

    moments: Moments
    histograms: Histograms
    latent_spectrum: Spectrum
    image_spectrum: Spectrum
    saturated: np.ndarray | None = None  # (C + 1,) counts of |z| > 3
    psnr: list[float] = field(default_factory=list)  # per image, clean decode
    noisy: dict[float, list[float]] = field(default_factory=dict)  # k -> per image PSNR with noise
    n_images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _psnr(original: torch.Tensor, y: torch.Tensor) -> list[float]:
    """8-bit PSNR per image; NaN where the decoder's output is not finite."""
    finite = torch.isfinite(y).flatten(1).all(1)
    values = psnr(original, to_pixels(y)).cpu().tolist()
    return [v if ok else math.nan for v, ok in zip(values, finite.cpu().tolist())]


def diagnose(vae: VAEAdapter, batches: Iterable[Batch], options: Options, times: StageTimes) -> Diagnosis:
    """Stream every batch through ``vae``; return the accumulated :class:`Diagnosis`."""
    d = Diagnosis(
        Moments(vae.latent_channels),
        Histograms(options.histogram_bins),
        Spectrum(options.spectrum_bins),
        Spectrum(options.spectrum_bins),
        noisy={k: [] for k in options.noise},
    )
    batches = iter(batches)
    while True:
        with times.stage("data"):
            batch = next(batches, None)
        if batch is None:
            return d
        d.skipped += batch.skipped
        for group in batch.groups_for(vae.downsample, f"vae '{vae.name}'", d.skipped):
            seeds = [options.seed + i for i in group.indices]
            with times.stage("encode"):
                images = crop_to_multiple(group.images.to(vae.device, non_blocking=True), vae.downsample)
                z = vae.encode(from_uint8(images), seeds=seeds).float()
            with times.stage("stats"):
                raw = vae.denormalize(z)
                d.moments.update(raw)
                d.histograms.update(raw)
                d.latent_spectrum.update(raw)
                d.image_spectrum.update(images.double() / 255)
                counts = saturated_counts(z)
                d.saturated = counts if d.saturated is None else d.saturated + counts
            with times.stage("decode"):
                original = images.double()
                d.psnr += _psnr(original, vae.decode(z))
                for k in options.noise:
                    d.noisy[k] += _psnr(original, vae.decode(add_latent_noise(z, k, seeds)))
            d.n_images += len(images)
