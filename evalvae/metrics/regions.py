"""Region metrics: scores of the regions of an image (text lines, faces), binned by their size.

A :class:`RegionMetric` finds :class:`~evalvae.vocab.Region` s on the original (or takes the dataset's ground
truth), scores each region of the reconstruction against the same region of the original, and
returns per image the mean of each value over the image's regions (NaN where it has none, so an
image without regions is counted but never averaged in), a count of its regions (a per-image
fact, not a metric), and one record per region under :data:`REGIONS` for ``per_region.parquet``
and ``summary_by_region_size.csv``. Regions are binned by :class:`SizeBins` on ``size_px``.

Coordinates are pixels of the image as the VAE saw it (after the protocol's resize and crop, and
the crop to the VAE's downsampling factor). Nothing here does I/O.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from evalvae.errors import ConfigError
from evalvae.metrics.base import PairMetric
from evalvae.vocab import Region

REGIONS = "regions"  # the key of a row's per-region records (split off into per_region.parquet)


def shift_all(regions: Sequence[Region] | None, dx: float, dy: float) -> list[Region] | None:
    """``regions`` moved by ``(dx, dy)`` (the crop of an image to a multiple moves its origin)."""
    return None if regions is None else [r.shifted(dx, dy) for r in regions]


def to_hwc_u8(images: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` float pixels in [0, 255] -> ``(N, H, W, 3)`` uint8 RGB, rounded (detectors read 8-bit images)."""
    return images.detach().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _edge(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class SizeBins:
    """Bins of region size by increasing ``edges``: ``(8, 16, 32)`` -> ``<8``, ``8–16``, ``16–32``, ``≥32``.

    A size equal to an edge falls in the bin above it (bins are ``[low, high)``).
    """

    edges: tuple[float, ...]

    def __post_init__(self):
        e = tuple(float(v) for v in self.edges)
        if not e or any(not math.isfinite(v) or v <= 0 for v in e) or list(e) != sorted(set(e)):
            raise ConfigError("bins", list(self.edges), hint="increasing positive sizes in pixels, such as [8, 16, 32]")
        object.__setattr__(self, "edges", e)

    @property
    def labels(self) -> list[str]:
        e = self.edges
        inner = [f"{_edge(a)}–{_edge(b)}" for a, b in zip(e, e[1:])]
        return [f"<{_edge(e[0])}", *inner, f"≥{_edge(e[-1])}"]

    def bin_of(self, size: float) -> str:
        """The label of the bin ``size`` falls in."""
        return self.labels[sum(size >= edge for edge in self.edges)]

    def describe(self) -> dict:
        return {"edges_px": list(self.edges), "labels": self.labels, "intervals": "[low, high) in pixels"}


def mean_or_nan(values: Sequence[float]) -> float:
    """The mean of ``values`` ignoring NaN; NaN when none is left."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(sum(kept) / len(kept)) if kept else math.nan


class RegionMetric(PairMetric):
    """A per-image metric over the regions of each image, with several result columns.

    A subclass declares ``kind`` (the records' ``metric``, such as ``text``), ``infos`` and ``bins``,
    and implements :meth:`score_regions`. Its infos are of the per-image values (each the mean of the
    records' value of that name over the image's regions) and of one fact (``summarised`` false: no
    direction, not a quality), the number of the image's regions. Called as a :class:`PairMetric`, it
    returns a dict of columns, one per info, and the records under :data:`REGIONS`:
    ``{name: (N,) float64, ..., REGIONS: [records of image 0, ...]}``.
    ``truth`` (per image, a list of :class:`Region`, or None where the dataset gives none) replaces
    detection where given.
    """

    kind: ClassVar[str]
    takes_truth = True  # the loop passes the dataset's ground-truth regions (``Group.truth``)
    bins: SizeBins

    @property
    def key(self) -> str:
        return self.kind

    @abstractmethod
    def score_regions(
        self, original: torch.Tensor, reconstruction: torch.Tensor, truth: list[list[Region] | None]
    ) -> list[list[dict]]:
        """Per image, one record per region: ``size_px``, ``box`` and a value per result name (NaN where undefined),
        plus any strings; ``metric`` and ``bin`` are added here."""

    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor, truth=None) -> dict:
        n = len(original)
        truth = list(truth) if truth is not None else [None] * n
        records = [
            [{"metric": self.kind, "bin": self.bins.bin_of(r["size_px"]), **r} for r in image]
            for image in self.score_regions(original, reconstruction, truth)
        ]
        columns = {
            i.name: [
                mean_or_nan([r.get(i.name, math.nan) for r in image]) if i.summarised else len(image)
                for image in records
            ]
            for i in self.infos
        }
        values = {k: torch.tensor(v, dtype=torch.float64).reshape(n).to(original.device) for k, v in columns.items()}
        return {**values, REGIONS: records}
