"""Storing generated latents as safetensors files, in the run directory or a content-keyed cache.

``latents=run`` writes ``<run>/latents/<image>.safetensors`` and always generates. ``latents=cache``
keys each latent by everything that determines it (:func:`latent_key`) and reuses it across runs,
so adding a VAE later does not run the denoiser again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from evalvae.errors import check_choice
from evalvae.io import atomic_path
from evalvae.provenance import versions
from evalvae.vocab import T2I_LATENTS

FORMAT = 1
LIBRARIES = ("torch", "diffusers", "transformers")  # the denoiser and scheduler, the text encoders


def latent_key(generation: dict, prompt: str, seed: int) -> str:
    """sha256 of the pipeline identity and settings, the device type, the prompt, the seed and the versions
    of the libraries that generate."""
    payload = json.dumps(
        {
            "format": FORMAT,
            "generation": generation,
            "libraries": versions(LIBRARIES),
            "prompt": prompt,
            "seed": int(seed),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class LatentStore:
    """Where each (prompt, seed)'s latent lives, and reading and writing it atomically."""

    def __init__(self, mode: str, run_dir: Path, cache_root: Path, generation: dict):
        self.mode = check_choice("t2i.latents", mode, T2I_LATENTS)
        self.root = Path(run_dir) / "latents" if self.mode == "run" else Path(cache_root) / "latents"
        self.generation = generation

    def path(self, image_id: str, prompt: str, seed: int) -> Path:
        if self.mode == "run":
            return self.root / f"{image_id}.safetensors"
        return self.root / f"{latent_key(self.generation, prompt, seed)}.safetensors"

    def stored_shape(self, image_id: str, prompt: str, seed: int) -> tuple[int, ...] | None:
        """The shape ``(C, h, w)`` of a stored, readable latent, or None if it must be generated (always, for ``run``).

        Only the file's header is read; safetensors checks it against the file's size, so a
        truncated or foreign file counts as missing.
        """
        path = self.path(image_id, prompt, seed)
        if self.mode == "run" or not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as f:
                return tuple(f.get_slice("latent").get_shape())
        except (SafetensorError, OSError, KeyError):
            return None

    def read(self, image_id: str, prompt: str, seed: int) -> torch.Tensor:
        """A latent this run has stored (or found in the cache)."""
        return load_file(self.path(image_id, prompt, seed))["latent"]

    def save(self, image_id: str, prompt: str, seed: int, latent: torch.Tensor) -> Path:
        path = self.path(image_id, prompt, seed)
        meta = {
            "prompt": prompt,
            "seed": str(seed),
            "image": image_id,
            "generation": json.dumps(self.generation, default=str),
        }
        with atomic_path(path) as tmp:
            save_file({"latent": latent.detach().to("cpu", torch.float32).contiguous()}, str(tmp), metadata=meta)
        return path
