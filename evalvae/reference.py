"""``ref(cfg)``: compute and cache the originals' feature statistics before any VAE runs."""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig

from evalvae.config import instantiate
from evalvae.data import make_loader
from evalvae.device import resolve_device
from evalvae.errors import EvalvaeError
from evalvae.io import cache_dir
from evalvae.metrics import Unavailable, build_metrics
from evalvae.metrics.refstats import References, ReferenceStore
from evalvae.run import loader_workers, progress_bar

log = logging.getLogger(__name__)


def ref(cfg: DictConfig) -> dict[str, dict]:
    """Cache reference statistics for every available set-level metric; return what was done per extractor."""
    device = resolve_device(cfg.device)
    dataset = instantiate(cfg.dataset)
    metrics = build_metrics(cfg.metrics, set_level_only=True)
    usable = [m for m in metrics if not isinstance(m, Unavailable)]
    if not usable:
        reasons = "; ".join(m.reason for m in metrics) or "metrics has no set-level metric (use metrics=all)"
        raise EvalvaeError(f"no reference statistics to compute: {reasons}")
    refs = References(ReferenceStore(cache_dir(cfg.cache_dir)), dataset)
    todo = [m for m in usable if refs.get(m) is None]
    if todo:
        for m in todo:
            m.extractor.to(device)
        stats = {id(m): m.new_stats() for m in todo}
        start = time.perf_counter()
        loader = make_loader(dataset, cfg.batch_size, loader_workers(cfg.workers), device)
        with progress_bar(cfg.progress, len(dataset), "reference") as bar:
            for batch in loader:
                for group in batch.groups:
                    for m in todo:
                        stats[id(m)].update(m.features(group.images.to(device)))
                bar.update(batch.n_images + len(batch.skipped))
        for m in todo:
            refs.put(m, stats[id(m)])
        elapsed = time.perf_counter() - start
        n = stats[id(todo[0])].n
        log.info("features of %d images in %.1f s (%.1f ms/image for %d extractor(s))", n, elapsed, 1000 * elapsed / max(n, 1), len(todo))
    return refs.info
