"""OpenAI's consistency decoder (the SD 1.x encoder with a diffusion decoder) through diffusers.

The decoder is a UNet run for a few consistency steps from Gaussian noise, conditioned on the
latents, so a decode is stochastic. Image ``i``'s noise comes from a CPU generator seeded with
``seed + seeds[i]`` (in a run ``seeds[i]`` is the run's ``seed`` plus the image's dataset index),
so a reconstruction never depends on batch composition, batch size or device.
"""

from __future__ import annotations

import torch

from evalvae.errors import ConfigError
from evalvae.vae.diffusers import DiffusersFamily
from evalvae.vae.kl import KLAdapter

STEPS = (2,)  # what diffusers' ConsistencyDecoderScheduler implements (OpenAI's release: 2 steps, t = 1.0, 0.75)


class ConsistencyAdapter(DiffusersFamily):
    """A diffusers ``ConsistencyDecoderVAE``; images in [-1, 1]; SD's scaling factor from its config.

    Its encoder is SD's network (``AutoencoderKL``'s encoder and quant conv, run the same way), so
    where its weights equal an SD 1.x VAE's, the encoder hashes are equal and a run with both
    encodes each image once. ``steps`` is the number of consistency steps, recorded in the results
    (2, the only number diffusers' scheduler runs).
    Memory modes: ``plain`` and ``sliced``; the diffusion decoder has no tiled implementation.
    """

    cls = "ConsistencyDecoderVAE"
    family = "consistency-decoder"
    memory_modes = ("plain", "sliced")
    native_modes = False

    def __init__(self, name: str, source: str, latent_space: str, steps: int = 2, seed: int = 0, **kwargs):
        if isinstance(steps, bool) or steps not in STEPS:
            raise ConfigError(
                f"vae.{name}.steps", steps, STEPS, hint="diffusers' ConsistencyDecoderScheduler runs exactly 2 steps"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"vae.{name}.seed", seed, hint="a non-negative integer")
        super().__init__(name, source, latent_space, seed=seed, **kwargs)
        self.steps = steps

    @property
    def encoder_kind(self) -> str:
        return f"{KLAdapter.__module__}.{KLAdapter.__qualname__}"  # same Encoder, quant conv and posterior

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode_seeded(z, list(range(len(z))))

    def _decode_seeded(self, z: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        # diffusers' decode multiplies by config.scaling_factor itself: it takes the raw latents, as here
        generators = [torch.Generator("cpu").manual_seed(self.seed + s) for s in seeds]
        return self.module.decode(z, generator=generators, num_inference_steps=self.steps).sample

    def describe(self) -> dict:
        return {**super().describe(), "decoder_steps": self.steps, "decoder_seed": self.seed}
