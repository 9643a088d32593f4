"""Weight files and networks: read safely, hashed, downloaded once, loaded from the local cache first.

Weights are only ever read through safetensors or ``torch.load(weights_only=True)``. The VAE
adapters (:mod:`evalvae.vae.sources`), the metrics' networks (:mod:`evalvae.metrics.weights`) and
t2i's pipelines all come through here. :func:`weight_files` tells the files a VAE spec's weights
are read from, with their content hashes, without loading it (what results are keyed by).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from evalvae.errors import WeightsUnavailable
from evalvae.hub import PACKAGED, hub_reachable, packaged
from evalvae.io import atomic_path, atomic_write_text, sha256_file

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


def file_sha256(path: Path, cache: Path) -> str:
    """The content hash of a weights file, read at most once while it is unchanged.

    A Hugging Face cache blob is named by its hash (sha256 for files stored with LFS, git's sha1
    for small ones such as ``config.json``): the name is taken. Any other file is hashed once and
    its sha256 kept under ``<cache>/hashes/``, keyed by its path, size, modification and change
    times and inode: a file rewritten or replaced (even one whose copy keeps its modification time)
    gets a new change time or inode and is hashed again.
    """
    real = Path(path).resolve()
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", real.name):
        return real.name
    entry = cache / "hashes" / f"{hashlib.sha256(str(real).encode()).hexdigest()}.json"

    def stamp() -> list:
        st = real.stat()
        return [str(real), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    before = stamp()
    try:
        known = json.loads(entry.read_text())
        if known["stat"] == before:
            return known["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = sha256_file(real)
    if stamp() == before:  # unchanged while it was read; a hash not kept is only read again
        with contextlib.suppress(OSError):
            atomic_write_text(entry, json.dumps({"stat": before, "sha256": digest}))
    return digest


def weight_files(spec: Mapping, cache: Path) -> tuple[dict[str, str], dict | None] | None:
    """The files a VAE spec's ``source`` reads, ``{name: content hash}``, and its model config (``config.json``,
    ``{}`` for a folder without one, None for a single file without a ``config`` folder), found without loading.

    A folder (``subfolder`` if it holds one, a ``pkg://`` source's package folder, a hub id's snapshot in the
    local Hugging Face cache) gives every file directly in it; a single file gives itself and the files of
    its ``config`` folder; a URL gives the ``sha256`` pins its spec checks every download against. None
    where that cannot be told before loading: no ``source``, a hub id not in the local cache, a URL not pinned.
    """
    source = spec.get("source")
    if not isinstance(source, str) or not source:
        return None
    if source.startswith(PACKAGED):
        source = packaged(source)
    if re.match(r"^https?://", source):
        pins = spec.get("sha256")
        if isinstance(pins, Mapping) and pins and all(pins.values()):
            return {str(k): str(v) for k, v in pins.items()}, {}
        return None
    sub, path = spec.get("subfolder"), Path(source).expanduser()
    files: dict[str, str] = {}
    if path.is_file():
        files[path.name] = file_sha256(path, cache)
        folder = Path(str(spec["config"])).expanduser() if spec.get("config") else None
        if folder is not None and sub and (folder / sub).is_dir():
            folder = folder / sub
    elif path.is_dir():
        folder = path / sub if sub and (path / sub).is_dir() else path
    else:
        folder = _hub_snapshot(source, sub, spec.get("revision"))
        if folder is None:
            return None
    if folder is not None and folder.is_dir():
        prefix = "config/" if files else ""
        files.update({prefix + p.name: file_sha256(p, cache) for p in sorted(folder.iterdir()) if p.is_file()})
    config = folder / "config.json" if folder is not None else None
    if config is None or not config.is_file():
        return files, (None if path.is_file() else {})
    try:
        return files, json.loads(config.read_text())
    except ValueError:  # loading will say what is wrong with it
        return files, None


def _hub_snapshot(repo: str, subfolder: str | None, revision: str | None) -> Path | None:
    """The folder of the local Hugging Face cache's snapshot of ``repo`` (``subfolder`` of it) that holds its config."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            repo, f"{subfolder}/config.json" if subfolder else "config.json", revision=revision
        )
    except Exception:  # an id or revision the cache cannot be asked about
        return None
    return Path(found).parent if isinstance(found, str) else None
