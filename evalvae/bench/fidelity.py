"""What a reduced precision costs in fidelity: PSNR of its output against the fp32 output.

Both functions return the mean over the batch of per-image PSNR in float64; identical outputs
give ``inf`` and a non-finite output gives NaN.
"""

from __future__ import annotations

import math

import torch

from evalvae.metrics.base import to_pixels


def _mean_psnr(mse: torch.Tensor, peak: torch.Tensor | float) -> float:
    if not torch.isfinite(mse).all():
        return math.nan
    psnr = 10 * torch.log10(torch.as_tensor(peak, dtype=torch.float64) ** 2 / mse)
    return float(psnr.mean())


def image_psnr(reference: torch.Tensor, test: torch.Tensor) -> float:
    """PSNR of images nominally in [-1, 1], as [0, 255] pixels clamped but not rounded.

    Rounding to 8 bits is left out so that differences below one grey level still count.
    """
    if not torch.isfinite(test).all():
        return math.nan
    ref, out = to_pixels(reference, quantize=False), to_pixels(test, quantize=False)
    return _mean_psnr(((ref - out) ** 2).mean(dim=(1, 2, 3)), 255.0)


def latent_psnr(reference: torch.Tensor, test: torch.Tensor) -> float:
    """PSNR of latents, with each image's fp32 latent range (max - min) as the peak value.

    Latents have no fixed range, so the peak is taken from the reference, as PSNR of
    non-image signals usually is.
    """
    ref, out = reference.double(), test.double()
    if not torch.isfinite(out).all():
        return math.nan
    flat = ref.flatten(1)
    peak = flat.max(dim=1).values - flat.min(dim=1).values
    return _mean_psnr(((ref - out) ** 2).flatten(1).mean(dim=1), peak)
