"""What a region metric finds on an original, kept once per image: in memory for the run, on disk across runs.

The originals' pixels are the same for every VAE of a run (with the same downsampling factor), so
a region metric detects (and reads) each original once and stores the result under
``<cache_dir>/refstats/regions/<kind>/``, keyed by :func:`region_key`: the detector's identity
and the sha256 of the pixels and of the ground truth it was given. Entries are JSON in the
content-keyed store (:class:`evalvae.store.Store`): written atomically, checksummed, and recomputed
when damaged.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from evalvae.io import cache_dir
from evalvae.store import Store, digest


def pixels_sha256(image_hwc_u8: np.ndarray) -> str:
    """sha256 of an image's shape and 8-bit pixels."""
    a = np.ascontiguousarray(image_hwc_u8, dtype=np.uint8)
    return hashlib.sha256(repr(a.shape).encode() + b"\0" + a.tobytes()).hexdigest()


def region_key(identity: dict, image_sha256: str, truth: list[dict] | None) -> str:
    """The cache key of one original: the detector's ``identity``, its pixels' sha256, its ground truth."""
    return digest({"identity": identity, "pixels": image_sha256, "truth": truth})


class RegionCache:
    """Per-original entries (JSON-able dicts) of one region metric: memory first, then the store."""

    def __init__(self, kind: str, configured_cache_dir: str | None = None, persist: bool = True):
        self.store = Store(cache_dir(configured_cache_dir) / "refstats" / "regions" / kind) if persist else None
        self.memory: dict[str, dict] = {}

    def get(self, key: str) -> dict | None:
        if key not in self.memory and self.store is not None:
            got = self.store.read(key)
            if got is not None:
                self.memory[key] = json.loads(got[1]["entry"])
        return self.memory.get(key)

    def put(self, key: str, entry: dict) -> None:
        self.memory[key] = entry
        if self.store is not None:
            self.store.write(key, {}, {"entry": json.dumps(entry, sort_keys=True)})
