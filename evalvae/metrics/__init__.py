"""Metrics built from ``cfg.metrics``: per-image (PSNR, SSIM, LPIPS) and set-level (rFID, KID).

Importing the package loads neither torch nor a metric library (``compare`` reads
:mod:`evalvae.metrics.info` without them); the metric modules load them when used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from hydra.utils import get_class
from omegaconf import DictConfig

from evalvae.config import instantiate
from evalvae.metrics.info import MetricInfo, registered

if TYPE_CHECKING:
    import torch

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

    ``infos`` is the info of its results, as the registry or the metric's class declares them; ``key``
    is its key in ``cfg.metrics``.
    """

    key: str
    reason: str
    infos: tuple[MetricInfo, ...]
    set_level: bool = False
    takes_truth: ClassVar[bool] = False
    min_side: ClassVar[int] = 1
    version: ClassVar[int] = 1
    libraries: ClassVar[tuple[str, ...]] = ("torch",)

    @property
    def note(self) -> str:
        return self.reason

    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        nan = (len(original),), math.nan
        return {i.name: torch.full(*nan, dtype=torch.float64, device=original.device) for i in self.infos}

    def protocol(self) -> dict:
        return {"available": False, "reason": self.reason}

    def nan_rows(self, rename: Callable[[str], str] = str) -> list[dict]:
        """Set-level summary rows: NaN values, n=0 and the reason, one per result."""
        return [
            {"metric": rename(i.name), "mean": math.nan, "std": math.nan, "n": 0, "note": self.reason}
            for i in self.infos
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
    """The results of a metric that ``summary.csv`` summarises (every declared info but the facts without a
    direction: :attr:`~evalvae.metrics.info.MetricInfo.summarised`)."""
    return [i.name for i in metric.infos if i.summarised]


def fact_columns(metric) -> list[str]:
    """The per-image columns of a metric that are facts, never summarised (a region metric's region count)."""
    return [i.name for i in metric.infos if not i.summarised]


def declared(spec: DictConfig) -> tuple[tuple[MetricInfo, ...], bool]:
    """The infos of the results the metric of ``spec`` produces, and whether it is set-level, without building
    it: from the registry (:data:`~evalvae.metrics.info.METRICS`, nothing imported), else from its class."""
    entry = registered(spec._target_)
    if entry is not None:
        return entry.infos_for(spec), entry.set_level
    cls = get_class(spec._target_)
    return tuple(cls.infos), bool(cls.set_level)


def unavailable(key: str, spec: DictConfig, reason: str) -> Unavailable:
    """The stand-in of the metric ``spec`` describes, with the infos of its results (not built)."""
    infos, set_level = declared(spec)
    return Unavailable(key, reason, infos, set_level)


def build_metrics(cfg: DictConfig, set_level_only: bool = False) -> list:
    """Instantiate every entry of ``cfg.metrics`` that has a ``_target_``, in config order.

    A metric whose weights cannot be found becomes :class:`Unavailable` and the run goes on.
    """
    from evalvae.metrics.weights import MetricUnavailable

    metrics = []
    for key, spec in cfg.items():
        if not (isinstance(spec, DictConfig) and "_target_" in spec):
            continue
        if set_level_only and not declared(spec)[1]:
            continue
        try:
            metrics.append(instantiate(spec))
        except MetricUnavailable as e:
            metrics.append(unavailable(key, spec, str(e)))
            log.warning("%s unavailable: %s", "/".join(result_columns(metrics[-1])), e)
    return metrics
