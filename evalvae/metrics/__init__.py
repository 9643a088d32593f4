"""Metrics built from ``cfg.metrics``: per-image (PSNR, SSIM, LPIPS) and set-level (rFID, KID)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from evalvae.config import instantiate
from evalvae.metrics.base import PairMetric, from_uint8, to_pixels
from evalvae.metrics.features import MetricUnavailable

__all__ = ["PairMetric", "Unavailable", "build_metrics", "from_uint8", "to_pixels"]
log = logging.getLogger(__name__)


@dataclass
class Unavailable:
    """A metric whose weights are missing: NaN values and the reason, never a number from random weights."""

    key: str
    names: list[str]
    reason: str
    set_level: bool = False
    higher_is_better: bool = False

    @property
    def name(self) -> str:
        return self.names[0]

    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        return torch.full((len(original),), math.nan, dtype=torch.float64)

    def protocol(self) -> dict:
        return {"available": False, "reason": self.reason}


def _names(key: str, spec: DictConfig) -> tuple[list[str], bool]:
    """Result names of a metric spec without building it (for the unavailable case)."""
    if spec._target_.endswith("FIDKID"):
        return (["rfid", "kid"] if spec.get("kid", True) else ["rfid"]), True
    return [key], False


def build_metrics(cfg: DictConfig, set_level_only: bool = False) -> list:
    """Instantiate every entry of ``cfg.metrics`` that has a ``_target_``, in config order.

    A metric whose weights cannot be found becomes :class:`Unavailable` and the run goes on.
    """
    metrics = []
    for key, spec in cfg.items():
        if not (isinstance(spec, DictConfig) and "_target_" in spec):
            continue
        if set_level_only and not _names(key, spec)[1]:
            continue
        try:
            metrics.append(instantiate(spec))
        except MetricUnavailable as e:
            names, set_level = _names(key, spec)
            log.warning("%s unavailable: %s", "/".join(names), e)
            metrics.append(Unavailable(key, names, str(e), set_level))
    return metrics
