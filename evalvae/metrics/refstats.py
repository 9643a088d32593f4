"""Cache of reference (original-image) feature statistics, keyed by content.

Statistics of the originals depend only on the dataset's content, the protocol geometry, the
feature extractor (with its weights), and the code that computes them: the version of evalvae's
image decoding and of the features, and the versions of the libraries that run them
(:func:`evalvae.data.transforms.images_identity`, :func:`evalvae.metrics.base.features_identity`).
So they are computed once and reused by every VAE and run, and never by another version.
They are of the originals exactly as the VAEs and the per-image metrics see them: the dataset's
images centre-cropped to a multiple of the VAE's downsampling factor (``crop_multiple``). That
crop is a no-op under the default square protocol when the resolution is a multiple of the
factor, and the key is then the same for every factor; otherwise (``dataset.crop=none``, or an
odd resolution) the multiple is part of the key, so VAEs with different factors never share an
entry. :func:`reference_key` builds what the statistics are of (``metrics.json``'s ``reference.key``)
and :func:`stored_key` the entry's key from it and the code; files are written atomically.

The features themselves are stored only when the metric keeps them (KID does; rFID needs only the
sums), so ``metrics.fid.kid`` is not part of the key: an entry written without features serves
rFID, and a run that needs them (KID) recomputes it and overwrites it with them. Kept features are
stored with their images' dataset positions, by which the paired KID finds each reconstruction's
original, and by which a run takes out the originals a VAE has no reconstruction of; an entry whose
features lack them is recomputed the same way.

An entry holds every image its key names: each image of the dataset the crop to the multiple leaves
(an image with a side below it is outside that multiple's key, as it is outside every VAE of that
factor). A run computes it from all of them, whatever a VAE left out (:mod:`evalvae.recon.task`: a
missing ``+vae=files`` file, a non-finite output); such a VAE is scored against this reference less
the originals it left out, never under this key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from evalvae.data.transforms import below_factor, crop_to_multiple, images_identity
from evalvae.metrics.base import SetStates, features_identity
from evalvae.metrics.frechet import FeatureStats
from evalvae.store import Store, digest

log = logging.getLogger(__name__)
FORMAT = 1
FOLDER = "refstats"  # under the cache directory
# Of what an entry holds: 2, every image its key names (an entry written by a run whose VAE left some
# images out held only the others). Part of the stored key, so entries of another version are recomputed.
COVERAGE = 2


def reference_key(dataset_fingerprint: str, geometry: dict, extractor: dict) -> str:
    """sha256 of what the originals' features are of: the files' content, the geometry and the extractor.

    ``metrics.json`` records it (``reference.key``): runs whose keys are equal scored the same images
    alike, whatever software computed them.
    """
    return digest({"format": FORMAT, "dataset": dataset_fingerprint, "geometry": geometry, "extractor": extractor})


def stored_key(content_key: str, metric) -> str:
    """The cache entry's key: :func:`reference_key` and the code that computes the statistics, the version
    of evalvae's image decoding and of ``metric``'s features, and their libraries' versions."""
    return digest({"content": content_key, **_code(metric)})


def _code(metric) -> dict:
    return {"decoding": images_identity(), "features": features_identity(metric), "coverage": COVERAGE}


def load_stats(store: Store, key: str) -> FeatureStats | None:
    """The statistics stored under ``key``, or None (missing, or damaged and deleted)."""
    got = store.read(key)
    if got is None:
        return None
    tensors, meta = got
    stats = FeatureStats(int(tensors["total"].shape[0]), keep_features="features" in tensors)
    stats.n, stats.total, stats.outer = int(meta["n"]), tensors["total"].numpy(), tensors["outer"].numpy()
    stats.chunks = [tensors["features"].numpy()] if stats.keep_features else []
    stats.index_chunks = [tensors["index"].numpy()] if "index" in tensors else None
    return stats


def save_stats(store: Store, key: str, stats: FeatureStats, description: dict) -> Path:
    tensors = {"total": stats.total, "outer": stats.outer}
    if stats.keep_features:
        tensors["features"] = stats.features
    if stats.index is not None:
        tensors["index"] = stats.index
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    return store.write(key, tensors, {"n": stats.n, "description": json.dumps(description, default=str)})


