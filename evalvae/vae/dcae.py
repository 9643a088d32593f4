"""Deep Compression Autoencoders (DC-AE, MIT Han lab; SANA's VAE) through diffusers' ``AutoencoderDC``."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from evalvae.device import parse_dtype
from evalvae.vae.base import LatentSpace, VAEAdapter
from evalvae.vae.sources import diffusers_model


class DCAEAdapter(VAEAdapter):
    """A diffusers ``AutoencoderDC``; images in [-1, 1]; deterministic latents; scaling factor from its config.

    The downsampling factor is the model's ``spatial_compression_ratio`` (32 for the f32 models),
    so images are centre-cropped to a multiple of it, as for every VAE. Memory modes are
    diffusers' own ``enable_tiling``/``enable_slicing``; tiles of ``tile_size`` pixels overlap by a
    quarter of a tile, rounded down to a multiple of the factor (at least one factor).
    """

    family = "dc-ae"
    memory_modes = ("plain", "tiled", "sliced")

    def __init__(
        self,
        name: str,
        source: str,
        latent_space: str,
        subfolder: str | None = None,
        revision: str | None = None,
        config: str | None = None,
        scaling_factor: float | None = None,
        cache_dir: str | None = None,
        **kwargs,
    ):
        model, weights = diffusers_model(
            "AutoencoderDC",
            name,
            source,
            subfolder=subfolder,
            revision=revision,
            config=config,
            cache=cache_dir,
            torch_dtype=parse_dtype(kwargs.get("dtype", "fp32"), f"vae.{name}.dtype"),
        )
        cfg = model.config
        super().__init__(
            name,
            model,
            latent_space=LatentSpace(latent_space, cfg.latent_channels, int(model.spatial_compression_ratio)),
            scaling_factor=cfg.scaling_factor if scaling_factor is None else scaling_factor,
            weights=weights,
            **kwargs,
        )

    def _set_memory_mode(self, mode: str, tile_size: int) -> None:
        m = self.module
        m.disable_tiling()
        m.disable_slicing()
        if mode == "tiled":
            f = self.downsample
            stride = tile_size - max(f, tile_size // 4 // f * f)
            m.enable_tiling(tile_size, tile_size, stride, stride)
        elif mode == "sliced":
            m.enable_slicing()

    def _moments(self, images: torch.Tensor):
        return self.module.encode(images).latent, None

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.decode(z).sample

    def encoder_state_dict(self) -> Mapping[str, torch.Tensor]:
        return {k: v for k, v in self.module.state_dict().items() if k.startswith("encoder.")}

    def describe(self) -> dict:
        f = self.downsample
        return {**super().describe(), "crop": f"centre-cropped to a multiple of {f} px (the downsampling factor)"}
