"""The Wan-derived video autoencoders, one frame at a time: Wan 2.1/2.2 (``AutoencoderKLWan``), Qwen-Image
(``AutoencoderKLQwenImage``) and Qwen-Image 2.1 (``AutoencoderKLQwenImage21``), with their pipelines' per-channel
latent normalization."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from evalvae.errors import ConfigError
from evalvae.vae.base import VAEAdapter
from evalvae.vae.diffusers import DiffusersFamily, strided_tiling


class ChannelStatsFamily(DiffusersFamily):
    """A video autoencoder of diffusers evaluated on images, with per-channel ``latents_mean``/``latents_std``.

    Each image is a clip of one frame (``(N, C, 1, H, W)``); the latents are that frame's, 4-D. Their diffusion
    space is the pipelines' (``QwenImagePipeline``, ``QwenImageImg2ImgPipeline``, ``WanPipeline``,
    ``WanVideoToVideoPipeline``, diffusers 0.42)::

        latents_mean = torch.tensor(self.vae.config.latents_mean).view(1, self.vae.config.z_dim, 1, 1, 1).to(device, dtype)
        latents_std = 1.0 / torch.tensor(self.vae.config.latents_std).view(1, self.vae.config.z_dim, 1, 1, 1).to(device, dtype)
        image_latents = (image_latents - latents_mean) * latents_std   # encoding
        latents = latents / latents_std + latents_mean                 # before vae.decode

    The statistics join the encoder's weights in :meth:`encoder_state_dict` (the latent cache's key). Images are
    centre-cropped to a multiple of the factor (``spatial_compression_ratio``). Memory modes are diffusers' own:
    tiles of ``tile_size`` pixels overlapping by a quarter of a tile (as DC-AE's), and slicing.
    """

    video = True
    states_crop = True
    decode_seams = VAEAdapter.decode_seams  # the seam bands of tiles of tile_size overlapping by a quarter
    normalization = (
        "per-channel: (z - latents_mean) * (1 / latents_std); decoding: latents / (1 / latents_std) + latents_mean"
    )

    def __init__(self, name: str, source: str, latent_space: str, **kwargs):
        for key in ("scaling_factor", "shift_factor"):
            if kwargs.get(key) is not None:
                hint = "these latents are normalized by the config's per-channel latents_mean and latents_std"
                raise ConfigError(f"vae.{name}.{key}", kwargs[key], hint=hint)
        super().__init__(name, source, latent_space, **kwargs)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``latents_mean`` and ``1 / latents_std`` as the pipelines build them, for 4-D latents like ``like``."""
        cfg = self.module.config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1).to(like.device, like.dtype)
        inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1).to(like.device, like.dtype)
        return mean, inv_std

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._stats(z)
        return (z - mean) * inv_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._stats(latents)
        return latents / inv_std + mean

    def encoder_state_dict(self) -> Mapping[str, torch.Tensor]:
        cfg = self.module.config
        stats = {"latents_mean": torch.tensor(cfg.latents_mean), "latents_std": torch.tensor(cfg.latents_std)}
        return {**super().encoder_state_dict(), **stats}

    def _tiles_natively(self) -> bool:
        return True

    def _tile(self, tile_size: int) -> None:
        strided_tiling(self.module, tile_size, self.downsample)

    def describe(self) -> dict:
        return {**super().describe(), "latent_normalization": self.normalization}


class WanAdapter(ChannelStatsFamily):
    """Wan 2.1 (16 channels, f8) and Wan 2.2 TI2V-5B (48 channels, f16: a 2x2 pixel patchify inside the VAE)."""

    cls = "AutoencoderKLWan"
    family = "wan"


class QwenImageAdapter(ChannelStatsFamily):
    """Qwen-Image's VAE (a Wan 2.1-derived image/video autoencoder; 16 channels, f8)."""

    cls = "AutoencoderKLQwenImage"
    family = "qwen-image"


class QwenImage21Adapter(ChannelStatsFamily):
    """Qwen-Image 2.1's VAE: RGBA in and out, 64 channels, f16.

    ``QwenImage21Pipeline`` converts every image it encodes to RGBA, so an RGB image enters with an opaque alpha
    channel (1 in [-1, 1]); the decoded alpha is dropped. Its normalization divides by the std
    (``QwenImage21Pipeline._encode_vae_image`` and ``__call__``)::

        image_latents = (image_latents - latents_mean) / latents_std
        latents = latents * latents_std + latents_mean
    """

    cls = "AutoencoderKLQwenImage21"
    family = "qwen-image-2.1"
    normalization = "per-channel: (z - latents_mean) / latents_std; decoding: latents * latents_std + latents_mean"

    def _moments(self, images: torch.Tensor):
        alpha = images.new_ones((images.shape[0], 1, *images.shape[2:]))
        return super()._moments(torch.cat([images, alpha], 1))

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return super()._decode_raw(z)[:, :3]

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.module.config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1).to(like.device, like.dtype)
        std = torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1).to(like.device, like.dtype)
        return mean, std

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(latents)
        return latents * std + mean

    def describe(self) -> dict:
        return {**super().describe(), "alpha": "an opaque alpha channel in; the decoded alpha dropped"}
