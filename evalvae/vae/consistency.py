"""OpenAI's consistency decoder (the SD 1.x encoder with a diffusion decoder) through diffusers.

The decoder is a UNet run for a few consistency steps from Gaussian noise, conditioned on the
latents, so a decode is stochastic. Image ``i``'s noise comes from a CPU generator seeded with
``seed + seeds[i]`` (in a run ``seeds[i]`` is the run's ``seed`` plus the image's dataset index),
so a reconstruction never depends on batch composition, batch size or device.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from evalvae.device import parse_dtype
from evalvae.errors import ConfigError
from evalvae.vae.base import LatentSpace, VAEAdapter
from evalvae.vae.kl import KLAdapter
from evalvae.vae.sources import diffusers_model, source_kind

STEPS = (2,)  # what diffusers' ConsistencyDecoderScheduler implements (OpenAI's release: 2 steps, t = 1.0, 0.75)


class ConsistencyAdapter(VAEAdapter):
    """A diffusers ``ConsistencyDecoderVAE``; images in [-1, 1]; SD's scaling factor from its config.

    Its encoder is SD's network (``AutoencoderKL``'s encoder and quant conv, run the same way), so
    where its weights equal an SD 1.x VAE's, the encoder hashes are equal and a run with both
    encodes each image once. ``steps`` is the number of consistency steps, recorded in the results
    (2, the only number diffusers' scheduler runs).
    Memory modes: ``plain`` and ``sliced``; the diffusion decoder has no tiled implementation.
    """

    family = "consistency-decoder"
    memory_modes = ("plain", "sliced")

    def __init__(
        self,
        name: str,
        source: str,
        latent_space: str,
        steps: int = 2,
        seed: int = 0,
        subfolder: str | None = None,
        revision: str | None = None,
        scaling_factor: float | None = None,
        cache_dir: str | None = None,
        **kwargs,
    ):
        if isinstance(steps, bool) or steps not in STEPS:
            raise ConfigError(
                f"vae.{name}.steps", steps, STEPS, hint="diffusers' ConsistencyDecoderScheduler runs exactly 2 steps"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"vae.{name}.seed", seed, hint="a non-negative integer")
        if source_kind(source, f"vae.{name}.source") not in ("hub", "dir"):
            raise ConfigError(
                f"vae.{name}.source",
                source,
                hint="a hub id or a local diffusers folder: diffusers has no single-file loader for ConsistencyDecoderVAE",
            )
        model, weights = diffusers_model(
            "ConsistencyDecoderVAE",
            name,
            source,
            subfolder=subfolder,
            revision=revision,
            cache=cache_dir,
            torch_dtype=parse_dtype(kwargs.get("dtype", "fp32"), f"vae.{name}.dtype"),
        )
        cfg = model.config
        super().__init__(
            name,
            model,
            latent_space=LatentSpace(latent_space, cfg.latent_channels, 2 ** (len(cfg.encoder_block_out_channels) - 1)),
            scaling_factor=cfg.scaling_factor if scaling_factor is None else scaling_factor,
            seed=seed,
            weights=weights,
            **kwargs,
        )
        self.steps = steps

    @property
    def encoder_kind(self) -> str:
        return f"{KLAdapter.__module__}.{KLAdapter.__qualname__}"  # same Encoder, quant conv and posterior

    def _moments(self, images: torch.Tensor):
        dist = self.module.encode(images).latent_dist
        return dist.mean, dist.std

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode_seeded(z, list(range(len(z))))

    def _decode_seeded(self, z: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        # diffusers' decode multiplies by config.scaling_factor itself: it takes the raw latents, as here
        generators = [torch.Generator("cpu").manual_seed(self.seed + s) for s in seeds]
        return self.module.decode(z, generator=generators, num_inference_steps=self.steps).sample

    def encoder_state_dict(self) -> Mapping[str, torch.Tensor]:
        return {k: v for k, v in self.module.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}

    def describe(self) -> dict:
        return {**super().describe(), "decoder_steps": self.steps, "decoder_seed": self.seed}
