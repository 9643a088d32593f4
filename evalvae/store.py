"""The one store of what evalvae keeps on disk by content: result chunks, latent shards, reference
statistics and generated latents.

An entry is one safetensors file ``<root>/<key[:2]>/<key>.safetensors`` (``<root>/<key>.safetensors``
in a ``flat`` store, whose keys are names) holding named tensors and string metadata, plus
``evalvae_sha256``: the sha256 of every tensor's name, dtype, shape and bytes and of the metadata.
A key is the :func:`digest` of a JSON payload naming everything the entry depends on. Files are
written to a temporary name and renamed, so a kill never leaves half an entry under its name; an
entry that is unreadable anyway (truncated by a full disk, damaged, written by another version)
fails its check, is deleted with a warning and counts as missing: it is redone, never read as data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from evalvae.io import atomic_path

log = logging.getLogger(__name__)
CHECKSUM = "evalvae_sha256"


def digest(payload) -> str:
    """sha256 of a JSON-able payload (sorted keys; what JSON cannot hold, as its ``str``): every key of the store."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the CPU with row-major strides, whatever its memory format.

    ``contiguous()`` alone keeps the strides of a tensor it already calls contiguous: a
    ``(N, C, 1, 1)`` latent from a channels_last convolution keeps ``stride(-1) == C``, which a
    byte view refuses.
    """
    return t.detach().cpu().clone(memory_format=torch.contiguous_format)


def _checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)  # 1-D: its values in logical order, stride 1
        h.update(f"{name}\0{t.dtype}\0{tuple(tensors[name].shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(json.dumps({k: v for k, v in sorted(metadata.items()) if k != CHECKSUM}).encode())
    return h.hexdigest()


class Store:
    """Entries under ``root``; ``read`` returns ``(tensors, metadata)`` or None (missing or failed its check)."""

    def __init__(self, root: str | Path, flat: bool = False):
        self.root, self.flat = Path(root), flat

    def path(self, key: str) -> Path:
        return self.root / (f"{key}.safetensors" if self.flat else f"{key[:2]}/{key}.safetensors")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def write(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
        tensors = {k: dense(v) for k, v in tensors.items()}
        metadata = {k: str(v) for k, v in (metadata or {}).items()}
        metadata[CHECKSUM] = _checksum(tensors, metadata)
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    def read(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            with open(path, "rb") as f:  # the metadata, from the header load_file has just validated
                n = int.from_bytes(f.read(8), "little")
                metadata = json.loads(f.read(n)).get("__metadata__", {})
            ok = metadata.get(CHECKSUM) == _checksum(tensors, metadata)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            ok, reason = False, f"{type(e).__name__}: {e}"
        else:
            reason = "checksum mismatch"
        if not ok:
            log.warning("ignoring damaged chunk %s (%s); it is redone", path, reason)
            path.unlink(missing_ok=True)
            return None
        return tensors, metadata
