"""FLUX.2's autoencoder (diffusers' ``AutoencoderKLFlux2``), in the latent space Flux2Pipeline diffuses in."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from evalvae.errors import ConfigError
from evalvae.vae.diffusers import DiffusersFamily

PATCH = 2  # Flux2Pipeline._patchify_latents: 2x2 latent pixels per channel group, whatever the config says


def patchify(z: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` to ``(N, 4C, H/2, W/2)``: Flux2Pipeline._patchify_latents (diffusers 0.42)."""
    n, c, h, w = z.shape
    z = z.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return z.reshape(n, c * 4, h // 2, w // 2)


def unpatchify(latents: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`patchify`: Flux2Pipeline._unpatchify_latents."""
    n, c, h, w = latents.shape
    z = latents.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return z.reshape(n, c // 4, h * 2, w * 2)


class Flux2Adapter(DiffusersFamily):
    """FLUX.2's VAE: 32 raw channels at f8; the diffusion space is 128 channels at f16.

    As ``Flux2Pipeline`` (``_encode_vae_image`` and the end of ``__call__``) does: the posterior's mode is
    patchified 2x2 (channel ``4c + 2i + j`` holds channel ``c`` at offset ``(i, j)``) and normalized with the
    VAE's batch-norm running statistics, ``(z - running_mean) / sqrt(running_var + batch_norm_eps)``; decoding
    inverts both. Images are centre-cropped to a multiple of 16 (the raw factor times the patch), and the
    statistics join the encoder's weights in :meth:`encoder_state_dict` (the latent cache's key). Memory modes are
    diffusers' own, with tiles of ``tile_size`` pixels (a multiple of 16).
    """

    cls = "AutoencoderKLFlux2"
    family = "flux2"
    states_crop = True

    def __init__(self, name: str, source: str, latent_space: str, **kwargs):
        for key in ("scaling_factor", "shift_factor"):
            if kwargs.get(key) is not None:
                hint = "FLUX.2 latents are normalized by the VAE's batch-norm statistics, not by factors"
                raise ConfigError(f"vae.{name}.{key}", kwargs[key], hint=hint)
        super().__init__(name, source, latent_space, **kwargs)

    def _model_facts(self, name, model):
        channels, downsample, _, _, upcast = super()._model_facts(name, model)
        return channels * PATCH * PATCH, downsample * PATCH, 1.0, 0.0, upcast

    def _bn_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Flux2Pipeline: latents_bn_mean = self.vae.bn.running_mean.view(1, -1, 1, 1).to(device, dtype)
        #                latents_bn_std = torch.sqrt(self.vae.bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(device, dtype)
        bn, eps = self.module.bn, self.module.config.batch_norm_eps
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + eps).to(like.device, like.dtype)
        return mean, std

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        latents = patchify(z)
        mean, std = self._bn_stats(latents)
        return (latents - mean) / std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._bn_stats(latents)
        return unpatchify(latents * std + mean)

    def encoder_state_dict(self) -> Mapping[str, torch.Tensor]:
        return {**super().encoder_state_dict(), **{f"bn.{k}": v for k, v in self.module.bn.state_dict().items()}}

    # -- diffusers' tiling works on raw latents (f8), evalvae's latents are patchified (f16) ------------------
    def _tile(self, tile_size: int) -> None:
        m = self.module
        m.tile_sample_min_size, m.tile_latent_min_size = tile_size, tile_size // (self.downsample // PATCH)
        m.enable_tiling()

    def decode_seams(self, latent_h: int, latent_w: int):
        return super().decode_seams(latent_h * PATCH, latent_w * PATCH)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "latent_normalization": "Flux2Pipeline's: 2x2 patchify, then (z - bn.running_mean) / "
            "sqrt(bn.running_var + batch_norm_eps); decoding inverts both",
        }
