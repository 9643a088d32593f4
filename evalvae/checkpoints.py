"""Weight files and networks: read safely, hashed, downloaded once, loaded from the local cache first.

Weights are only ever read through safetensors or ``torch.load(weights_only=True)``. The VAE
adapters (:mod:`evalvae.vae.sources`), the metrics' networks (:mod:`evalvae.metrics.weights`) and
t2i's pipelines all come through here.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from evalvae.errors import WeightsUnavailable
from evalvae.hub import hub_reachable
from evalvae.io import atomic_path, sha256_file

log = logging.getLogger(__name__)
T = TypeVar("T")


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` once (atomically), checking ``sha256`` when given."""
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    log.info("downloading %s -> %s", url, dest)
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
        if sha256 is not None and (got := sha256_file(tmp)) != sha256:
            raise WeightsUnavailable(f"downloaded {url} has sha256 {got}, expected {sha256}; the file was discarded")
    return dest


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, or from a torch file read with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


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


def local_then_hub(load: Callable[[bool], T], *, may_download: bool = True) -> T:
    """``load(local_files_only=True)``; if that fails, ``load(False)`` where downloading is allowed and the hub reachable.

    A local folder (``may_download=False``) or an offline machine re-raises the local failure at once.
    """
    try:
        return load(True)
    except Exception:
        if not may_download or not hub_reachable():
            raise
        return load(False)
