"""Autoencoders that diffusers loads: the adapter every such family shares.

A family is a small subclass that fixes ``cls`` (:mod:`evalvae.vae.kl`, :mod:`~evalvae.vae.dcae`,
:mod:`~evalvae.vae.consistency`, :mod:`~evalvae.vae.tiny`), or only a YAML that names the class::

    myvae:
      _target_: evalvae.vae.diffusers.DiffusersAdapter
      cls: AutoencoderKLFlux2   # any autoencoder class of diffusers
      source: org/model
      subfolder: vae
      latent_space: flux2
      dtype: ${dtype}
      upcast: auto
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from evalvae.device import parse_dtype
from evalvae.errors import ConfigError
from evalvae.hub import packaged
from evalvae.vae.base import LatentSpace, LoadedWeights, VAEAdapter
from evalvae.vae.seams import diffusers_kl_seams
from evalvae.vae.sources import diffusers_model, source_kind

BLOCKS = ("block_out_channels", "encoder_block_out_channels", "down_block_out_channels")  # config keys


def strided_tiling(module: nn.Module, tile_size: int, factor: int) -> None:
    """diffusers' ``enable_tiling(height, width, stride_height, stride_width)`` (AutoencoderDC, the Wan-derived
    video autoencoders): tiles of ``tile_size`` pixels overlapping by a quarter of a tile, rounded down to a
    multiple of the downsampling ``factor`` (at least one factor)."""
    stride = tile_size - max(factor, tile_size // 4 // factor * factor)
    module.enable_tiling(tile_size, tile_size, stride, stride)


class DiffusersFamily(VAEAdapter):
    """A diffusers autoencoder of class ``cls`` (a class name in ``diffusers``); images in [-1, 1].

    **Loading.** ``source`` is a hub id, a local diffusers folder (``subfolder``, ``revision``), a
    single checkpoint file or its URL (diffusers' ``from_single_file``; offline, ``config`` names a
    local diffusers config folder), read in ``dtype``. A hub id missing from the local cache
    offline fails in one line naming it, before diffusers is imported
    (:func:`evalvae.vae.sources.diffusers_model`).

    **Latents.** The encoder's posterior mean and std (``latent_dist``) or its deterministic latent,
    in the diffusion space given by :meth:`~evalvae.vae.base.VAEAdapter.normalize`:
    ``scaling_factor`` and ``shift_factor`` of the model config (1 and 0 where it has none), which
    the spec's override. Families with per-channel statistics override ``normalize`` and
    ``denormalize``.

    **Precision.** ``force_upcast`` is the model config's where the config file states it (the
    SDXL VAE: true), else false (SD 1.x VAEs, whose configs predate the key); a spec's
    ``force_upcast`` overrides it. ``upcast=auto`` follows it (:mod:`evalvae.jobs.policy`).

    **Memory modes.** diffusers' own ``enable_tiling`` (the AutoencoderKL layout: tiles of
    ``tile_sample_min_size`` pixels, by default ``config.sample_size``) and ``enable_slicing``,
    as pipelines use them, where the class implements them; a class without tiling has no
    ``tiled`` mode, one without slicing slices through :class:`~evalvae.vae.base.VAEAdapter`'s.
    A family with another tiling layout overrides :meth:`_tile`; ``native_modes = False`` runs
    evalvae's generic tiling and slicing instead.
    """

    cls: str = ""  # the diffusers class
    memory_modes = ("plain", "tiled", "sliced")
    native_modes = True
    # a video autoencoder (5-D ``(N, C, T, H, W)`` tensors): each image is encoded as a clip of one frame,
    # and the adapter's latents are that frame's, 4-D
    video = False
    # describe() states the protocol's crop to a multiple of the downsampling factor (the families whose
    # factor is not 8)
    states_crop = False

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
        force_upcast: bool | None = None,
        cache_dir: str | None = None,
        **kwargs,
    ):
        dtype = parse_dtype(kwargs.get("dtype", "fp32"), f"vae.{name}.dtype")
        source = packaged(source, f"vae.{name}.source")
        model, weights = self._load(name, source, subfolder, revision, config, cache_dir, dtype)
        channels, downsample, scale, shift, upcast = self._model_facts(name, model)
        super().__init__(
            name,
            model,
            latent_space=LatentSpace(latent_space, channels, downsample),
            scaling_factor=scale if scaling_factor is None else scaling_factor,
            shift_factor=shift if shift_factor is None else shift_factor,
            weights=weights,
            **kwargs,
        )
        self.force_upcast = upcast if force_upcast is None else bool(force_upcast)
        if self.native_modes and "tiled" in self.memory_modes and not self._tiles_natively():
            self.memory_modes = tuple(m for m in self.memory_modes if m != "tiled")

    # -- loading -------------------------------------------------------------------------------
    def _load(self, name, source, subfolder, revision, config, cache_dir, dtype) -> tuple[nn.Module, LoadedWeights]:
        """The model (in ``dtype``) and where its weights came from; the arguments are the spec's."""
        argument = f"vae.{name}.source"
        if source_kind(source, argument) not in ("hub", "dir") and not hasattr(self._class(name), "from_single_file"):
            raise ConfigError(
                argument,
                source,
                hint=f"a hub id or a local diffusers folder: diffusers has no single-file loader for {self.cls}",
            )
        try:
            model, weights = diffusers_model(
                self.cls,
                name,
                source,
                subfolder=subfolder,
                revision=revision,
                config=config,
                cache=cache_dir,
                torch_dtype=dtype,
            )
        except AttributeError:  # the class lookup (every loading error is WeightsUnavailable): not a diffusers class
            self._class(name)
            raise
        if not all(callable(getattr(model, m, None)) for m in ("encode", "decode")):
            raise ConfigError(f"vae.{name}.cls", self.cls, hint="a diffusers class with encode and decode")
        return model, weights

    def _class(self, name: str) -> type:
        import diffusers

        found = getattr(diffusers, self.cls, None)
        if not isinstance(found, type):
            hint = f"a diffusers autoencoder class, e.g. AutoencoderKL (diffusers {diffusers.__version__} has no {self.cls}"
            raise ConfigError(
                f"vae.{name}.cls", self.cls, hint=hint + "; the 2025-2026 families need diffusers >= 0.42)"
            )
        return found

    def _model_facts(self, name: str, model: nn.Module) -> tuple[int, int, float, float, bool]:
        """Latent channels, downsampling factor, scaling and shift factors and ``force_upcast``, from the model."""
        cfg = model.config
        ratio = cfg.get("spatial_compression_ratio") or getattr(model, "spatial_compression_ratio", None)
        if not ratio:  # one 2x downsampling between consecutive encoder blocks
            blocks = next((cfg[k] for k in BLOCKS if cfg.get(k)), None)
            if blocks is None:
                raise ConfigError(f"vae.{name}.cls", self.cls, hint=f"its config names no {' or '.join(BLOCKS)}")
            ratio = 2 ** (len(blocks) - 1)
        stated = "force_upcast" in cfg and "force_upcast" not in (cfg.get("_use_default_values") or [])
        channels = cfg.get("latent_channels") or cfg.get("z_dim")  # z_dim: the Wan-derived video autoencoders
        return (
            int(channels),
            int(ratio),
            cfg.get("scaling_factor") or 1.0,
            cfg.get("shift_factor") or 0.0,
            bool(cfg.force_upcast) if stated else False,
        )

    # -- the model --------------------------------------------------------------------------------
    def _moments(self, images: torch.Tensor):
        out = self.module.encode(images.unsqueeze(2) if self.video else images)[0]  # latent_dist, latent or latents
        mean, std = (out, None) if isinstance(out, torch.Tensor) else (out.mean, out.std)
        if self.video:  # the one frame's latents
            mean, std = mean[:, :, 0], None if std is None else std[:, :, 0]
        return mean, std

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        if self.video:  # a clip of one latent frame, decoded to one image, as the video pipelines index [:, :, 0]
            return self.module.decode(z.unsqueeze(2)).sample[:, :, 0]
        return self.module.decode(z).sample

    def encoder_state_dict(self) -> Mapping[str, torch.Tensor]:
        return {k: v for k, v in self.module.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}

    def describe(self) -> dict:
        info = super().describe()
        if self.video:
            info["frames"] = "one: each image is a clip of a single frame"
        if self.states_crop:
            f = self.downsample
            info["crop"] = f"centre-cropped to a multiple of {f} px (the downsampling factor)"
        return info

    # -- memory modes: diffusers' own ----------------------------------------------------------------
    def _tiles_natively(self) -> bool:
        return all(hasattr(self.module, a) for a in ("use_tiling", "tile_sample_min_size", "tile_latent_min_size"))

    @property
    def default_tile_size(self) -> int:
        size = self.module.config.get("sample_size") if self.native_modes else None
        return int(size[0] if isinstance(size, (list, tuple)) else size) if size else super().default_tile_size

    def _set_memory_mode(self, mode: str, tile_size: int) -> None:
        if not self.native_modes:
            return super()._set_memory_mode(mode, tile_size)
        m = self.module
        self._generic_mode = "plain"
        if hasattr(m, "use_tiling"):
            m.disable_tiling()
        if hasattr(m, "use_slicing"):
            m.disable_slicing()
        if mode == "tiled":
            self._tile(tile_size)
        elif mode == "sliced":
            if hasattr(m, "use_slicing"):
                m.enable_slicing()
            else:
                self._generic_mode = "sliced"

    def _tile(self, tile_size: int) -> None:
        """Switch diffusers' tiling on, with tiles of ``tile_size`` pixels (the AutoencoderKL layout)."""
        m = self.module
        m.tile_sample_min_size, m.tile_latent_min_size = tile_size, tile_size // self.downsample
        m.enable_tiling()

    def decode_seams(self, latent_h: int, latent_w: int):
        if not self.native_modes:
            return super().decode_seams(latent_h, latent_w)
        m = self.module
        if latent_h <= m.tile_latent_min_size and latent_w <= m.tile_latent_min_size:
            return [], []
        t, px, f = m.tile_latent_min_size, m.tile_sample_min_size, m.tile_overlap_factor
        return diffusers_kl_seams(latent_h, t, px, f), diffusers_kl_seams(latent_w, t, px, f)


