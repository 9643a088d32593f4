"""Metrics: per-image full-reference metrics built from ``cfg.metrics``."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from evalvae.metrics.base import PairMetric, from_uint8, to_pixels

__all__ = ["PairMetric", "build_metrics", "from_uint8", "to_pixels"]


def build_metrics(cfg: DictConfig) -> list[PairMetric]:
    """Instantiate every entry of ``cfg.metrics`` that has a ``_target_``, in config order."""
    metrics = []
    for key, spec in cfg.items():
        if isinstance(spec, DictConfig) and "_target_" in spec:
            metrics.append(instantiate(spec))
    return metrics
