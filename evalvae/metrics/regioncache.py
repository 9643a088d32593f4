"""What a region metric finds on an original, kept once per image: in memory for the run, on disk across runs.

The originals' pixels are the same for every VAE of a run (with the same downsampling factor), so
a region metric detects (and reads) each original once and stores the result under
``<cache_dir>/refstats/regions/<kind>/``, keyed by :func:`region_key`: the detector's identity
and the sha256 of the pixels and of the ground truth it was given. Entries are JSON, written
atomically; one that does not parse is recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from evalvae.io import atomic_write_text, cache_dir

log = logging.getLogger(__name__)


def pixels_sha256(image_hwc_u8: np.ndarray) -> str:
    """sha256 of an image's shape and 8-bit pixels."""
    a = np.ascontiguousarray(image_hwc_u8, dtype=np.uint8)
    return hashlib.sha256(repr(a.shape).encode() + b"\0" + a.tobytes()).hexdigest()


def region_key(identity: dict, image_sha256: str, truth: list[dict] | None) -> str:
    """The cache key of one original: the detector's ``identity``, its pixels' sha256, its ground truth."""
    blob = json.dumps({"identity": identity, "pixels": image_sha256, "truth": truth}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class RegionCache:
    """Per-original entries (JSON-able dicts) of one region metric: memory first, then ``folder``."""

    def __init__(self, kind: str, configured_cache_dir: str | None = None, persist: bool = True):
        self.folder = cache_dir(configured_cache_dir) / "refstats" / "regions" / kind if persist else None
        self.memory: dict[str, dict] = {}

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if key in self.memory:
            return self.memory[key]
        if self.folder is None or not self._path(key).is_file():
            return None
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("region cache entry %s is unreadable (%s); recomputing it", self._path(key), e)
            return None
        self.memory[key] = entry
        return entry

    def put(self, key: str, entry: dict) -> None:
        self.memory[key] = entry
        if self.folder is not None:
            atomic_write_text(self._path(key), json.dumps(entry, sort_keys=True))
