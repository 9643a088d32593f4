"""Bits per pixel for every row, and ``metrics.latent_bits``: the reconstruction loop's decode step.

``bpp`` is the bits :meth:`VAEAdapter.rate_bits` counts for an image's latents divided by the
pixels of the image scored (NaN where the adapter cannot tell). With ``latent_bits=N`` floating
latents of a model (``VAEAdapter.quantizable_latents``) are quantized to N bits
(:func:`evalvae.vae.bits.quantize_latents`) before they are decoded, ``bpp`` counts N bits per element plus the side information, and the unquantized
latents are decoded too: ``latent_bits_psnr_drop`` is the PSNR of that decode minus the PSNR of
the quantized one, both against the original (dB; the quality quantization cost). Codecs'
latents (pixels and files) are already what their decoder reads and are left alone (drop NaN:
not applicable).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from evalvae.errors import ConfigError
from evalvae.metrics import to_pixels
from evalvae.metrics.info import BPP, BPP_TARGET, CODEC_QUALITY, LATENT_BITS_PSNR_DROP, METRICS, MetricInfo
from evalvae.metrics.pixel import psnr
from evalvae.vae import VAEAdapter
from evalvae.vae.bits import MAX_LATENT_BITS, SIDE_BITS, quantize_latents, quantized_bits

log = logging.getLogger(__name__)


def check_latent_bits(value) -> int | None:
    """``metrics.latent_bits``: null, or an integer from 1 to 16."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LATENT_BITS:
        raise ConfigError(
            "metrics.latent_bits",
            value,
            hint=f"an integer from 1 to {MAX_LATENT_BITS} (bits per latent element), or null",
        )
    return value


@dataclass
class Rate:
    """How the loop decodes and what it records of the rate; ``quantize`` is ``metrics.quantize``."""

    latent_bits: int | None = None
    quantize: bool = True
    # the per-image columns it adds: bpp (and, with latent_bits, the PSNR drop), then the codecs' facts
    infos: ClassVar[tuple[MetricInfo, ...]] = (BPP, LATENT_BITS_PSNR_DROP, BPP_TARGET, CODEC_QUALITY)

    def __post_init__(self):
        self.latent_bits = check_latent_bits(self.latent_bits)
        self.infos = METRICS["rate"].infos_for({"latent_bits": self.latent_bits})

    @classmethod
    def from_config(cls, metrics) -> Rate:
        return cls(metrics.get("latent_bits"), bool(metrics.get("quantize", True)))

    def protocol(self) -> dict:
        """``metrics.json``'s entries of ``bpp`` (and the PSNR drop), without their info."""
        bpp = {
            "implementation": "evalvae: bits of what the decoder reads / (height x width) of the scored image",
            "vae": "latent elements x bits per element (the latent dtype's width, or latent_bits)",
            "codec": "8 x the encoded file's bytes, headers included",
            "latent_bits": self.latent_bits,
        }
        if not self.latent_bits:
            return {BPP.name: bpp}
        scheme = (
            f"per image and channel, uniform on 2^{self.latent_bits} levels between the channel's min and max; "
            f"side information {SIDE_BITS} bits per channel (min and max as float32), counted in bpp"
        )
        bpp["quantization"] = scheme
        drop = {
            "implementation": "PSNR(unquantized decode) - PSNR(quantized decode), each vs the original",
            "quantization": scheme,
        }
        return {BPP.name: bpp, LATENT_BITS_PSNR_DROP.name: drop}

    def decode(
        self, vae: VAEAdapter, z: torch.Tensor, images: torch.Tensor, ids: list[str], seeds: list[int] | None = None
    ) -> tuple[torch.Tensor, dict]:
        """``vae``'s reconstruction of latents ``z`` of the uint8 ``images``, and the rate columns per image;
        ``seeds`` per image go to a stochastic decoder (:meth:`~evalvae.vae.base.VAEAdapter.decode`)."""
        pixels = images.shape[-2] * images.shape[-1]
        quantized = bool(self.latent_bits) and vae.quantizable_latents and z.is_floating_point()
        if quantized:
            y = vae.decode(quantize_latents(z, self.latent_bits), seeds=seeds)
            bits = quantized_bits(z, self.latent_bits)
        else:
            y = vae.decode(z, seeds=seeds)
            bits = vae.rate_bits(z).to(torch.float64).cpu()
        columns = {BPP.name: (bits / pixels).tolist(), **vae.rate_facts(z)}
        for name in (BPP_TARGET.name, CODEC_QUALITY.name):
            columns.setdefault(name, [math.nan] * len(z))
        if self.latent_bits:
            # not applicable where nothing was quantized (a codec's pixels or file, integer latents)
            columns[LATENT_BITS_PSNR_DROP.name] = (
                self._drop(vae, z, y, images, seeds) if quantized else [math.nan] * len(z)
            )
        for image, why, bpp, target in zip(ids, vae.rate_warnings(z), columns[BPP.name], columns[BPP_TARGET.name]):
            if why:
                log.warning(
                    "VAE '%s': image %s: target %g bpp not reached (%.4g bpp): %s", vae.name, image, target, bpp, why
                )
        return y, columns

    def _drop(self, vae: VAEAdapter, z: torch.Tensor, y: torch.Tensor, images: torch.Tensor, seeds) -> list[float]:
        original = images.double()
        full = vae.decode(z, seeds=seeds)
        ok = torch.isfinite(y).flatten(1).all(1) & torch.isfinite(full).flatten(1).all(1)
        drop = psnr(original, to_pixels(full, self.quantize)) - psnr(original, to_pixels(y, self.quantize))
        return torch.where(ok.to(drop.device), drop, torch.full_like(drop, math.nan)).tolist()
