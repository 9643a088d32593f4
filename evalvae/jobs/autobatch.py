"""``batch_size=auto``: the largest batch whose work fits the device's memory, measured, not guessed.

The peak memory of one batch's work (encode, decode, the per-image metrics and the feature networks) grows
linearly with the images in it: ``peak(n) = fixed + n * per_image``, ``fixed`` holding the weights, the
workspaces and the allocator's blocks. Two measured batches (1 and 2 images, :func:`measure`) give both terms,
and :func:`fit` the largest ``n`` whose estimate stays within a share of the memory the job may use. Only
CUDA reports peaks; elsewhere ``auto`` is :data:`DEFAULT`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

DEFAULT = 8  # batch_size=auto where memory cannot be measured (CPU, MPS), and where measuring failed
SHARE = 0.8  # of the memory the job may use: the rest for the allocator's fragmentation and the loader's batches
MOST = 256  # beyond this, a larger batch buys no throughput on any current GPU


@dataclass(frozen=True)
class Fit:
    batch_size: int
    fixed_mb: float
    per_image_mb: float
    budget_mb: float

    def describe(self) -> str:
        return (
            f"batch_size=auto: {self.batch_size} ({self.per_image_mb:.0f} MiB per image over {self.fixed_mb:.0f} MiB, "
            f"within {self.budget_mb:.0f} MiB)"
        )


def fit(fixed: float, per_image: float, budget: float, *, most: int = MOST) -> int:
    """The largest batch ``n`` with ``fixed + n * per_image <= budget`` (bytes), from 1 to ``most``; a multiple of
    8 from 8 up (the shapes tensor cores and cuDNN's kernels are tuned for)."""
    if per_image <= 0:
        return most
    n = int((budget - fixed) // per_image)
    n = max(1, min(most, n))
    return n - n % 8 if n >= 8 else n


def measure(work: Callable[[int], None], device: torch.device) -> tuple[float, float]:
    """``(fixed, per_image)`` in bytes: the peak memory of ``work(1)`` and ``work(2)`` on ``device`` (CUDA)."""
    peaks = []
    for n in (1, 2):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        work(n)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device))
    per_image = max(peaks[1] - peaks[0], 1)
    return peaks[0] - per_image, per_image


def budget(device: torch.device) -> float:
    """Bytes the job may use on ``device``: a share of what is free plus what torch already holds."""
    free, total = torch.cuda.mem_get_info(device)
    return SHARE * min(total, free + torch.cuda.memory_reserved(device))


def measurable(device: torch.device) -> bool:
    """Whether peak memory is measured on ``device`` (CUDA's allocator reports it)."""
    return device.type == "cuda"


def auto_batch_size(work: Callable[[int], None], device: torch.device, *, most: int = MOST) -> Fit | None:
    """The :class:`Fit` of ``work`` on ``device``; None where memory is not measured (not CUDA)."""
    if not measurable(device):
        return None
    fixed, per_image = measure(work, device)
    room = budget(device)
    n = fit(fixed, per_image, room, most=most)
    return Fit(n, fixed / 2**20, per_image / 2**20, room / 2**20)
