"""Generated latents in the content-keyed store (:class:`evalvae.store.Store`), in the run directory or the cache.

``latents=run`` writes ``<run>/latents/<image>.safetensors`` and always generates. ``latents=cache``
keys each latent by everything that determines it (:func:`latent_key`) and reuses it across runs,
so adding a VAE later does not run the denoiser again.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from evalvae.provenance import versions
from evalvae.store import Store, digest

FORMAT = 1
LIBRARIES = ("torch", "diffusers", "transformers")  # the denoiser and scheduler, the text encoders


def latent_key(generation: dict, prompt: str, seed: int) -> str:
    """sha256 of the pipeline identity and settings, the device type, the prompt, the seed and the versions
    of the libraries that generate."""
    payload = {"format": FORMAT, "generation": generation, "libraries": versions(LIBRARIES), "prompt": prompt}
    return digest({**payload, "seed": int(seed)})


class LatentStore:
    """Where each (prompt, seed)'s latent lives (by image name in the run, by :func:`latent_key` in the cache)."""

    def __init__(self, mode: str, run_dir: Path, cache_root: Path, generation: dict):
        self.mode = mode
        run = mode == "run"
        self.store = Store(Path(run_dir) / "latents" if run else Path(cache_root) / "latents", flat=run)
        self.root = self.store.root
        self.generation = generation

    def key(self, image_id: str, prompt: str, seed: int) -> str:
        return image_id if self.mode == "run" else latent_key(self.generation, prompt, seed)

    def stored_shape(self, image_id: str, prompt: str, seed: int) -> tuple[int, ...] | None:
        """The shape ``(C, h, w)`` of a stored latent that passes its check, or None if it must be generated
        (always, for ``run``; a damaged one is deleted)."""
        got = None if self.mode == "run" else self.store.read(self.key(image_id, prompt, seed))
        return tuple(got[0]["latent"].shape) if got is not None else None

    def read(self, image_id: str, prompt: str, seed: int) -> torch.Tensor:
        """A latent this run has stored (or found in the cache)."""
        got = self.store.read(self.key(image_id, prompt, seed))
        if got is None:
            raise FileNotFoundError(f"the latent of {image_id} is gone or damaged; run again to generate it")
        return got[0]["latent"]

    def save(self, image_id: str, prompt: str, seed: int, latent: torch.Tensor) -> Path:
        meta = {
            "prompt": prompt,
            "seed": seed,
            "image": image_id,
            "generation": json.dumps(self.generation, default=str),
        }
        return self.store.write(
            self.key(image_id, prompt, seed), {"latent": latent.detach().to("cpu", torch.float32)}, meta
        )
