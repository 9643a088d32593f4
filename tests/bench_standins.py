"""A stand-in VAE for the bench tests: tiny, and able to fail on cue like a real one.

It runs out of memory (CUDA-style or as a generic allocator RuntimeError), raises another error,
gets its process killed, or returns NaN, at chosen ops, resolutions and dtypes.
"""

from __future__ import annotations

import os
import signal

import torch
from torch import nn

from evalvae.vae.base import LatentSpace, LoadedWeights, VAEAdapter

FAILURES = {
    "cuda_oom": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    "runtime_oom": lambda: RuntimeError("MPS backend out of memory (MPS allocated: 17 GB)"),
    "error": lambda: ValueError("stand-in failure that is not about memory"),
}


class StandIn(VAEAdapter):
    """8x downsampling, 4 latent channels; ``fail_op`` fails from ``fail_from`` px up; ``nan_dtype`` decodes NaN."""

    family = "stand-in"

    def __init__(
        self,
        name: str,
        device="cpu",
        dtype: str = "fp32",
        cache_dir=None,
        fail_op: str | None = None,
        fail_from: int = 0,
        failure: str = "cuda_oom",
        nan_dtype: str | None = None,
        tiled: bool = False,
        upcast: str = "auto",
    ):
        torch.manual_seed(0)
        module = nn.Module()
        module.encoder = nn.Conv2d(3, 4, 8, stride=8)
        module.decoder = nn.Sequential(nn.Upsample(scale_factor=8), nn.Conv2d(4, 3, 3, padding=1))
        self.fail_op, self.fail_from, self.failure, self.nan = fail_op, fail_from, failure, nan_dtype == dtype
        if tiled:
            self.memory_modes = ("plain", "tiled", "sliced")
        super().__init__(
            name,
            module,
            latent_space=LatentSpace("stand-in", 4, 8),
            dtype=dtype,
            upcast=upcast,
            device=device,
            weights=LoadedWeights("module", "in-memory"),
        )

    def _maybe_fail(self, op: str, size: int) -> None:
        if op == self.fail_op and size >= self.fail_from:
            if self.failure == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise FAILURES[self.failure]()

    def _moments(self, images):
        self._maybe_fail("encode", images.shape[-1])
        return self.module.encoder(images), None

    def _decode_raw(self, z):
        self._maybe_fail("decode", z.shape[-1] * 8)
        y = self.module.decoder(z)
        return y * torch.nan if self.nan else y

    def encoder_state_dict(self):
        return self.module.encoder.state_dict()