class References:
    """Reference statistics of one dataset for each set-level metric: from the cache, or computed once."""

    def __init__(self, cache_root: str | Path, dataset):
        self.store, self.dataset = Store(Path(cache_root) / FOLDER), dataset
        self.stats: dict[tuple[str, int | None], FeatureStats] = {}  # (metric key, crop) -> statistics
        self.info: dict[str, dict] = {}

    def crop_multiple(self, multiple: int | None) -> int | None:
        """The crop to ``multiple`` that changes the dataset's images, or None where it is a no-op (or not asked for)."""
        geometry = self.dataset.geometry
        if multiple is None or multiple <= 1 or (geometry.crop == "center" and geometry.resolution % multiple == 0):
            return None
        return int(multiple)

    def geometry(self, multiple: int | None = None) -> dict:
        """The reference images' geometry: the dataset's, plus ``crop_multiple`` where that crop changes them."""
        m = self.crop_multiple(multiple)
        return {**self.dataset.geometry.describe(), **({"crop_multiple": m} if m else {})}

    def content_key(self, metric, multiple: int | None = None) -> str:
        """What the statistics are of (:func:`reference_key`), as ``metrics.json`` records it."""
        return reference_key(self.dataset.fingerprint(), self.geometry(multiple), metric.reference_identity())

    def key(self, metric, multiple: int | None = None) -> str:
        """The cache entry's key (:func:`stored_key`)."""
        return stored_key(self.content_key(metric, multiple), metric)

    def _info(self, metric, source: str, n: int, path: Path, multiple: int | None) -> dict:
        m = self.crop_multiple(multiple)
        key = self.content_key(metric, multiple)
        return {"key": key, "source": source, "n": n, "path": str(path), **({"crop_multiple": m} if m else {})}

    def get(self, metric, multiple: int | None = None) -> FeatureStats | None:
        """Cached statistics for ``metric``'s extractor on the originals cropped to ``multiple``, or None if they must be computed."""
        slot = (metric.key, self.crop_multiple(multiple))
        if slot not in self.stats:
            key = self.key(metric, multiple)
            stats = load_stats(self.store, key)
            if stats is None:
                return None
            if getattr(metric, "keeps_features", False) and not stats.keep_features:
                log.info(
                    "reference statistics for %s: the cached entry has no features (written with kid=false); "
                    "recomputing it with them",
                    metric.extractor.name,
                )
                return None
            if stats.keep_features and stats.index is None:
                log.info(
                    "reference statistics for %s: the cached entry's features carry no image positions, by which "
                    "the paired KID pairs and a VAE's subset of the images is taken; recomputing it with them",
                    metric.extractor.name,
                )
                return None
            self.stats[slot] = stats
            self.info[metric.extractor.name] = self._info(metric, "cache", stats.n, self.store.path(key), multiple)
            log.info("reference statistics for %s: cache hit (%d images)", metric.extractor.name, stats.n)
        return self.stats[slot]

    def missing(self, metrics: list, multiple: int | None = None) -> SetStates:
        """Empty states of the metrics whose reference (cropped to ``multiple``) is not cached."""
        return SetStates([m for m in metrics if self.get(m, multiple) is None])

    def compute(self, metrics: list, loader, on_batch=None, multiple: int | None = None) -> int:
        """Fill the cache for every metric it lacks from one pass over ``loader``, each image centre-cropped to
        ``multiple`` as a VAE of that downsampling factor crops it; the images seen (0 if all were cached)."""
        todo = [m for m in metrics if self.get(m, multiple) is None]
        if not todo:
            return 0
        states = self.missing(todo, multiple)
        for batch in loader:
            for group in batch.groups:
                if multiple and below_factor(*group.images.shape[-2:], multiple):
                    continue  # no crop to the multiple: a VAE of that factor skips these images too
                states.update(crop_to_multiple(group.images, multiple) if multiple else group.images, group.indices)
            if on_batch is not None:
                on_batch(batch)
        self.put_all(states, multiple)
        return states.n

    def put_all(self, states: SetStates, multiple: int | None = None) -> None:
        for m in states.metrics:
            self.put(m, states[m], multiple)

    def put(self, metric, stats: FeatureStats, multiple: int | None = None) -> None:
        key = self.key(metric, multiple)
        description = {
            "dataset": self.dataset.describe(),
            "geometry": self.geometry(multiple),
            "fingerprint": self.dataset.fingerprint(),
            "extractor": metric.extractor.identity(),
            "code": _code(metric),
            "n": stats.n,
        }
        path = save_stats(self.store, key, stats, description)
        self.stats[(metric.key, self.crop_multiple(multiple))] = stats
        self.info[metric.extractor.name] = self._info(metric, "computed", stats.n, path, multiple)
        log.info(
            "reference statistics for %s: computed from %d images, cached at %s", metric.extractor.name, stats.n, path
        )
