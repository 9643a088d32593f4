"""The AutoencoderKL family (SD 1.x/2.x, SDXL, SD3, FLUX VAEs) through diffusers."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from evalvae.device import parse_dtype
from evalvae.vae.base import LatentSpace, VAEAdapter
from evalvae.vae.seams import diffusers_kl_seams
from evalvae.vae.sources import diffusers_model


class KLAdapter(VAEAdapter):
    """A diffusers ``AutoencoderKL``; images in [-1, 1]; scaling and shift factors from its config.

    ``scaling_factor``/``shift_factor`` given in the spec override the model config's values.
    Memory modes are diffusers' own ``enable_tiling``/``enable_slicing`` (what pipelines use),
    with tiles of ``config.sample_size`` pixels by default.

    ``force_upcast`` is the model config's ``force_upcast`` where the config file sets it (the
    SDXL VAE: true; sdxl-vae-fp16-fix: false); a config that predates the key (SD 1.x/2.x VAEs)
    counts as false, as the SD 1.x pipelines never upcast. A spec's ``force_upcast`` overrides it.
    """

    family = "autoencoder-kl"
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
        shift_factor: float | None = None,
        cache_dir: str | None = None,
        force_upcast: bool | None = None,
        **kwargs,
    ):
        model, weights = diffusers_model(
            "AutoencoderKL",
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
            latent_space=LatentSpace(latent_space, cfg.latent_channels, 2 ** (len(cfg.block_out_channels) - 1)),
            scaling_factor=cfg.scaling_factor if scaling_factor is None else scaling_factor,
            shift_factor=(getattr(cfg, "shift_factor", None) or 0.0) if shift_factor is None else shift_factor,
            weights=weights,
            **kwargs,
        )
        stated = "force_upcast" in cfg and "force_upcast" not in (cfg.get("_use_default_values") or [])
        self.force_upcast = bool(cfg.force_upcast if stated else False) if force_upcast is None else bool(force_upcast)

    @property
    def default_tile_size(self) -> int:
        size = self.module.config.sample_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def _set_memory_mode(self, mode: str, tile_size: int) -> None:
        m = self.module
        m.disable_tiling()
        m.disable_slicing()
        if mode == "tiled":
            m.tile_sample_min_size, m.tile_latent_min_size = tile_size, tile_size // self.downsample
            m.enable_tiling()
        elif mode == "sliced":
            m.enable_slicing()

    def decode_seams(self, latent_h: int, latent_w: int):
        m = self.module
        if latent_h <= m.tile_latent_min_size and latent_w <= m.tile_latent_min_size:
            return [], []
        t, px, f = m.tile_latent_min_size, m.tile_sample_min_size, m.tile_overlap_factor
        return diffusers_kl_seams(latent_h, t, px, f), diffusers_kl_seams(latent_w, t, px, f)

    def _moments(self, images: torch.Tensor):
        dist = self.module.encode(images).latent_dist
        return dist.mean, dist.std

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.decode(z).sample

    def encoder_state_dict(self) -> Mapping[str, torch.Tensor]:
        return {k: v for k, v in self.module.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
