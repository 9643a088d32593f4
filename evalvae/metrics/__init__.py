"""Metrics built from ``cfg.metrics``: per-image (PSNR, SSIM, LPIPS) and set-level (rFID, KID).

Importing the package loads neither torch nor a metric library (``compare`` reads
:mod:`evalvae.metrics.info` without them); the metric modules load them when used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from evalvae.config import instantiate
from evalvae.metrics.info import MetricInfo, info_of

if TYPE_CHECKING:
    import torch

__all__ = [
    "MetricSet",
    "PairMetric",
    "Unavailable",
    "build_metrics",
    "fact_columns",
    "from_uint8",
    "result_columns",
    "split_metrics",
    "to_pixels",
    "unavailable",
]
log = logging.getLogger(__name__)
_BASE = ("PairMetric", "from_uint8", "to_pixels")  # from evalvae.metrics.base (torch), on first use


def __getattr__(name: str):
    if name in _BASE:
        from evalvae.metrics import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Unavailable:
    """A metric whose weights are missing: NaN values and the reason, never a number from random weights.

    ``infos`` is the info of its result names, as the metric's class declares it.
    """

    key: str
    names: list[str]
    reason: str
    set_level: bool = False
    infos: tuple[MetricInfo, ...] = ()

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def note(self) -> str:
        return self.reason

    @property
    def higher_is_better(self) -> bool | None:
        return info_of(self).higher_is_better

    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.full((len(original),), math.nan, dtype=torch.float64)

    def protocol(self) -> dict:
        return {"available": False, "reason": self.reason}

    def nan_rows(self, rename: Callable[[str], str] = str) -> list[dict]:
        """Set-level summary rows: NaN values, n=0 and the reason, one per result name."""
        return [
            {"metric": rename(k), "mean": math.nan, "std": math.nan, "n": 0, "note": self.reason} for k in self.names
        ]


@dataclass
class MetricSet:
    """Built metrics by role: per-image, set-level, and set-level ones reported as unavailable."""

    pair: list = field(default_factory=list)
    sets: list = field(default_factory=list)
    unavailable_sets: list = field(default_factory=list)


def split_metrics(metrics: list) -> MetricSet:
    out = MetricSet()
    for m in metrics:
        if not m.set_level:
            out.pair.append(m)
        else:
            (out.unavailable_sets if isinstance(m, Unavailable) else out.sets).append(m)
    return out


def result_columns(metric) -> list[str]:
    """The per-image columns a per-image metric's values go into: its ``names`` where it has several
    (a region metric, :mod:`evalvae.metrics.regions`), else its ``name``."""
    return list(getattr(metric, "names", None) or [metric.name])


def fact_columns(metric) -> list[str]:
    """Per-image columns a metric writes that are facts, not scores (a region metric's region count)."""
    count = getattr(metric, "count_name", None)
    return [count] if count else []


def _names(key: str, spec: DictConfig) -> tuple[list[str], bool]:
    """Result names of a metric spec without building it (for the unavailable case), and whether it is set-level."""
    cls = get_class(spec._target_)
    set_level = bool(getattr(cls, "set_level", False))
    if set_level or hasattr(cls, "result_names"):  # set-level metrics, and per-image ones with several columns
        kwargs = {k: v for k, v in OmegaConf.to_container(spec, resolve=True).items() if k != "_target_"}
        return cls.result_names(**kwargs), set_level
    return [key], False


def unavailable(key: str, spec: DictConfig, reason: str) -> Unavailable:
    """The stand-in of the metric ``spec`` describes, with its result names and their info from its class (not built)."""
    names, set_level = _names(key, spec)
    cls = get_class(spec._target_)
    return Unavailable(key, names, reason, set_level, tuple(info_of(cls, n) for n in names))


def build_metrics(cfg: DictConfig, set_level_only: bool = False) -> list:
    """Instantiate every entry of ``cfg.metrics`` that has a ``_target_``, in config order.

    A metric whose weights cannot be found becomes :class:`Unavailable` and the run goes on.
    """
    from evalvae.metrics.weights import MetricUnavailable

    metrics = []
    for key, spec in cfg.items():
        if not (isinstance(spec, DictConfig) and "_target_" in spec):
            continue
        if set_level_only and not _names(key, spec)[1]:
            continue
        try:
            metrics.append(instantiate(spec))
        except MetricUnavailable as e:
            metrics.append(unavailable(key, spec, str(e)))
            log.warning("%s unavailable: %s", "/".join(metrics[-1].names), e)
    return metrics
