"""What every metric shares: the pixel convention, the per-image interface and the set-level contract.

Every metric declares ``infos``, a :class:`~evalvae.metrics.info.MetricInfo` per result it produces,
and returns its values as a dict keyed by those names: per image, ``{name: (N,) float64}``
(:class:`PairMetric`); of a set, ``{name: {mean, std, n, note}}`` (:meth:`SetMetric.compute`).

A set-level metric (:class:`SetMetric`) is modelled on torchmetrics' ``Metric``, with the state
kept outside the metric so that one metric object serves every VAE of a run: ``new_state()`` makes
an empty state, ``update(state, images)`` adds a batch, ``compute(reference, state)`` gives the
results. ``features(images)`` and ``add(state, features)`` are the two halves of ``update``, so
per-item features can be stored (resume) or computed on another process (sharding) and added later;
states also ``merge``. :meth:`SetMetric.reference_identity` is what the originals' statistics depend
on, the key of their cache. :class:`SetStates` holds one image set's states of every metric.

Every metric declares a ``version`` of its code and the ``libraries`` that compute it; the keys of
stored results hold both (:func:`pair_identity`, :func:`features_identity`), so a change that moves
a metric's numbers, with its version bumped, or another version of one of its libraries, is
recomputed, never served from a cache. A set-level metric's stored values are its features, so
their keys hold the features' version (``features_version``); ``version`` covers ``compute``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import torch

from evalvae.metrics.info import MetricInfo
from evalvae.provenance import versions

INDEX = "#index"  # the key of the images' dataset positions among stored features (never a metric's key)


def to_pixels(images: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Images nominally in [-1, 1] -> float64 pixels in [0, 255].

    ``round(clamp((x + 1) / 2, 0, 1) * 255)`` when ``quantize`` (what saving an 8-bit PNG gives);
    otherwise the clamped value without rounding.
    """
    x = ((images.double() + 1) * 0.5).clamp_(0, 1).mul_(255)
    return x.round_() if quantize else x


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1], the model input convention."""
    return images.float().div_(127.5).sub_(1)


class PairMetric(ABC):
    """A full-reference metric scored per image: ``(original, reconstruction) -> {result name: (N,) float64}``.

    Both inputs are ``(N, 3, H, W)`` float64 pixels in [0, 255] on the same device; the values are on
    that device, one tensor per declared info (``infos``, :class:`~evalvae.metrics.info.MetricInfo`),
    keyed by its name. An image's values do not depend on the other images of its batch.
    """

    infos: ClassVar[tuple[MetricInfo, ...]]
    set_level = False
    takes_truth = False  # whether __call__ takes the dataset's ground-truth regions (``truth=``)
    note = ""  # a caveat for summary.csv's note, such as non-standard weights
    # The smallest image side, in pixels, the metric is defined on. ``__call__`` returns NaN for images
    # with a side below it (``too_small``, ``undefined``), and summary.csv's note counts them (``size_note``).
    min_side: int = 1
    # Bump with any change that moves this metric's values: results stored under the old one are recomputed.
    version: ClassVar[int] = 1
    # The packages (as pip names them) whose versions can move its values: part of the same keys.
    libraries: ClassVar[tuple[str, ...]] = ("torch",)

    @property
    def key(self) -> str:
        """The name its stored values go under in result keys: its first result's."""
        return self.infos[0].name

    def too_small(self, images: torch.Tensor) -> bool:
        """Whether ``(N, 3, H, W)`` images have a side below :attr:`min_side`."""
        return min(images.shape[-2:]) < self.min_side

    def undefined(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(N,)`` float64 NaN on the images' device for every result: the values of images the metric is not
        defined on."""
        nan = torch.full((len(images),), float("nan"), dtype=torch.float64, device=images.device)
        return {i.name: nan.clone() for i in self.infos}

    def size_note(self, count: int) -> str:
        """summary.csv's note for ``count`` images with a side below :attr:`min_side` (no value), or ``""``."""
        if not count:
            return ""
        return f"{count} image(s) with a side below {self.min_side} px have no {self.infos[0].title} ({self.min_side_reason})"

    @property
    def min_side_reason(self) -> str:
        """Why images below :attr:`min_side` have no value."""
        return "too small for the metric"

    @abstractmethod
    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def protocol(self) -> dict:
        """How the value is computed: implementation, parameters, input range."""

    def ran(self, device) -> dict:
        """What ``metrics.json`` records of how this run computed the values beyond :meth:`protocol` (such
        as the backend ``auto`` chose on ``device``, the device the run scores on); not part of any key."""
        return {}


class SetMetric(ABC):
    """A metric of a set of reconstructions against the set of originals (rFID, KID).

    ``infos`` declares the :class:`~evalvae.metrics.info.MetricInfo` of every result it produces;
    :meth:`compute` returns a row per declared name. ``state`` objects must support ``merge``.
    """

    infos: tuple[MetricInfo, ...]
    set_level = True
    note = ""
    version: ClassVar[int] = 1  # of compute(): bump with any change that moves the values computed from features
    features_version: ClassVar[int] = 1  # of features(): bump with any change that moves the features
    libraries: ClassVar[tuple[str, ...]] = ("torch",)  # the packages whose versions can move the features

    @abstractmethod
    def new_state(self): ...

    @abstractmethod
    def features(self, images_u8: torch.Tensor):
        """Per-item features of ``(N, 3, H, W)`` uint8 images, as a float array ``(N, D)``."""

    @abstractmethod
    def add(self, state, features, index=None) -> None:
        """Add per-item ``features`` (from :meth:`features`) to ``state``; ``index``, the items' dataset
        positions, goes with them where the state keeps per-item features (what pairs two sets' items)."""

    def features_on_device(self, images_u8: torch.Tensor) -> torch.Tensor:
        """:meth:`features` as a tensor, left on the device where they were computed (the host by default)."""
        return torch.as_tensor(self.features(images_u8))

    def update(self, state, images_u8: torch.Tensor, index=None):
        """Add a batch of images (at dataset positions ``index``, if known) to ``state``; return their features."""
        f = self.features(images_u8)
        self.add(state, f, index)
        return f

    @abstractmethod
    def compute(self, reference, state) -> dict[str, dict]:
        """``{result name: {mean, std, n, note}}`` of ``state`` against the originals' ``reference`` state,
        one per declared info."""

    @abstractmethod
    def reference_identity(self) -> dict:
        """Everything the originals' statistics depend on besides the images (the feature extractor)."""

    @abstractmethod
    def protocol(self) -> dict:
        """Per result name, how the value is computed."""

    @property
    def key(self) -> str:
        """A stable name for this metric's state in stored chunks and logs."""
        return "+".join(i.name for i in self.infos)


def pair_identity(metric) -> dict:
    """What a per-image metric's stored values depend on besides the images: its protocol, its version and
    its libraries' versions (a result chunk's key)."""
    return {"protocol": metric.protocol(), "version": metric.version, "libraries": versions(metric.libraries)}


def features_identity(metric) -> dict:
    """What a set-level metric's stored features depend on besides the images: :meth:`SetMetric.reference_identity`,
    the features' version and the libraries' versions (the keys of result chunks and of reference statistics)."""
    return {
        "reference": metric.reference_identity(),
        "version": metric.features_version,
        "libraries": versions(metric.libraries),
    }


def recorded(metric, device) -> dict:
    """What ``metrics.json`` records of a metric beyond its protocol: its version(s) and what this run ran
    on ``device`` (the device the run scores on)."""
    if isinstance(metric, PairMetric):
        return {"version": metric.version, **metric.ran(device)}
    if isinstance(metric, SetMetric):
        return {"version": metric.version, "features_version": metric.features_version}
    return {}  # a metric that is unavailable


class SetStates:
    """The states of one image set (one VAE's reconstructions, or the originals) for each set-level metric."""

    def __init__(self, metrics: Iterable[SetMetric]):
        self.metrics = list(metrics)
        self.states = {m.key: m.new_state() for m in self.metrics}

    def __getitem__(self, metric: SetMetric):
        return self.states[metric.key]

    def __bool__(self) -> bool:
        return bool(self.metrics)

    def update(self, images_u8: torch.Tensor, index=None) -> dict:
        """Add a batch (at dataset positions ``index``, if known) to every metric's state; return the
        features by metric key, and the positions under :data:`INDEX`."""
        out = {m.key: m.update(self.states[m.key], images_u8, index) for m in self.metrics}
        if index is not None:
            out[INDEX] = np.asarray(index, np.int64)
        return out

    def extract(self, images_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every metric's features of a batch, by metric key, left on the device (for :meth:`add` once on the host)."""
        return {m.key: m.features_on_device(images_u8) for m in self.metrics}

    def add(self, features: dict) -> None:
        """Add stored features (by metric key, with the positions under :data:`INDEX`, as :meth:`update` returns them)."""
        index = features.get(INDEX)
        for m in self.metrics:
            if m.key in features:
                m.add(self.states[m.key], features[m.key], index)

    def merge(self, other: SetStates) -> SetStates:
        for key, state in other.states.items():
            self.states[key].merge(state)
        return self

    @property
    def n(self) -> int:
        """Images seen (by the first metric; all see the same images)."""
        return self.states[self.metrics[0].key].n if self.metrics else 0
