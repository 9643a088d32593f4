"""The one interface every autoencoder family is evaluated through."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from evalvae.device import parse_dtype
from evalvae.errors import check_choice

POSTERIORS = ("mode", "sample")


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


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A content hash of tensors (as float32), independent of device, memory format and key order.

    Two encoders with equal weights (for example the shared encoder of sd-vae-ft-ema and
    sd-vae-ft-mse) hash equally, which lets later stages encode once for both.
    """
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu", torch.float32).contiguous().reshape(-1)
        h.update(key.encode())
        h.update(str(tuple(state[key].shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class VAEAdapter(ABC):
    """An image autoencoder seen uniformly: images in [-1, 1] in, diffusion-space latents out, and back.

    Subclasses implement :meth:`_moments` and :meth:`_decode_raw` in the model's own (unscaled)
    latent space and own input range; this class applies ``scaling_factor`` and ``shift_factor``
    (``latent = (z - shift) * scale``, as diffusers pipelines do) and the posterior choice.
    """

    family: str = "abstract"

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
        device: str | torch.device = "cpu",
        weights: LoadedWeights | None = None,
    ):
        self.name = name
        self.latent_space = latent_space
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor)
        self.posterior = check_choice(f"vae.{name}.posterior", posterior, POSTERIORS)
        self.seed = int(seed)
        self.dtype_name = dtype
        self.dtype = parse_dtype(dtype, f"vae.{name}.dtype")
        self.device = torch.device(device)
        self.weights = weights or LoadedWeights("module", "in-memory")
        if next(module.parameters()).dtype != self.dtype:
            module = module.to(dtype=self.dtype)
        self.module = module.to(device=self.device).eval().requires_grad_(False)
        self._encoder_hash: str | None = None

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

    # -- the interface -----------------------------------------------------------------------
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

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Encode images in [-1, 1] (N, 3, H, W) to diffusion-space latents.

        With ``posterior=sample`` the noise for image ``i`` comes from a generator seeded with
        ``seeds[i]`` (default: ``seed + i``), so a sample never depends on batch composition.
        """
        mean, std = self._moments(images.to(device=self.device, dtype=self.dtype))
        z = mean
        if self.posterior == "sample" and std is not None:
            if seeds is None:
                seeds = range(self.seed, self.seed + len(images))
            noise = torch.stack(
                [torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(int(s))) for s in seeds]
            )
            z = mean + std * noise.to(device=mean.device, dtype=mean.dtype)
        return (z - self.shift_factor) * self.scaling_factor

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode diffusion-space latents to float32 images, nominally in [-1, 1] (not clamped)."""
        z = latents.to(device=self.device, dtype=self.dtype) / self.scaling_factor + self.shift_factor
        return self._decode_raw(z).float()

    def describe(self) -> dict:
        """Facts about this VAE for the results and the report."""
        return {
            "vae": self.name,
            "family": self.family,
            "source_kind": self.weights.kind,
            "source": self.weights.location,
            "weight_files": dict(self.weights.files),
            "latent_space": self.latent_space.family,
            "latent_channels": self.latent_channels,
            "downsample": self.downsample,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "posterior": self.posterior,
            "dtype": self.dtype_name,
            "device": str(self.device),
            "parameters": sum(p.numel() for p in self.module.parameters()),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.latent_space}, {self.dtype_name}, {self.device})"
