"""Bootstrap intervals and paired statistics against scipy and exact references on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from evalvae.metrics import stats

RNG = np.random.default_rng(1234)
PSNR_A = RNG.normal(29.4, 2.5, 24)  # Kodak-sized sample
PSNR_B = PSNR_A - 0.15 + RNG.normal(0, 0.2, 24)


def test_bootstrap_ci_equals_scipy_bca_with_the_same_seed():
    ci = stats.bootstrap_ci(PSNR_A, n_resamples=4999, seed=7)
    ref = sps.bootstrap(
        (PSNR_A,), np.mean, confidence_level=0.95, n_resamples=4999, method="BCa", rng=np.random.default_rng(7)
    )
    assert ci.low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert ci.high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert ci.low < PSNR_A.mean() < ci.high


def test_bootstrap_ci_agrees_with_the_t_interval_on_normal_data():
    x = np.random.default_rng(5).normal(10.0, 2.0, 400)
    ci = stats.bootstrap_ci(x)
    half = sps.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    # Monte Carlo and the bootstrap's own small-sample bias: within 6% of the half width
    assert ci.low == pytest.approx(x.mean() - half, abs=0.06 * half)
    assert ci.high == pytest.approx(x.mean() + half, abs=0.06 * half)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    true_mean = math.exp(0.5 * 0.5**2)  # lognormal(0, 0.5): skewed, as per-image errors are
    hits = 0
    trials = 300
    for i in range(trials):
        ci = stats.bootstrap_ci(rng.lognormal(0, 0.5, 24), n_resamples=999, seed=i)
        hits += ci.low <= true_mean <= ci.high
    assert 0.89 <= hits / trials <= 0.99


def test_bootstrap_ci_is_order_insensitive_up_to_resampling_noise():
    a = stats.bootstrap_ci(PSNR_A)
    b = stats.bootstrap_ci(PSNR_A[::-1])
    width = a.high - a.low
    assert b.low == pytest.approx(a.low, abs=0.03 * width)
    assert b.high == pytest.approx(a.high, abs=0.03 * width)


def test_bootstrap_ci_edge_cases():
    assert math.isnan(stats.bootstrap_ci([3.0]).low)
    assert math.isnan(stats.bootstrap_ci([]).high)
    assert stats.bootstrap_ci([2.5, 2.5, 2.5]) == stats.Interval(2.5, 2.5)
    with_nan = stats.bootstrap_ci(np.r_[PSNR_A, np.nan, np.inf], n_resamples=999)
    assert with_nan == stats.bootstrap_ci(PSNR_A, n_resamples=999)


def test_wilcoxon_p_equals_scipy_with_ties_and_zeros():
    d = np.round(PSNR_A - PSNR_B, 1)
    d[:3] = 0.0
    assert stats.wilcoxon_p(d) == pytest.approx(sps.wilcoxon(d, zero_method="wilcox").pvalue, rel=1e-12)
    assert stats.wilcoxon_p(np.zeros(5)) == 1.0
    assert math.isnan(stats.wilcoxon_p([]))


def test_paired_against_direct_formulas():
    p = stats.paired(PSNR_A, PSNR_B, higher_is_better=True)
    d = PSNR_A - PSNR_B
    assert p.n == 24
    assert p.mean_diff == pytest.approx(np.mean(d.astype(np.float64)), rel=1e-14)
    assert (p.wins, p.ties, p.losses) == (int((d > 0).sum()), int((d == 0).sum()), int((d < 0).sum()))
    assert p.win_rate == pytest.approx((d > 0).mean())
    assert p.p_value == pytest.approx(sps.wilcoxon(PSNR_A, PSNR_B).pvalue, rel=1e-12)
    ref = sps.bootstrap(
        (d,), np.mean, n_resamples=stats.N_RESAMPLES, method="BCa", rng=np.random.default_rng(stats.SEED)
    )
    assert (p.ci.low, p.ci.high) == pytest.approx(tuple(ref.confidence_interval), rel=1e-12)
    # scipy's own paired bootstrap resamples (a, b) jointly: the same interval up to resampling noise
    joint = sps.bootstrap(
        (PSNR_A, PSNR_B),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        paired=True,
        n_resamples=9999,
        method="BCa",
        rng=np.random.default_rng(3),
    )
    width = p.ci.high - p.ci.low
    assert p.ci.low == pytest.approx(joint.confidence_interval.low, abs=0.05 * width)
    assert p.ci.high == pytest.approx(joint.confidence_interval.high, abs=0.05 * width)


def test_paired_swap_and_direction():
    ab = stats.paired(PSNR_A, PSNR_B, True)
    ba = stats.paired(PSNR_B, PSNR_A, True)
    assert ba.mean_diff == pytest.approx(-ab.mean_diff)
    assert ba.win_rate == pytest.approx(1 - ab.win_rate)
    assert ba.p_value == pytest.approx(ab.p_value)
    lower = stats.paired(PSNR_A, PSNR_B, higher_is_better=False)  # e.g. LPIPS: smaller wins
    assert (lower.wins, lower.losses) == (ab.losses, ab.wins)


def test_paired_drops_pairs_with_a_missing_side_and_counts_ties_half():
    a = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    b = np.array([0.5, 2.0, 3.0, np.nan, 6.0])
    p = stats.paired(a, b, True)
    assert p.n == 3
    assert (p.wins, p.ties, p.losses) == (1, 1, 1)
    assert p.win_rate == pytest.approx(0.5)
    assert p.mean_diff == pytest.approx((0.5 + 0.0 - 1.0) / 3)
    with pytest.raises(ValueError, match="align"):
        stats.paired(a, b[:4], True)


def test_identical_inputs_give_zero_difference_and_p_one():
    p = stats.paired(PSNR_A, PSNR_A.copy(), True)
    assert p.mean_diff == 0.0 and p.ci == stats.Interval(0.0, 0.0)
    assert p.p_value == 1.0 and p.win_rate == 0.5


def test_holm_by_hand():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert stats.holm([0.9, 0.8]).max() == 1.0
    assert stats.holm([]).size == 0
