"""``ref(cfg)``: compute and cache the originals' feature statistics before any VAE runs.

The statistics are of the originals as a VAE with downsampling factor ``crop_multiple`` (default
8, every shipped VAE's but dc-ae-f32c32's 32) sees them: centre-cropped to a multiple of it. Under the default square
protocol at a resolution divisible by it the crop changes nothing and one entry serves every
factor; with ``dataset.crop=none`` a VAE of another factor needs ``crop_multiple`` set to it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pandas as pd
from omegaconf import DictConfig

from evalvae.config import instantiate
from evalvae.data import make_loader
from evalvae.device import resolve_device
from evalvae.errors import EvalvaeError
from evalvae.io import cache_dir
from evalvae.jobs.failures import unavailable_metrics
from evalvae.jobs.runtime import RunOutcome, loader_workers, progress_bar
from evalvae.jobs.task import Task
from evalvae.metrics import Unavailable, build_metrics
from evalvae.metrics.refstats import FOLDER, References

log = logging.getLogger(__name__)


@dataclass
class RefOutcome(RunOutcome):
    """``out_dir``: the cache folder the statistics went to; ``info``: what was done per extractor (:func:`ref`'s answer)."""

    info: dict[str, dict] = field(default_factory=dict)


class RefTask(Task):
    """``evalvae ref``: the originals' statistics for every available set-level metric, into the cache."""

    name = "ref"

    def run(self) -> RefOutcome:
        metrics = build_metrics(self.cfg.metrics, set_level_only=True)
        info = ref(self.cfg, metrics)
        stored = cache_dir(self.cfg.cache_dir) / FOLDER  # where its results go
        return RefOutcome(stored, pd.DataFrame(), missing=unavailable_metrics(metrics), info=info)


def ref(cfg: DictConfig, metrics: list | None = None) -> dict[str, dict]:
    """Cache reference statistics for every available set-level metric (``metrics``: those built from
    ``cfg.metrics`` already); return what was done per extractor."""
    device = resolve_device(cfg.device)
    dataset = instantiate(cfg.dataset)
    metrics = build_metrics(cfg.metrics, set_level_only=True) if metrics is None else metrics
    usable = [m for m in metrics if not isinstance(m, Unavailable)]
    if not usable:
        reasons = "; ".join(m.reason for m in metrics) or "metrics has no set-level metric (use metrics=all)"
        raise EvalvaeError(f"no reference statistics to compute: {reasons}")
    refs = References(cache_dir(cfg.cache_dir), dataset)
    multiple = int(cfg.crop_multiple)  # checked by the schema
    dataset.geometry.check_factor(multiple, f"crop_multiple={multiple}")
    for m in usable:
        m.extractor.to(device)
    start = time.perf_counter()
    loader = make_loader(dataset, cfg.batch_size, loader_workers(cfg.workers), device)
    with progress_bar(cfg.progress, len(dataset), "reference") as bar:
        n = refs.compute(
            usable, loader, on_batch=lambda batch: bar.update(batch.n_images + len(batch.skipped)), multiple=multiple
        )
    if n:
        elapsed = time.perf_counter() - start
        log.info("features of %d images in %.1f s (%.1f ms/image)", n, elapsed, 1000 * elapsed / n)
    return refs.info
