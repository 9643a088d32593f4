"""The numeric core of ``compare``: paired tests and verdicts, on plain numbers (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import stats


class Verdict(str, Enum):
    PASS = "pass"  # within tolerance
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


@dataclass(frozen=True)
class PairedTest:
    """Paired t-test of per-image differences ``current - baseline`` on the same images."""

    n: int
    mean_delta: float
    p_value: float  # one-sided, toward the sign of mean_delta


def paired_test(baseline: np.ndarray, current: np.ndarray, resolution: float = 0.0) -> PairedTest | None:
    """One-sided paired t-test toward the observed mean change; ``None`` with fewer than 2 pairs.

    The t-test speaks of the mean, the quantity the tolerance applies to. When every difference is
    the same (spread over no more than ``resolution``, the precision the values are kept at), t is
    undefined: p is 0 for a shift larger than that (every image moved alike) and 1 otherwise.
    """
    baseline, current = np.asarray(baseline, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if baseline.shape != current.shape or baseline.ndim != 1:
        raise ValueError(
            f"paired values must be two 1-D arrays of one length, got {baseline.shape} and {current.shape}"
        )
    d = current - baseline
    n = int(d.size)
    if n < 2:
        return None
    mean = float(d.mean())
    if np.ptp(d) <= resolution:
        return PairedTest(n, mean, 1.0 if abs(mean) <= resolution else 0.0)
    alternative = "greater" if mean > 0 else "less"
    p = float(stats.ttest_rel(current, baseline, alternative=alternative).pvalue)
    return PairedTest(n, mean, p)


def judge(
    delta: float,
    allowed: float,
    higher_is_better: bool,
    *,
    p_value: float | None = None,
    alpha: float | None = None,
    spread: float | None = None,
) -> Verdict:
    """Verdict on a move ``delta = current - baseline``.

    Args:
        allowed: the tolerance, in the metric's unit; a move of at most this much passes.
        p_value, alpha: a paired test's p-value toward the move; beyond tolerance but with
            ``p_value >= alpha`` the move is within the noise. Either None: the tolerance decides.
        spread: a noise width in the metric's unit (the larger IQR of two timings); a move not
            beyond it is within the noise.
    """
    if abs(delta) <= allowed:
        return Verdict.PASS
    if spread is not None and abs(delta) <= spread:
        return Verdict.NOISE
    if p_value is not None and alpha is not None and not p_value < alpha:
        return Verdict.NOISE
    worse = delta < 0 if higher_is_better else delta > 0
    return Verdict.REGRESSED if worse else Verdict.IMPROVED
