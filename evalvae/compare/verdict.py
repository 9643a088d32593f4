"""The numeric core of ``compare``: paired tests and verdicts, on plain numbers (no I/O)."""

from __future__ import annotations

from enum import Enum

import numpy as np

from evalvae.metrics import stats
from evalvae.metrics.info import Tolerance


class Verdict(str, Enum):
    PASS = "pass"  # within tolerance (or within the tie tolerance: float noise)
    NOISE = "within noise"  # beyond tolerance, but not beyond the noise (paired test or IQR)
    IMPROVED = "improved"
    REGRESSED = "regressed"
    NEW = "new"  # only in the current results
    UNMEASURED = "not measured"  # neither side has a value (e.g. both bench runs failed)
    MISSING = "missing"  # in the baseline, absent from the current results
    MISMATCH = "mismatch"  # measured under another protocol: not compared

    @property
    def is_error(self) -> bool:
        """The input cannot be judged (exit 2)."""
        return self in (Verdict.MISSING, Verdict.MISMATCH)


def paired_test(baseline: np.ndarray, current: np.ndarray, tie: Tolerance | None = None) -> stats.Paired | None:
    """The paired test of per-image differences ``current - baseline`` on the same images, the one the
    report uses (:func:`evalvae.metrics.stats.paired`: a two-sided Wilcoxon signed-rank test with
    differences within the tie tolerance counted as 0, and the BCa bootstrap interval of the mean
    difference); ``None`` with fewer than 2 pairs.

    ``tie``: per-image moves within it are no move (the metric's float noise, and the precision a
    baseline keeps its values at); None: only equal values.
    """
    baseline, current = np.asarray(baseline, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if baseline.shape != current.shape or baseline.ndim != 1:
        raise ValueError(
            f"paired values must be two 1-D arrays of one length, got {baseline.shape} and {current.shape}"
        )
    if baseline.size < 2:
        return None
    return stats.paired(current, baseline, None, tie=tie)


def judge(
    delta: float,
    allowed: float,
    higher_is_better: bool,
    *,
    p_value: float | None = None,
    alpha: float | None = None,
    spread: float | None = None,
    tie: float = 0.0,
) -> Verdict:
    """Verdict on a move ``delta = current - baseline``.

    Args:
        allowed: the tolerance, in the metric's unit; a move of at most this much passes.
        tie: the float noise of the metric, in its unit: a move of at most this much is no move,
            whatever the tolerance (a pass, never a regression or an improvement).
        p_value, alpha: a paired test's p-value toward the move; beyond tolerance but with
            ``p_value >= alpha`` the move is within the noise. Either None: the tolerance decides.
        spread: a noise width in the metric's unit (the larger IQR of two timings); a move not
            beyond it is within the noise.
    """
    if abs(delta) <= max(allowed, tie):
        return Verdict.PASS
    if spread is not None and abs(delta) <= spread:
        return Verdict.NOISE
    if p_value is not None and alpha is not None and not p_value < alpha:
        return Verdict.NOISE
    worse = delta < 0 if higher_is_better else delta > 0
    return Verdict.REGRESSED if worse else Verdict.IMPROVED
