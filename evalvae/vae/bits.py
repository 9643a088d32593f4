"""Bits per pixel of what a decoder reads, and ``metrics.latent_bits``: latents quantized to N bits.

No I/O. A VAE's rate is its latent elements times the bits each is stored in (the latent dtype's
width: fp32 32, fp16/bf16 16, uint8 8); a codec's is the length of its bitstream
(:mod:`evalvae.vae.codecs`). Either is divided by the pixels of the image scored.

Quantization (:func:`quantize_latents`): per image and channel, uniform on ``2**bits`` levels
spanning that channel's min and max. The decoder needs each channel's min and max too, as two
float32 values: that side information is counted, :data:`SIDE_BITS` per channel per image.
"""

from __future__ import annotations

import torch

SIDE_BITS = 64  # per channel and image: min and max as float32
MAX_LATENT_BITS = 16


def bits_per_element(dtype: torch.dtype) -> int:
    """The storage width of one element of ``dtype`` in bits (fp32 32, fp16 and bf16 16, uint8 8)."""
    return (torch.finfo(dtype) if dtype.is_floating_point else torch.iinfo(dtype)).bits


def stored_bits(latents: torch.Tensor) -> torch.Tensor:
    """``(N,)`` float64: bits per image of ``latents`` as stored, elements x :func:`bits_per_element`."""
    per_image = latents[0].numel() * bits_per_element(latents.dtype) if len(latents) else 0
    return torch.full((len(latents),), float(per_image), dtype=torch.float64)


def quantized_bits(latents: torch.Tensor, bits: int) -> torch.Tensor:
    """``(N,)`` float64: bits per image of ``latents`` quantized to ``bits``, side information included."""
    per_image = latents[0].numel() * bits + latents.shape[1] * SIDE_BITS if len(latents) else 0
    return torch.full((len(latents),), float(per_image), dtype=torch.float64)


def quantize_latents(latents: torch.Tensor, bits: int) -> torch.Tensor:
    """``latents`` (N, C, ...) rounded to ``2**bits`` uniform levels between each image's channel min and max.

    ``q = round((z - lo) / (hi - lo) * (2**bits - 1))``, back as ``lo + q * (hi - lo) / (2**bits - 1)``,
    computed in float32 and returned in the latents' dtype; a constant channel stays as it is.
    """
    z = latents.float()
    flat = z.flatten(2)
    lo = flat.amin(2).reshape(*z.shape[:2], *([1] * (z.dim() - 2)))
    hi = flat.amax(2).reshape(lo.shape)
    levels = float(2**bits - 1)
    span = hi - lo
    step = torch.where(span > 0, span / levels, torch.ones_like(span))
    q = torch.round((z - lo) / step).clamp_(0, levels)
    return (lo + q * step).to(latents.dtype)
