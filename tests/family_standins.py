"""Tiny, randomly initialised stand-ins of the consistency decoder and DC-AE, saved as diffusers folders."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_consistency(path: Path, kl_dir: Path | None = None, seed: int = 0) -> Path:
    """A ``ConsistencyDecoderVAE`` with the tiny KL stand-in's encoder layout (2 blocks of 8 channels, f2).

    With ``kl_dir`` (a folder written by ``tests.helpers.save_tiny_kl`` with its defaults) its encoder
    and quant conv are that model's, as the released consistency decoder carries SD's encoder.
    """
    from diffusers import AutoencoderKL, ConsistencyDecoderVAE

    torch.manual_seed(seed)
    model = ConsistencyDecoderVAE(
        latent_channels=4,
        scaling_factor=0.5,
        encoder_block_out_channels=(8, 8),
        encoder_down_block_types=("DownEncoderBlock2D",) * 2,
        encoder_layers_per_block=1,
        encoder_norm_num_groups=4,
        decoder_block_out_channels=(8, 16),
        decoder_down_block_types=("ResnetDownsampleBlock2D",) * 2,
        decoder_up_block_types=("ResnetUpsampleBlock2D",) * 2,
        decoder_layers_per_block=1,
        decoder_norm_num_groups=4,
    )
    if kl_dir is not None:
        kl = AutoencoderKL.from_pretrained(kl_dir)
        model.encoder.load_state_dict(kl.encoder.state_dict())
        model.quant_conv.load_state_dict(kl.quant_conv.state_dict())
    model.save_pretrained(path)
    return path


def save_tiny_dcae(path: Path, seed: int = 0) -> Path:
    """An ``AutoencoderDC`` with 6 stages (f32, as dc-ae-f32c32), 8 channels, an attention block at the bottom."""
    from diffusers import AutoencoderDC

    torch.manual_seed(seed)
    blocks = ("ResBlock",) * 5 + ("EfficientViTBlock",)
    model = AutoencoderDC(
        latent_channels=4,
        attention_head_dim=4,
        encoder_block_types=blocks,
        decoder_block_types=blocks,
        encoder_block_out_channels=(8,) * 6,
        decoder_block_out_channels=(8,) * 6,
        encoder_layers_per_block=(1,) * 6,
        decoder_layers_per_block=(1,) * 6,
        encoder_qkv_multiscales=((),) * 5 + ((5,),),
        decoder_qkv_multiscales=((),) * 5 + ((5,),),
        scaling_factor=0.4,
    )
    model.save_pretrained(path)
    return path


def save_tiny_flux2(path: Path, seed: int = 0) -> Path:
    """An ``AutoencoderKLFlux2`` (FLUX.2's VAE class) with 2 blocks of 8 channels (f2), 4 latent channels."""
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
    model.save_pretrained(path)
    return path


def save_tiny_asymmetric(path: Path, seed: int = 0) -> Path:
    """An ``AsymmetricAutoencoderKL``: a diffusers class with neither diffusers' tiling nor its slicing (f2)."""
    from diffusers import AsymmetricAutoencoderKL

    torch.manual_seed(seed)
    model = AsymmetricAutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        down_block_out_channels=(8, 8),
        up_block_out_channels=(8, 8),
        latent_channels=4,
        norm_num_groups=4,
    )
    model.save_pretrained(path)
    return path
