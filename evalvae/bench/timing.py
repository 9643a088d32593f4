"""Timing one operation: warm-up calls, then repeats; median and interquartile range."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from evalvae.device import synchronize


@dataclass
class Timing:
    seconds: list[float]  # one per timed call, after the warm-up
    first_call_s: float  # the very first call (warm-up or not): lazy init, autotuning, compilation
    output: object  # what the last call returned


def timed_call(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Seconds one call of ``fn`` takes on ``device``, and its result.

    On CUDA the span is measured with device events after the queue is drained, so it covers
    the kernels and any launch gaps between them; elsewhere with ``perf_counter`` around a
    synchronised call.
    """
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0, out
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def time_calls(
    fn: Callable[[], object], device, *, warmup: int, repeats: int, min_repeats=1, max_seconds=None
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then time up to ``repeats`` calls.

    Repeating stops early once ``min_repeats`` calls are timed and the timed calls have taken
    ``max_seconds`` in total, so slow configurations keep the grid's wall time bounded. Each
    result is released before the next call, so peak memory holds one output, not two.
    """
    first = None
    for _ in range(warmup):
        seconds, out = timed_call(fn, device)
        del out
        first = seconds if first is None else first
    samples: list[float] = []
    out = None
    while len(samples) < repeats:
        out = None
        seconds, out = timed_call(fn, device)
        samples.append(seconds)
        first = seconds if first is None else first
        if max_seconds is not None and len(samples) >= min_repeats and sum(samples) >= max_seconds:
            break
    return Timing(samples, first, out)


def median_iqr(values: list[float]) -> tuple[float, float]:
    """Median and interquartile range (75th - 25th percentile, linear interpolation)."""
    a = np.asarray(values, dtype=np.float64)
    q25, q50, q75 = np.percentile(a, [25, 50, 75])
    return float(q50), float(q75 - q25)
