"""Cache of reference (original-image) feature statistics, keyed by content.

Statistics of the originals depend only on the dataset's content, the protocol geometry and the
feature extractor (with its weights), so they are computed once and reused by every VAE and run.
They are of the images as the dataset yields them, before any crop a VAE's downsampling factor
needs (a no-op under the default square protocol), so every VAE is compared with the same set.
:func:`reference_key` is the one place the key is built; files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from evalvae.io import atomic_path
from evalvae.metrics.frechet import FeatureStats

log = logging.getLogger(__name__)
FORMAT = 1


def reference_key(dataset_fingerprint: str, geometry: dict, extractor: dict) -> str:
    """sha256 of everything that determines the originals' features."""
    payload = json.dumps({"format": FORMAT, "dataset": dataset_fingerprint, "geometry": geometry, "extractor": extractor},
                         sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()


class ReferenceStore:
    """``<cache>/refstats/<key>.npz`` holding n, float64 sums, float32 features and a JSON description."""

    def __init__(self, root: Path):
        self.root = Path(root) / "refstats"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str) -> FeatureStats | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                stats = FeatureStats(int(z["total"].shape[0]), keep_features=True)
                stats.n, stats.total, stats.outer = int(z["n"]), z["total"], z["outer"]
                stats.chunks = [z["features"]]
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable reference statistics %s (%s); they will be recomputed", path, e)
            return None
        return stats

    def save(self, key: str, stats: FeatureStats, description: dict) -> Path:
        path = self.path(key)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, n=np.int64(stats.n), total=stats.total, outer=stats.outer, features=stats.features,
                         description=np.array(json.dumps(description, default=str)))  # fmt: skip
        return path


class References:
    """Reference statistics of one dataset for each set-level metric: from the cache, or computed once."""

    def __init__(self, store: ReferenceStore, dataset):
        self.store, self.dataset = store, dataset
        self.stats: dict[int, FeatureStats] = {}
        self.info: dict[str, dict] = {}

    def key(self, metric) -> str:
        return reference_key(self.dataset.fingerprint(), self.dataset.geometry.describe(), metric.extractor.identity())

    def get(self, metric) -> FeatureStats | None:
        """Cached statistics for ``metric``'s extractor, or None if they must be computed."""
        if id(metric) not in self.stats:
            key = self.key(metric)
            stats = self.store.load(key)
            if stats is None:
                return None
            self.stats[id(metric)] = stats
            self.info[metric.extractor.name] = {"key": key, "source": "cache", "n": stats.n, "path": str(self.store.path(key))}
            log.info("reference statistics for %s: cache hit (%d images)", metric.extractor.name, stats.n)
        return self.stats[id(metric)]

    def missing(self, metrics: list) -> dict[int, FeatureStats]:
        """Empty statistics, by ``id(metric)``, for each metric whose reference is not cached."""
        return {id(m): m.new_stats() for m in metrics if self.get(m) is None}

    def compute(self, metrics: list, loader, on_batch=None) -> int:
        """Fill the cache for every metric it lacks from one pass over ``loader``; the images seen (0 if all were cached)."""
        todo = [m for m in metrics if self.get(m) is None]
        if not todo:
            return 0
        stats = self.missing(todo)
        for batch in loader:
            for group in batch.groups:
                for m in todo:
                    stats[id(m)].update(m.features(group.images))
            if on_batch is not None:
                on_batch(batch)
        for m in todo:
            self.put(m, stats[id(m)])
        return stats[id(todo[0])].n

    def put(self, metric, stats: FeatureStats) -> None:
        key = self.key(metric)
        description = {"dataset": self.dataset.describe(), "fingerprint": self.dataset.fingerprint(), "extractor": metric.extractor.identity(), "n": stats.n}
        path = self.store.save(key, stats, description)
        self.stats[id(metric)] = stats
        self.info[metric.extractor.name] = {"key": key, "source": "computed", "n": stats.n, "path": str(path)}
        log.info("reference statistics for %s: computed from %d images, cached at %s", metric.extractor.name, stats.n, path)
