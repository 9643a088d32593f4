"""The paired statistics of per-image scores, one method for ``report`` and ``compare``.

Pure numerics on arrays (no I/O, no torch). Two sets of scores of the same images (two VAEs in a
report, a baseline and a new run in ``compare``) are compared through their per-image differences
(a paired design), which removes the image-to-image spread that dominates each set's own interval:

* the difference of means is the mean of the per-image differences, with a BCa bootstrap
  confidence interval (:func:`bootstrap_ci`);
* whether it stands out of the noise is the two-sided Wilcoxon signed-rank test (:func:`wilcoxon_p`).

Per-image differences within the metric's tie tolerance (:attr:`MetricInfo.tie
<evalvae.metrics.info.MetricInfo.tie>`, the float noise of computing the same value twice) count
as 0 in all of them: a tie in the win count, 0 in the mean and its interval, dropped by the test.
So the same VAE at two batch sizes reads Δ = 0, CI [0, 0], p = 1.

The Wilcoxon test cannot go below p = 2 / 2^m on m non-zero differences (0.125 at m = 4, 0.031 at
m = 6): below about six images nothing is significant at 0.05, whatever the data
(:func:`smallest_p`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from evalvae.metrics.info import MetricInfo, Tolerance

CONFIDENCE = 0.95
N_RESAMPLES = 9999
SEED = 0
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


NAN_INTERVAL = Interval(math.nan, math.nan)


def bootstrap_ci(values, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Interval:
    """BCa bootstrap confidence interval of the mean of ``values`` (NaNs dropped).

    Uses ``scipy.stats.bootstrap`` with a fixed seed, so reports are reproducible. Fewer than two
    values give NaN bounds; constant values give the degenerate interval ``[v, v]`` (BCa is
    undefined there).
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return NAN_INTERVAL
    if np.all(x == x[0]):
        return Interval(float(x[0]), float(x[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (x,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="BCa",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
    low, high = res.confidence_interval
    return Interval(float(low), float(high))


def wilcoxon_p(diff) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (scipy's defaults).

    Zero differences are dropped (``zero_method="wilcox"``); with no non-zero difference the two
    samples are identical and p is 1. scipy computes it exactly (or by permutation, with tied
    ranks) up to 50 differences, and by the normal approximation beyond.
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scipy's "sample size too small for normal approximation"
        return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def smallest_p(m: int) -> float:
    """The smallest p :func:`wilcoxon_p` can give on ``m`` non-zero differences: that of ``m``
    differences of one sign (2 / 2^m up to 50 of them; 1 for none)."""
    return 1.0 if m < 1 else wilcoxon_p(np.arange(1.0, m + 1.0))


def tied(a, b, tie: Tolerance | None) -> np.ndarray:
    """Per pair, whether ``a`` and ``b`` tie: equal (infinities too), or finite and within ``tie``
    (its ``rel`` of the larger magnitude, so the answer is the same either way round)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    tie = tie or Tolerance()
    with np.errstate(invalid="ignore"):
        allowed = np.maximum(tie.abs, tie.rel * np.maximum(np.abs(a), np.abs(b)))
        close = np.isfinite(a) & np.isfinite(b) & (np.abs(a - b) <= allowed)
    return (a == b) | close


@dataclass(frozen=True)
class Paired:
    """A vs B on the images both scored: differences are ``a - b`` in the metric's own units,
    with differences within the tie tolerance counted as 0."""

    n: int
    mean_diff: float
    ci: Interval
    wins: int  # images where A is better, by the metric's direction, beyond the tie tolerance
    ties: int
    losses: int
    p_value: float  # Wilcoxon signed-rank, two-sided

    @property
    def win_rate(self) -> float:
        """Share of images where A is better; ties count half."""
        return (self.wins + 0.5 * self.ties) / self.n if self.n else math.nan

    @property
    def untied(self) -> int:
        """How many images differ beyond the tie tolerance (what the Wilcoxon test ranks)."""
        return self.wins + self.losses

    @property
    def smallest_p(self) -> float:
        """The smallest p the test could give on these images, whatever their values."""
        return smallest_p(self.untied)


def paired(a, b, higher_is_better: bool | None, tie: Tolerance | None = None, **bootstrap_kw) -> Paired:
    """Paired comparison of two aligned score arrays; pairs with a NaN on either side are dropped.

    Differences within ``tie`` (None: only equal values tie) are 0. Infinite scores (the PSNR of an
    exact reconstruction is +inf) are kept: equal infinities tie, an infinite difference is a win
    or a loss and ranks above every finite one in the Wilcoxon test, and it makes the mean
    difference infinite, which then has no CI. ``higher_is_better=None`` (unknown direction)
    counts a positive difference as a win.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must align; got shapes {a.shape} and {b.shape}")
    keep = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[keep], b[keep]
    with np.errstate(invalid="ignore"):
        d = np.where(tied(a, b, tie), 0.0, a - b)  # inf - inf is a tie, not NaN
    sign = -1.0 if higher_is_better is False else 1.0
    better = sign * d
    return Paired(
        n=int(d.size),
        mean_diff=float(d.mean()) if d.size else math.nan,
        ci=bootstrap_ci(d, **bootstrap_kw) if np.isfinite(d).all() else NAN_INTERVAL,
        wins=int(np.sum(better > 0)),
        ties=int(np.sum(better == 0)),
        losses=int(np.sum(better < 0)),
        p_value=wilcoxon_p(d),
    )


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaNs pass through and do not count as tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def top_tier(values: dict[str, float], info: MetricInfo) -> list[str]:
    """The entries whose value ties with the best by ``info``'s direction and tie tolerance (NaNs
    left out; +inf, an exact PSNR, can be best); empty without a direction or a quality."""
    values = {k: v for k, v in values.items() if not math.isnan(v)}
    if info.higher_is_better is None or not info.quality or not values:
        return []
    target = (max if info.higher_is_better else min)(values.values())
    return [k for k, v in values.items() if info.tie_tolerance.ties(v, target)]
