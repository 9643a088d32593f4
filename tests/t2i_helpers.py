"""Tiny, fully offline text-to-image parts: a CLIP tokenizer from a written vocabulary, a CLIP text
model, a UNet, 8x VAEs and a StableDiffusionPipeline folder; plus a tiny CLIP model for CLIP score,
and a KL adapter that fails on a chosen decode call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evalvae.vae.kl import KLAdapter
from tests.run_standins import FAILURES

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789,.-'\"!?&:;()"
HIDDEN = 32


class FailingKL(KLAdapter):
    """A diffusers AutoencoderKL whose decode calls from the ``fail_at``-th on (0-based) raise ``failure``
    (``oom``: CUDA's OutOfMemoryError, ``error``: a RuntimeError)."""

    def __init__(self, *args, fail_at: int = 0, failure: str = "error", **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_at, self.failure, self.decode_calls = fail_at, failure, 0

    def _decode_raw(self, z):
        self.decode_calls += 1
        if self.decode_calls > self.fail_at:
            raise FAILURES[self.failure]()
        return super()._decode_raw(z)


def tiny_tokenizer(folder: Path):
    """A CLIPTokenizer over single characters (no merges), from a vocab.json and merges.txt written here."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in CHARS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def tiny_text_config(vocab_size: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=HIDDEN,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def tiny_vae(latent_channels: int = 4, scaling: float = 0.5, shift: float | None = None, seed: int = 0):
    """An AutoencoderKL with four blocks (8x downsampling), so it matches the UNet's latent grid."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8,) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=scaling,
        shift_factor=shift,
    )


def save_tiny_vae(path: Path, **kwargs) -> Path:
    tiny_vae(**kwargs).save_pretrained(path)
    return path


def save_tiny_sd_pipeline(path: Path, seed: int = 0) -> Path:
    """A StableDiffusionPipeline folder (model_index.json, safetensors) with tiny random components."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_tokenizer(path.parent / f"{path.name}-vocab")
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(tiny_text_config(len(tokenizer)))
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=HIDDEN,
        norm_num_groups=8,
        attention_head_dim=4,
    )
    # DDIM calls the UNet exactly once per step (PNDM adds a warm-up step), which the tests count.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(seed=seed),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def save_tiny_clip(path: Path, seed: int = 0) -> Path:
    """A CLIPModel with a 32 px vision tower and its processor, saved as a local folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

    tokenizer = tiny_tokenizer(path.parent / f"{path.name}-vocab")
    vision = CLIPVisionConfig(
        hidden_size=HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=HIDDEN,
    )
    config = CLIPConfig(
        text_config=tiny_text_config(len(tokenizer)).to_dict(), vision_config=vision.to_dict(), projection_dim=HIDDEN
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("t2i") / "pipeline")


@pytest.fixture(scope="session")
def tiny_vae_dirs(tmp_path_factory) -> dict[str, Path]:
    """One more 4-channel 8x VAE (other weights), and a 16-channel one for the mismatch test."""
    root = tmp_path_factory.mktemp("t2i-vaes")
    return {
        "a": save_tiny_vae(root / "a", seed=1),
        "c16": save_tiny_vae(root / "c16", latent_channels=16, seed=3),
    }


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")
