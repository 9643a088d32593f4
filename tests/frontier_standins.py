"""Tiny, randomly initialised stand-ins of the 2025-2026 families (FLUX.2, Qwen-Image, Wan, HunyuanImage, RAE,
DC-AE f64/f128), each built from its diffusers class's own config and saved as a diffusers folder.

Their numbers mean nothing: the tests check shapes, the latent normalization against each pipeline's code, crops
and loading. Normalization statistics are set away from their identity defaults, so a test that skipped or
mis-ordered them would fail.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.family_standins import save_tiny_flux2


def _stats(n: int, seed: int) -> tuple[list[float], list[float]]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * 0.5).tolist(), (torch.rand(n, generator=g) + 0.5).tolist()


def save_tiny_flux2_bn(path: Path, seed: int = 0) -> Path:
    """:func:`tests.family_standins.save_tiny_flux2` (2 blocks of 8 channels, f2, 4 latent channels), with the 16
    batch-norm channels after the 2x2 patchify given random running means and variances (not 0 and 1)."""
    from diffusers import AutoencoderKLFlux2

    model = AutoencoderKLFlux2.from_pretrained(save_tiny_flux2(path, seed))
    mean, var = _stats(16, seed + 1)
    model.bn.running_mean.copy_(torch.tensor(mean))
    model.bn.running_var.copy_(torch.tensor(var))
    model.save_pretrained(path)
    return path


def _wan_like(cls_name: str, path: Path, seed: int, z_dim: int, **config) -> Path:
    """A Wan-derived video autoencoder with one 2x downsampling (two stages of 8 channels, the second 16 wide
    in the plain layout), one residual block per stage, and random per-channel ``latents_mean``/``latents_std``."""
    import diffusers

    torch.manual_seed(seed)
    mean, std = _stats(z_dim, seed + 1)
    cls = getattr(diffusers, cls_name)
    model = cls(
        base_dim=8,
        z_dim=z_dim,
        dim_mult=[1, 1] if config.get("is_residual", cls_name.endswith("21")) else [1, 2],
        num_res_blocks=1,
        temperal_downsample=[False],
        latents_mean=mean,
        latents_std=std,
        **config,
    )
    model.save_pretrained(path)
    return path


def save_tiny_qwen_image(path: Path, seed: int = 0) -> Path:
    """An ``AutoencoderKLQwenImage`` (Qwen-Image's layout): 4 channels at f2."""
    return _wan_like("AutoencoderKLQwenImage", path, seed, z_dim=4)


def save_tiny_wan21(path: Path, seed: int = 0) -> Path:
    """An ``AutoencoderKLWan`` in Wan 2.1's layout (no patchify): 4 channels at f2."""
    return _wan_like("AutoencoderKLWan", path, seed, z_dim=4, scale_factor_spatial=2)


def save_tiny_wan22(path: Path, seed: int = 0) -> Path:
    """An ``AutoencoderKLWan`` in Wan 2.2 TI2V-5B's layout (residual, a 2x2 pixel patchify, 12 input channels):
    6 channels at f4."""
    return _wan_like(
        "AutoencoderKLWan",
        path,
        seed,
        z_dim=6,
        decoder_base_dim=12,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=4,
    )


def save_tiny_qwen_image21(path: Path, seed: int = 0) -> Path:
    """An ``AutoencoderKLQwenImage21`` (Qwen-Image 2.1's layout: RGBA, residual): 8 channels at f2."""
    return _wan_like("AutoencoderKLQwenImage21", path, seed, z_dim=8, decoder_base_dim=12, scale_factor_spatial=2)


def save_tiny_dcae_f(path: Path, factor: int, seed: int = 0) -> Path:
    """An ``AutoencoderDC`` of ``log2(factor) + 1`` stages of 8 channels (f64: 7, f128: 8; attention at the
    bottom), 4 latent channels, scaling factor 0.3."""
    from diffusers import AutoencoderDC

    torch.manual_seed(seed)
    n = factor.bit_length()  # 2 ** (n - 1) == factor
    blocks = ("ResBlock",) * (n - 1) + ("EfficientViTBlock",)
    model = AutoencoderDC(
        latent_channels=4,
        attention_head_dim=4,
        encoder_block_types=blocks,
        decoder_block_types=blocks,
        encoder_block_out_channels=(8,) * n,
        decoder_block_out_channels=(8,) * n,
        encoder_layers_per_block=(1,) * n,
        decoder_layers_per_block=(1,) * n,
        encoder_qkv_multiscales=((),) * (n - 1) + ((5,),),
        decoder_qkv_multiscales=((),) * (n - 1) + ((5,),),
        scaling_factor=0.3,
    )
    model.save_pretrained(path)
    return path


def save_tiny_hunyuanimage(path: Path, seed: int = 0) -> Path:
    """An ``AutoencoderKLHunyuanImage``: 3 blocks of 32 channels (its group norms take 32 groups), f4, 4 latent
    channels, scaling factor 0.75."""
    from diffusers import AutoencoderKLHunyuanImage

    torch.manual_seed(seed)
    model = AutoencoderKLHunyuanImage(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 32, 32),
        layers_per_block=1,
        spatial_compression_ratio=4,
        sample_size=32,
        scaling_factor=0.75,
    )
    model.save_pretrained(path)
    return path


def save_tiny_rae(path: Path, seed: int = 0) -> Path:
    """An ``AutoencoderRAE`` with a one-layer DINOv2 (with registers) encoder of 64 channels reading 28 px
    (2x2 tokens of 14 px) and a one-layer ViT decoder writing 32 px (16 px patches); random latent statistics
    and scaling factor 0.8."""
    from diffusers import AutoencoderRAE

    torch.manual_seed(seed)
    mean, std = _stats(64, seed + 1)
    model = AutoencoderRAE(
        encoder_type="dinov2",
        encoder_hidden_size=64,
        encoder_patch_size=14,
        encoder_num_hidden_layers=1,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        patch_size=16,
        encoder_input_size=28,
        latents_mean=torch.tensor(mean).view(64, 1, 1).tolist(),
        latents_std=torch.tensor(std).view(64, 1, 1).tolist(),
        scaling_factor=0.8,
    )
    model.save_pretrained(path)
    return path
