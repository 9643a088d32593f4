"""The TAESD layout as plain ``nn.Sequential`` stacks, for weights shipped as ``.pth`` pairs.

This covers the tiny autoencoders distributed as ``<name>_encoder.pth`` / ``<name>_decoder.pth``
(TAESD, TAESDXL, TAESD3, TAEF1 and TAEF2). TAEF2, the FLUX.2 tiny autoencoder, has 32 latent
channels and adds a "pool" branch to the three lowest-resolution blocks of each half; diffusers'
``AutoencoderTiny`` has no such branch and cannot load it. The layout, latent channels and the
blocks with a pool branch are read off the state dict, so one builder serves all of them.
Images are in [0, 1] and latents are raw (no scaling factor).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

WIDTH = 64
POOL_WIDTH = 256


def conv(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of latents to (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """``relu(conv(x) + skip(x))``, optionally preceded by ``x = x + pool(x)``."""

    def __init__(self, n_in: int = WIDTH, n_out: int = WIDTH, pool: bool = False):
        super().__init__()
        self.pool = None
        if pool:
            squeeze, expand = nn.Conv2d(n_in, POOL_WIDTH, 1, bias=False), nn.Conv2d(POOL_WIDTH, n_in, 1, bias=False)
            self.pool = nn.Sequential(squeeze, nn.GroupNorm(4, POOL_WIDTH), nn.ReLU(), expand)
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def encoder(latent_channels: int, pool: bool = False) -> nn.Sequential:
    """Three stride-2 stages (8x down); ``pool`` adds the pool branch to the last three blocks."""

    def down() -> nn.Conv2d:
        return conv(WIDTH, WIDTH, stride=2, bias=False)

    return nn.Sequential(
        *(conv(3, WIDTH), Block(), down(), *_blocks(), down(), *_blocks(), down(), *_blocks(pool)),
        conv(WIDTH, latent_channels),
    )


def _blocks(pool: bool = False) -> list[Block]:
    return [Block(pool=pool) for _ in range(3)]


def decoder(latent_channels: int, pool: bool = False) -> nn.Sequential:
    """Mirror of :func:`encoder`; ``pool`` adds the pool branch to the first three blocks."""

    def up() -> list[nn.Module]:
        return [nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False)]

    return nn.Sequential(
        *(Clamp(), conv(latent_channels, WIDTH), nn.ReLU(), *_blocks(pool), *up(), *_blocks(), *up(), *_blocks()),
        *(*up(), Block(), conv(WIDTH, 3)),
    )


def encoder_stages(enc: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential]:
    """Split an encoder after its last stride-2 convolution: (image-resolution stages, latent-resolution stages)."""
    last = max(i for i, m in enumerate(enc) if isinstance(m, nn.Conv2d) and m.stride != (1, 1))
    return enc[: last + 1], enc[last + 1 :]


def decoder_stages(dec: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential]:
    """Split a decoder before its first upsampling: (latent-resolution stages, image-resolution stages)."""
    first = next(i for i, m in enumerate(dec) if isinstance(m, nn.Upsample))
    return dec[:first], dec[first:]


class TinyAutoencoder(nn.Module):
    """Encoder and decoder of the TAESD layout; images in [0, 1], raw latents."""

    def __init__(self, latent_channels: int, pool: bool = False):
        super().__init__()
        self.encoder = encoder(latent_channels, pool)
        self.decoder = decoder(latent_channels, pool)

    @classmethod
    def from_state_dicts(cls, enc: Mapping[str, torch.Tensor], dec: Mapping[str, torch.Tensor]) -> TinyAutoencoder:
        """Build the matching layout and load both halves strictly (every key must match)."""
        last = max(int(k.split(".")[0]) for k in enc)
        latent_channels = enc[f"{last}.weight"].shape[0]
        pool = any(re.match(r"^\d+\.pool\.", k) for k in (*enc, *dec))
        model = cls(latent_channels, pool)
        model.encoder.load_state_dict({k: v.float() for k, v in enc.items()}, strict=True)
        model.decoder.load_state_dict({k: v.float() for k, v in dec.items()}, strict=True)
        return model
