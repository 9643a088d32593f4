"""What a loaded VAE is known by, remembered so that a VAE whose every batch is finished is not loaded again.

A rerun of a finished run reads its result chunks (:mod:`evalvae.jobs.store`), but their keys hold
the VAE's identity: the sha256 of its weights' content and the dtype the precision policy chose
(from the config's ``upcast`` and the model config's ``force_upcast``).
Learning those means loading the VAE (seconds for an SD-size one, most of a rerun's time). So
after a load the identity is stored under a key that can be computed without loading:

* the VAE's config (everything but ``device`` and ``cache_dir``), the device, evalvae's, torch's
  and diffusers' versions (diffusers reads the model's config);
* the files its weights are read from, each with its size, modification and change times and
  inode: every file under a local ``source`` folder (or that file; a ``pkg://`` source is the
  package folder it names), any other local path in the
  config (a single file's ``config`` folder), the snapshot a hub id resolves to in the local
  Hugging Face cache (a new revision there is another snapshot).

A URL source is pinned only by the sha256 its config gives for each file; one without it, or a
hub id not in the local cache, has no key, and is always loaded. A weights file rewritten or
replaced gets a new change time or inode (even when a copy keeps its modification time), so the
VAE is loaded and its identity learnt again.

An adapter with ``remembered = False`` (:mod:`evalvae.vae.files`, whose loading is listing and
hashing its folder) gets no record, so it is always loaded.

:class:`Recorded` stands in for the VAE while every batch is read from chunks; a batch that must
be computed (a chunk found damaged) loads it after all.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import evalvae
from evalvae.errors import ConfigError
from evalvae.hub import PACKAGED, packaged
from evalvae.jobs.chunks import ChunkStore, digest
from evalvae.jobs.store import VAE_LIBRARIES
from evalvae.provenance import versions

log = logging.getLogger(__name__)
FORMAT = 1
MAX_FILES = 1000  # a source folder with more files than this is not fingerprinted (the VAE is always loaded)


class Recorded:
    """A VAE known from its record: what results, timings and keys need of it, without its weights."""

    def __init__(self, name: str, record: dict):
        self.name = name
        self.identity: dict = record["identity"]
        self.dtype_name: str = record["dtype"]
        self.downsample: int = record["downsample"]
        self.encoder_hash: str = record["encoder_sha256"]
        self._describe: dict = record["describe"]

    def describe(self) -> dict:
        return dict(self._describe)

    def __repr__(self) -> str:
        return f"Recorded({self.name!r}, {self.dtype_name})"


def _stat(path: Path) -> list | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _tree(path: Path) -> list | None:
    """Size, modification time and inode of ``path``, or of every file under it; None if too many."""
    if path.is_file():
        return [_stat(path)]
    out = []
    for dirpath, dirnames, names in os.walk(path, followlinks=True):
        dirnames.sort()
        for name in sorted(names):
            out.append(_stat(Path(dirpath) / name))
            if len(out) > MAX_FILES:
                return None
    return out


def _hub_snapshot(spec: Mapping) -> str | None:
    """The local snapshot folder a hub id resolves to, or None when it is not in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    subfolder = spec.get("subfolder")
    try:
        found = try_to_load_from_cache(
            str(spec["source"]),
            f"{subfolder}/config.json" if subfolder else "config.json",
            revision=spec.get("revision"),
        )
    except Exception:  # an id or revision the cache cannot be asked about
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


def fingerprint(spec: Mapping) -> list | None:
    """What the weights of ``spec`` are read from, as it stands now; None when it cannot be told without loading."""
    out: list = []
    for key, value in sorted(spec.items()):
        if key in ("cache_dir", "device") or not isinstance(value, str) or not value:
            continue
        if key == "source" and value.startswith(PACKAGED):  # weights shipped inside a package: its folder
            try:
                value = packaged(value)
            except ConfigError:
                return None
        if key == "source" and value.startswith(("http://", "https://")):
            pins = spec.get("sha256")
            if not isinstance(pins, Mapping) or not pins or any(not v for v in pins.values()):
                return None  # a download not pinned by hashes
            out.append([key, value])
            continue
        path = Path(value).expanduser()
        local = path.is_absolute() or value.startswith(("./", "../", "~"))
        if key == "source" and not local and not path.exists():
            snapshot = _hub_snapshot(spec)
            files = _tree(Path(snapshot)) if snapshot is not None else None
            if files is None or any(f is None for f in files):
                return None  # a hub id not in the local cache
            out.append([key, snapshot, files])
        elif key == "source" or local:
            files = _tree(path.resolve()) if path.exists() else None
            if files is None or any(f is None for f in files):
                return None
            out.append([key, files])
    return out


def as_keyed(payload):
    """``payload`` as :func:`evalvae.jobs.chunks.digest` sees it (what JSON cannot hold, as its ``str``), so a
    stored and reloaded identity makes the same keys as the one computed from the VAE."""
    return json.loads(json.dumps(payload, sort_keys=True, default=str))


class VAEMemo:
    """Records of loaded VAEs, one per (config, device, weight files), in a chunk store."""

    def __init__(self, root: str | Path, cache_dir: str | None):
        self.store = ChunkStore(root)
        self.cache_dir = cache_dir

    def key(self, spec: Mapping, device: torch.device) -> str | None:
        plain = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
        if "source" not in plain:  # no weights to read (a codec, evalvae.vae.codecs): loading costs nothing
            return None
        files = fingerprint(plain)
        if files is None:
            return None
        config = {k: v for k, v in plain.items() if k not in ("cache_dir", "device")}
        where = str(device)
        if device.type == "cuda" and torch.cuda.is_available():
            where += f" ({torch.cuda.get_device_name(device)})"
        return digest(
            {
                "format": FORMAT,
                "evalvae": evalvae.__version__,
                "libraries": versions(VAE_LIBRARIES),
                "config": config,
                "device": where,
                "files": files,
            }
        )

    def recall(self, name: str, spec: Mapping, device: torch.device) -> Recorded | None:
        key = self.key(spec, device)
        got = self.store.read(key) if key is not None else None
        if got is None:
            return None
        try:
            return Recorded(name, json.loads(got[1]["record"]))
        except (KeyError, ValueError, TypeError):
            return None

    def remember(self, spec: Mapping, device: torch.device, vae, identity: dict) -> None:
        key = self.key(spec, device) if vae.remembered else None
        if key is None:
            return
        describe = json.loads(json.dumps(vae.describe(), default=str))
        record = {
            "identity": as_keyed(identity),
            "dtype": vae.dtype_name,
            "downsample": int(vae.downsample),
            "encoder_sha256": vae.encoder_hash,
            "describe": describe,
        }
        try:
            self.store.write(key, {}, {"record": json.dumps(record, sort_keys=True)})
        except OSError as e:  # a record only saves a load; never a reason to stop
            log.warning("VAE '%s': its record was not stored (%s: %s)", vae.name, type(e).__name__, e)
