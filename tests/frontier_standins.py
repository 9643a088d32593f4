"""Tiny, randomly initialised stand-ins of the 2025-2026 families (FLUX.2, Qwen-Image, Wan, HunyuanImage, RAE,
DC-AE f64/f128), each built from its diffusers class's own config and saved as a diffusers folder.

Their numbers mean nothing: the tests check shapes, the latent normalization against each pipeline's code, crops
and loading. Normalization statistics are set away from their identity defaults, so a test that skipped or
mis-ordered them would fail.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _stats(n: int, seed: int) -> tuple[list[float], list[float]]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * 0.5).tolist(), (torch.rand(n, generator=g) + 0.5).tolist()


def save_tiny_flux2_bn(path: Path, seed: int = 0) -> Path:
    """An ``AutoencoderKLFlux2``: 2 blocks of 8 channels (f2), 4 latent channels, so 16 batch-norm channels
    after the 2x2 patchify, whose running mean and variance are random (not 0 and 1)."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    model = AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    mean, var = _stats(16, seed + 1)
    model.bn.running_mean.copy_(torch.tensor(mean))
    model.bn.running_var.copy_(torch.tensor(var))
    model.save_pretrained(path)
    return path
