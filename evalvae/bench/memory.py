"""Peak memory of one measured span, on whichever device runs it.

* CUDA: ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``) since the last reset:
  weights, inputs, activations and outputs held by PyTorch's allocator.
* CPU on Linux: the process's peak resident set size (``VmHWM``), which writing ``5`` to
  ``/proc/self/clear_refs`` resets to the current RSS (Linux >= 4.0). It includes the
  interpreter and libraries, so ``mem_before_mb`` (RSS at the start) is reported beside it.
  Before each reset, glibc's ``malloc_trim`` hands freed heap pages back to the kernel;
  otherwise the previous op's freed tensors would still count in the next op's RSS.
* CPU elsewhere: ``getrusage`` peak RSS, which cannot be reset: it covers the whole process,
  which is why the bench runs each configuration in its own process on CPU.
* MPS: no peak counter exists; reported as NaN.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from pathlib import Path

import torch

from evalvae.device import peak_memory_mb, release_memory, reset_peak_memory

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim this way
        ctypes.CDLL(None).malloc_trim(0)


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """Reset, then read the peak: ``probe.reset(); ...; probe.peak_mb()``."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.metric = "cuda_max_allocated"
        elif device.type == "cpu" and _status_kib("VmHWM") is not None and _reset_hwm():
            self.metric = "rss_peak"
        elif device.type == "cpu":
            self.metric = "rss_peak_process"
        else:
            self.metric = "unavailable"

    def reset(self) -> None:
        """Free what can be freed and start a new peak."""
        release_memory(self.device)
        if self.device.type == "cuda":
            reset_peak_memory(self.device)
        elif self.metric == "rss_peak":
            _malloc_trim()
            _reset_hwm()

    def current_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        if self.device.type == "cpu":
            rss = _status_kib("VmRSS")
            return rss / 1024 if rss is not None else math.nan
        return math.nan

    def peak_mb(self) -> float:
        if self.metric == "rss_peak":
            return _status_kib("VmHWM") / 1024
        if self.metric == "unavailable":
            return math.nan
        return peak_memory_mb(self.device)  # CUDA's max allocated, or this process's peak RSS

    def peak_reserved_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_reserved(self.device) / 2**20
        return math.nan
