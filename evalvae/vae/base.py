"""The one interface every autoencoder family is evaluated through."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import nn

from evalvae.checkpoints import state_dict_sha256
from evalvae.device import fp32_math, parse_dtype
from evalvae.errors import ConfigError, EvalvaeError, check_choice
from evalvae.vae.bits import stored_bits
from evalvae.vae.seams import generic_decode_seams
from evalvae.vae.tiling import tiled_apply
from evalvae.vocab import MEMORY_MODES

POSTERIORS = ("mode", "sample")
# fp32 instead of a reduced dtype: as the model config's force_upcast says (auto), never, or always
# (evalvae.jobs.policy applies it when a job loads the VAE)
UPCAST = ("auto", "never", "always")


class UnsupportedMemoryMode(EvalvaeError):
    """The VAE family has no implementation of the requested memory mode."""


@dataclass
class LatentSpace:
    """What a latent means: the diffusion family it belongs to, its channels and spatial factor."""

    family: str
    channels: int
    downsample: int

    def __str__(self) -> str:
        return f"{self.family} ({self.channels}ch, f{self.downsample})"


@dataclass
class LoadedWeights:
    """Where the weights came from, for the results: source kind, resolved location, file hashes."""

    kind: str
    location: str
    files: dict[str, str] = field(default_factory=dict)
    stored_dtype: str | None = None  # the floating dtype(s) the files hold, e.g. "bf16" (None: not known)


class VAEAdapter(ABC):
    """An image autoencoder seen uniformly: images in [-1, 1] in, diffusion-space latents out, and back.

    Subclasses implement :meth:`_moments` and :meth:`_decode_raw` in the model's own (unscaled)
    latent space and own input range; this class applies the posterior choice and the family's
    latent normalization (:meth:`normalize`; by default ``scaling_factor`` and ``shift_factor``,
    ``latent = (z - shift) * scale``, as diffusers pipelines do).
    """

    family: str = "abstract"
    # Memory modes this family can run. Slicing works for any adapter; generic tiling (see
    # _set_memory_mode) only for fully convolutional networks, so families opt in to it.
    memory_modes: tuple[str, ...] = ("plain", "sliced")
    tile_overlap: Fraction = Fraction(1, 4)  # of the tile side, for the generic tiling
    # The model asks to run in fp32 when loaded in fp16 (diffusers' ``config.force_upcast``); a job's
    # loading policy (evalvae.jobs.policy) honours it under upcast=auto. Families whose config says so set it.
    force_upcast: bool = False
    # False: the job stores no latents of this VAE (evalvae.jobs.store); for adapters with nothing to gain
    # from them (evalvae.vae.files)
    stores_latents: bool = True
    # metrics.latent_bits quantizes this adapter's floating latents (evalvae.recon.rate); False where
    # the latents are not a model's (a codec's pixels or file, reconstructions read from elsewhere)
    quantizable_latents: bool = True

    def __init__(
        self,
        name: str,
        module: nn.Module,
        *,
        latent_space: LatentSpace,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
        posterior: str = "mode",
        seed: int = 0,
        dtype: str = "fp32",
        upcast: str = "auto",
        device: str | torch.device = "cpu",
        weights: LoadedWeights | None = None,
    ):
        self.name = name
        self.upcast = check_choice(f"vae.{name}.upcast", upcast, UPCAST)
        self.latent_space = latent_space
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor)
        self.posterior = check_choice(f"vae.{name}.posterior", posterior, POSTERIORS)
        self.seed = int(seed)
        self.dtype_name = dtype
        self.dtype_requested = dtype  # differs from dtype_name when a run upcast a VAE
        self.upcast_reason: str | None = None  # why it did, for the results
        self.dtype = parse_dtype(dtype, f"vae.{name}.dtype")
        self.device = torch.device(device)
        self.weights = weights or LoadedWeights("module", "in-memory")
        first = next(module.parameters(), None)  # None: no weights (a codec, evalvae.vae.files)
        if first is not None and first.dtype != self.dtype:
            module = module.to(dtype=self.dtype)
        self.module = module.to(device=self.device).eval().requires_grad_(False)
        self._encoder_hash: str | None = None
        # precision=tf32: float32 convolutions and matmuls on TF32 tensor cores (set only where the device has
        # them, evalvae.device.tf32_available); else IEEE float32 (evalvae.device.fp32_math)
        self.tf32 = False
        self.compiled: str | None = None  # the torch.compile backend of :meth:`compile`
        self.memory_mode, self.tile_size = "plain", None
        self._generic_mode = "plain"  # what encode/decode do themselves; native modes leave it plain

    # -- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def _moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Posterior mean and standard deviation (None if deterministic) in the raw latent space."""

    @abstractmethod
    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Decode raw latents to images in [-1, 1] (not clamped)."""

    @abstractmethod
    def encoder_state_dict(self) -> Mapping[str, torch.Tensor]:
        """The tensors that determine the encoder's output (encoder and any quant conv)."""

    # -- what subclasses may override --------------------------------------------------------
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents (the model's own) to the diffusion space that :meth:`encode` returns.

        ``(z - shift_factor) * scaling_factor``; a family with per-channel means and stds or batch-norm
        statistics overrides this and :meth:`denormalize`, reports them in :meth:`describe` and includes
        them in :meth:`encoder_state_dict` (which, with the factors, keys the latent cache).
        """
        return (z - self.shift_factor) * self.scaling_factor

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Diffusion-space latents back to the model's own: the inverse of :meth:`normalize`."""
        return latents / self.scaling_factor + self.shift_factor

    def _decode_seeded(self, z: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Decode raw latents; a stochastic decoder seeds image ``i``'s noise with ``seed + seeds[i]``."""
        return self._decode_raw(z)

    @property
    def encoder_kind(self) -> str:
        """The code path that turns images into latents, for the latent cache's key (with the encoder's hash).

        Adapters that encode exactly as another adapter does (same network class, input range and
        posterior) return that adapter's name, so VAEs sharing an encoder share its latents.
        """
        return f"{type(self).__module__}.{type(self).__qualname__}"

    @property
    def default_tile_size(self) -> int:
        """Tile side in image pixels used by ``tiled`` mode when none is given."""
        return 512

    def _set_memory_mode(self, mode: str, tile_size: int) -> None:
        """Switch the model's own implementation of ``mode``; the default is the generic one."""
        self._generic_mode = mode

    def prepare_group(self, ids: Sequence[str], images: torch.Tensor) -> dict[str, str]:
        """Called by the reconstruction loop before each group is encoded, with its image ids and
        ``(N, 3, H, W)`` uint8 originals; returns ``{id: reason}`` of the images this VAE cannot
        reconstruct (they are not scored). Models need no ids; the default returns none."""
        return {}

    def unused_inputs(self, ids: Sequence[str]) -> list[tuple[str, str]]:
        """``(file, reason)`` of this VAE's own inputs that match none of the dataset's image ``ids``; none by default."""
        return []

    # -- the interface -----------------------------------------------------------------------
    def set_memory_mode(self, mode: str, tile_size: int | None = None) -> None:
        """Run encode/decode ``plain``, ``sliced`` (one image at a time) or ``tiled``.

        ``tile_size`` is the tile side in image pixels (a multiple of the downsampling factor);
        inputs no larger than one tile run untiled. Raises :class:`UnsupportedMemoryMode` for a
        mode this family cannot run, never falling back to another mode.
        """
        check_choice("memory mode", mode, MEMORY_MODES)
        if mode not in self.memory_modes:
            raise UnsupportedMemoryMode(
                f"VAE '{self.name}' ({self.family}) has no {mode} mode; it runs {', '.join(self.memory_modes)}"
            )
        tile = self.default_tile_size if tile_size is None else tile_size
        if not isinstance(tile, int) or tile < 2 * self.downsample or tile % self.downsample:
            raise ConfigError(
                "tile_size", tile_size, hint=f"a multiple of {self.downsample} pixels, at least {2 * self.downsample}"
            )
        self._set_memory_mode(mode, tile)
        self.memory_mode, self.tile_size = mode, tile

    @property
    def latent_channels(self) -> int:
        return self.latent_space.channels

    @property
    def downsample(self) -> int:
        return self.latent_space.downsample

    @property
    def encoder_hash(self) -> str:
        """sha256 of the encoder's weights (computed once, on first use)."""
        if self._encoder_hash is None:
            self._encoder_hash = state_dict_sha256(self.encoder_state_dict())
        return self._encoder_hash

    @property
    def precision(self) -> str:
        """The arithmetic this VAE runs in: its dtype, or ``tf32`` for float32 weights on TF32 tensor cores."""
        return "tf32" if self.tf32 and self.dtype_name == "fp32" else self.dtype_name

    def compile(self, backend: str = "inductor") -> None:
        """``torch.compile`` the network calls of :meth:`encode` and :meth:`decode` (the first call of each
        input shape compiles). A VAE without weights (a codec) has nothing to compile and is left as it is."""
        if next(self.module.parameters(), None) is None:
            return
        self._moments = torch.compile(self._moments, backend=backend)
        self._decode_raw = torch.compile(self._decode_raw, backend=backend)
        self.compiled = backend

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Encode images in [-1, 1] (N, 3, H, W) to diffusion-space latents.

        With ``posterior=sample`` the noise for image ``i`` comes from a generator seeded with
        ``seeds[i]`` (default: ``seed + i``), so a sample never depends on batch composition.
        """
        with fp32_math(self.device, self.tf32):
            mean, std = self._moments_in_mode(images.to(device=self.device, dtype=self.dtype))
        z = mean
        if self.posterior == "sample" and std is not None:
            if seeds is None:
                seeds = range(self.seed, self.seed + len(images))
            noise = torch.stack(
                [torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(int(s))) for s in seeds]
            )
            z = mean + std * noise.to(device=mean.device, dtype=mean.dtype)
        return self.normalize(z)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Decode diffusion-space latents to float32 images, nominally in [-1, 1] (not clamped).

        A stochastic decoder draws image ``i``'s noise from a generator seeded with its own ``seed``
        plus ``seeds[i]`` (default: ``i``), so a decode never depends on batch composition; other
        decoders ignore ``seeds``.
        """
        z = self.denormalize(latents.to(device=self.device, dtype=self.dtype))
        seeds = list(range(len(z))) if seeds is None else [int(s) for s in seeds]
        with fp32_math(self.device, self.tf32):
            return self._decode_in_mode(z, seeds).float()

    def rate_bits(self, latents: torch.Tensor) -> torch.Tensor:
        """``(N,)`` float64: the bits per image of ``latents`` as :meth:`decode` reads them (bpp = bits / pixels).

        By default the latent elements times their dtype's width (fp32 32, fp16/bf16 16); NaN where
        an adapter cannot tell (reconstructions read from elsewhere). Codecs count their bitstreams.
        """
        return stored_bits(latents)

    def rate_facts(self, latents: torch.Tensor) -> dict[str, list]:
        """Per-image facts about the rate beside ``bpp`` (a codec's target and quality); none by default."""
        return {}

    def rate_warnings(self, latents: torch.Tensor) -> list[str]:
        """Per image, why its rate missed what was asked (a codec's unreachable target), or ``""``."""
        return [""] * len(latents)

    def describe(self) -> dict:
        """Facts about this VAE for the results and the report."""
        return {
            "vae": self.name,
            "family": self.family,
            "source_kind": self.weights.kind,
            "source": self.weights.location,
            "weight_files": dict(self.weights.files),
            **({"weights_dtype": self.weights.stored_dtype} if self.weights.stored_dtype else {}),
            "latent_space": self.latent_space.family,
            "latent_channels": self.latent_channels,
            "downsample": self.downsample,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "posterior": self.posterior,
            "dtype": self.dtype_name,
            "dtype_requested": self.dtype_requested,
            "precision": self.precision,
            "compile": self.compiled,
            "upcast": self.upcast,
            **({"upcast_reason": self.upcast_reason} if self.upcast_reason else {}),
            "device": str(self.device),
            "parameters": sum(p.numel() for p in self.module.parameters()),
        }

    # -- memory modes: the generic implementations ----------------------------------------------
    def _moments_in_mode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._generic_mode == "sliced" and len(images) > 1:
            parts = [self._moments(x) for x in images.split(1)]
            std = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
            return torch.cat([p[0] for p in parts]), std
        if self._generic_mode == "tiled":
            return self._moments_tiled(images)
        return self._moments(images)

    def _decode_in_mode(self, z: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        if self._generic_mode == "sliced" and len(z) > 1:
            return torch.cat([self._decode_seeded(x, [s]) for x, s in zip(z.split(1), seeds)])
        if self._generic_mode == "tiled":
            return self._decode_tiled(z)
        return self._decode_seeded(z, seeds)

    def _moments_tiled(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The generic tiled encoder: :meth:`_moments` tile by tile, mean and std blended alike."""

        def both(x: torch.Tensor) -> torch.Tensor:
            mean, std = self._moments(x)
            return mean if std is None else torch.cat([mean, std], 1)

        f = self.downsample
        out = tiled_apply(both, images, tile=self.tile_size, overlap=self._latent_overlap() * f, scale=Fraction(1, f))
        c = self.latent_channels
        return (out, None) if out.shape[1] == c else (out[:, :c], out[:, c:])

    def _decode_tiled(self, z: torch.Tensor) -> torch.Tensor:
        """The generic tiled decoder: :meth:`_decode_raw` tile by tile."""
        tile = self.tile_size // self.downsample
        return tiled_apply(self._decode_raw, z, tile=tile, overlap=self._latent_overlap(), scale=self.downsample)

    def _latent_overlap(self) -> int:
        """Tile overlap in latent pixels (image pixels / downsample), so both halves tile on one grid."""
        return int(self.tile_size // self.downsample * self.tile_overlap)

    def decode_seams(self, latent_h: int, latent_w: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Row and column intervals (image pixels) where the ``tiled`` decoder blends neighbouring tiles
        for a latent of ``latent_h`` x ``latent_w`` (:mod:`evalvae.vae.seams`); the generic tiling's here."""
        tile = self.tile_size // self.downsample
        return generic_decode_seams(latent_h, latent_w, tile, self._latent_overlap(), self.downsample)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.latent_space}, {self.dtype_name}, {self.device})"
