"""A stand-in VAE whose latents are known: N(mean, std²) noise, seeded per image, whatever the image."""

from __future__ import annotations

import torch
from torch import nn

from evalvae.vae.base import LatentSpace, LoadedWeights, VAEAdapter


class GaussianLatents(VAEAdapter):
    """Latents of image ``i`` are ``mean + std · N(0, 1)`` from a generator seeded with ``i`` (its posterior
    seed), ``channels`` × (H/8) × (W/8); the decoder returns mid-grey."""

    family = "stand-in"

    def __init__(
        self, name: str, device="cpu", dtype: str = "fp32", cache_dir=None, std=5.0, mean=0.0, channels=16, **kw
    ):
        module = nn.Module()
        module.w = nn.Parameter(torch.zeros(1))
        self.std, self.mean = float(std), float(mean)
        self._seeds: list[int] = []
        super().__init__(
            name, module, latent_space=LatentSpace("stand-in", channels, 8), dtype=dtype, device=device, **kw
        )
        self.weights = LoadedWeights("module", "in-memory")

    def encode(self, images, seeds=None):
        self._seeds = list(seeds) if seeds is not None else list(range(len(images)))
        return super().encode(images, seeds)

    def _moments(self, images):
        n, _, h, w = images.shape
        shape = (self.latent_channels, h // 8, w // 8)
        z = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in self._seeds]
        return torch.stack(z).to(images.device) * self.std + self.mean, None

    def _decode_raw(self, z):
        n, _, h, w = z.shape
        return torch.zeros(n, 3, h * 8, w * 8, device=z.device) + self.module.w

    def encoder_state_dict(self):
        return {"w": self.module.w}
