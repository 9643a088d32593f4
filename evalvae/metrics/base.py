"""What every metric shares: the pixel convention and the per-image interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from evalvae.metrics.info import MetricInfo


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
    """A full-reference metric scored per image: ``(original, reconstruction) -> (N,) float64``.

    Both inputs are ``(N, 3, H, W)`` float64 pixels in [0, 255] on the same device. A subclass
    declares ``info`` (:class:`~evalvae.metrics.info.MetricInfo`); its ``name`` (the result
    column) and ``higher_is_better`` follow from it.
    """

    info: ClassVar[MetricInfo]
    name: str
    higher_is_better: bool
    set_level = False
    note = ""  # a caveat for summary.csv's note, such as non-standard weights

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "info" in cls.__dict__:
            cls.name, cls.higher_is_better = cls.info.name, cls.info.higher_is_better

    @abstractmethod
    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def protocol(self) -> dict:
        """How the value is computed: implementation, parameters, input range."""
