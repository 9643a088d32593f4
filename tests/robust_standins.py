"""Stand-in VAEs for the robustness tests: 8x downsampling, tiled mode, deterministic weights.

``Pointwise`` decodes each latent pixel on its own (nearest upsampling, then 1x1 convolutions), so
its tiled decode equals the untiled one; ``Spatial`` adds a 3x3 convolution at latent resolution
(receptive field one latent pixel), so tiles differ from the whole near their inner edges only.
``fail_dtype`` raises on loading in that dtype, ``nan_dtype`` decodes NaN in it.
"""

from __future__ import annotations

import torch
from torch import nn

from evalvae.vae.base import LatentSpace, LoadedWeights, VAEAdapter


class Pointwise(VAEAdapter):
    family = "stand-in"
    memory_modes = ("plain", "tiled", "sliced")
    spatial = False

    def __init__(self, name: str, device="cpu", dtype: str = "fp32", cache_dir=None, fail_dtype=None, nan_dtype=None):
        if dtype == fail_dtype:
            raise RuntimeError(f'"slow_conv2d_cpu" not implemented for {dtype!r} (stand-in)')
        g = torch.Generator().manual_seed(0)
        module = nn.Module()
        module.encoder = nn.Sequential(nn.AvgPool2d(8), nn.Conv2d(3, 4, 1))
        layers = [nn.Conv2d(4, 4, 3, padding=1)] if self.spatial else []
        module.decoder = nn.Sequential(*layers, nn.Upsample(scale_factor=8), nn.Conv2d(4, 3, 1), nn.Tanh())
        for p in module.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.5
        self.nan = nan_dtype == dtype
        super().__init__(
            name,
            module,
            latent_space=LatentSpace("stand-in", 4, 8),
            dtype=dtype,
            device=device,
            weights=LoadedWeights("module", "in-memory"),
        )

    def _moments(self, images):
        return self.module.encoder(images), None

    def _decode_raw(self, z):
        y = self.module.decoder(z)
        return y * torch.nan if self.nan else y

    def encoder_state_dict(self):
        return self.module.encoder.state_dict()


class Spatial(Pointwise):
    spatial = True
