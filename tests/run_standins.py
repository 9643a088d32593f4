"""A stand-in VAE for the run tests: lossless (or a known gain), and able to go wrong on chosen images.

Images are known by their dataset index, which ``run`` passes to ``encode`` as the posterior
seeds (``seed + i`` with the default ``seed=0``).
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn
from torch.nn import functional as F

from evalvae.vae.base import LatentSpace, LoadedWeights, VAEAdapter

FAILURES = {
    "oom": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    "error": lambda: RuntimeError("stand-in decoder failure"),
}


class Identity(VAEAdapter):
    """Space-to-depth by 8 and back, times ``gain`` (1: a perfect autoencoder).

    ``nan_images``/``inf_images`` decode to NaN/+inf at one pixel; decoding a batch holding an
    image at index ``fail_at`` or later raises ``failure`` (``oom`` or ``error``), and with
    ``$EVALVAE_TEST_INTERRUPT_AT=NAME:INDEX``, VAE NAME raises ``KeyboardInterrupt`` (Ctrl-C) there; decoding
    more than ``most`` images at once runs out of memory (``torch.OutOfMemoryError``). Each decode first
    sleeps ``delay`` seconds. ``stored=true``: known by its weights, as a VAE read from files is, so
    its finished batches are stored as result chunks (a rerun reads them).
    """

    family = "stand-in"

    def __init__(
        self,
        name: str,
        device="cpu",
        dtype: str = "fp32",
        cache_dir=None,
        gain: float = 1.0,
        nan_images=(),
        inf_images=(),
        fail_at: int | None = None,
        failure: str = "error",
        delay: float = 0.0,
        stored: bool = False,
        most: int | None = None,
    ):
        module = nn.Module()
        module.gain = nn.Parameter(torch.tensor(float(gain)))
        self.nan_images, self.inf_images = set(nan_images), set(inf_images)
        self.fail_at, self.failure, self.delay, self.most = fail_at, failure, delay, most
        self._indices: list[int] = []
        super().__init__(
            name,
            module,
            latent_space=LatentSpace("stand-in", 3 * 64, 8),
            dtype=dtype,
            device=device,
            weights=LoadedWeights("stand-in", __name__) if stored else LoadedWeights("module", "in-memory"),
        )

    def encode(self, images, seeds=None):
        self._indices = list(seeds) if seeds is not None else list(range(len(images)))
        return super().encode(images, seeds)

    def _moments(self, images):
        return F.pixel_unshuffle(images, 8), None

    def _decode_raw(self, z):
        time.sleep(self.delay)
        name, _, at = os.environ.get("EVALVAE_TEST_INTERRUPT_AT", "").partition(":")
        if name == self.name and max(self._indices) >= int(at):  # Ctrl-C, as Python raises it
            raise KeyboardInterrupt
        if self.fail_at is not None and max(self._indices) >= self.fail_at:
            raise FAILURES[self.failure]()
        if self.most is not None and len(z) > self.most:
            raise FAILURES["oom"]()
        y = F.pixel_shuffle(z, 8) * self.module.gain
        for j, i in enumerate(self._indices):
            if i in self.nan_images:
                y[j, 0, 0, 0] = torch.nan
            if i in self.inf_images:
                y[j, 1, -1, -1] = torch.inf
        return y

    def encoder_state_dict(self):
        return {"gain": self.module.gain}