TEMPORAL = ("temperal_downsample", "scale_factor_temporal", "temporal_compression_ratio")  # video config keys


def is_video(model: nn.Module) -> bool:
    """Whether ``model`` reads clips: its config names a temporal factor (the Wan-derived, CogVideoX and
    HunyuanVideo autoencoders), or the first convolution of its encoder (else of the model) is 3-D."""
    if any(k in model.config for k in TEMPORAL):
        return True
    root = getattr(model, "encoder", None)
    for m in (root if isinstance(root, nn.Module) else model).modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            return isinstance(m, nn.Conv3d)
    return False


class DiffusersAdapter(DiffusersFamily):
    """Any autoencoder class of diffusers, named by the spec's ``cls`` (also the family's name in the results,
    and the latent space's unless the spec names one).

    A video class takes each image as a clip of one frame: ``video`` true, false, or None to tell it from the
    model (:func:`is_video`). The protocol's crop to the downsampling factor is stated in :meth:`describe`.
    """

    states_crop = True

    def __init__(
        self,
        name: str,
        source: str,
        latent_space: str | None = None,
        cls: str | None = None,
        video: bool | None = None,
        **kwargs,
    ):
        if not isinstance(cls, str) or not cls.isidentifier():
            raise ConfigError(f"vae.{name}.cls", cls, hint="a diffusers autoencoder class, e.g. AutoencoderKL")
        if video not in (None, True, False):
            raise ConfigError(f"vae.{name}.video", video, ["null", "true", "false"])
        self.cls = self.family = cls
        super().__init__(name, source, latent_space or cls, **kwargs)
        self.video = is_video(self.module) if video is None else video

    @property
    def encoder_kind(self) -> str:
        return f"{super().encoder_kind}:{self.cls}"
