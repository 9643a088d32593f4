"""The numeric core of compare (paired test, verdicts) and tolerance files."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats

from evalvae.compare.tolerances import Tolerance, default_tolerances, load_tolerances, parse_tolerances
from evalvae.compare.verdict import Verdict, judge, paired_test
from evalvae.errors import ConfigError


def wilcoxon_exact(d: np.ndarray) -> float:
    """Two-sided exact p of the signed-rank statistic, enumerating all 2^n sign patterns (no zeros, no tied ranks)."""
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    totals = np.array([ranks[np.array(signs, bool)].sum() for signs in itertools.product([0, 1], repeat=d.size)])
    return min(1.0, 2 * min(np.mean(totals <= observed), np.mean(totals >= observed)))


@pytest.mark.parametrize("shift", [-0.3, -0.01, 0.0004, 0.2])
def test_paired_test_is_the_two_sided_wilcoxon_test(shift):
    rng = np.random.default_rng(1)
    b = rng.normal(30, 2, 12)
    c = b + shift + rng.normal(0, 0.1, 12)
    test = paired_test(b, c)
    assert test.n == 12 and test.untied == 12
    assert test.mean_diff == pytest.approx((c - b).mean(), rel=1e-12)
    assert test.p_value == pytest.approx(wilcoxon_exact(c - b), rel=1e-12)
    assert test.ci.low <= test.mean_diff <= test.ci.high


def test_paired_test_ignores_pair_order():
    rng = np.random.default_rng(2)
    b = rng.normal(0.2, 0.05, 25)
    c = b + rng.normal(0.01, 0.02, 25)
    order = rng.permutation(25)
    assert paired_test(b[order], c[order]).p_value == pytest.approx(paired_test(b, c).p_value, rel=1e-12)


def test_paired_test_degenerate_cases():
    b = np.array([30.0, 31.0, 29.5, 28.0, 33.0, 30.5, 27.5])
    assert paired_test(b, b).p_value == 1.0  # identical inputs: no evidence of change
    assert paired_test(b, b - 0.5).p_value == pytest.approx(2 / 2**7)  # every image moved alike: the smallest p
    assert paired_test(b, b - 0.5).smallest_p == pytest.approx(2 / 2**7)
    jitter = np.array([0.0, 1e-9, -1e-9, 2e-9, 0.0, -3e-9, 1e-9])
    moved = paired_test(b, b + jitter, tie=Tolerance(abs=1e-6))  # within the tie: no move at all
    assert (moved.p_value, moved.mean_diff, moved.untied) == (1.0, 0.0, 0)
    assert paired_test(b[:1], b[:1] + 1) is None  # one pair: no test
    with pytest.raises(ValueError, match="one length"):
        paired_test(b, b[:2])


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_judge_pass_regress_improve_in_each_direction(higher_is_better):
    worse = -1 if higher_is_better else 1
    assert judge(0.0, 0.0, higher_is_better) is Verdict.PASS
    assert judge(worse * 0.01, 0.01, higher_is_better) is Verdict.PASS  # exactly the tolerance passes
    assert judge(worse * 0.02, 0.01, higher_is_better) is Verdict.REGRESSED
    assert judge(-worse * 0.02, 0.01, higher_is_better) is Verdict.IMPROVED


def test_judge_noise_needs_both_tolerance_and_test():
    assert judge(-0.5, 0.01, True, p_value=0.3, alpha=0.05) is Verdict.NOISE
    assert judge(-0.5, 0.01, True, p_value=0.001, alpha=0.05) is Verdict.REGRESSED
    assert judge(-0.5, 0.01, True, p_value=0.3, alpha=None) is Verdict.REGRESSED  # tolerance alone
    assert judge(-0.005, 0.01, True, p_value=1e-9, alpha=0.05) is Verdict.PASS  # significant but negligible
    # timings: a median must also move beyond the spread
    assert judge(3.0, 2.0, False, spread=4.0) is Verdict.NOISE
    assert judge(5.0, 2.0, False, spread=4.0) is Verdict.REGRESSED
    assert judge(-5.0, 2.0, False, spread=4.0) is Verdict.IMPROVED


def test_tolerance_allowed_is_the_larger_of_abs_and_rel():
    assert Tolerance(abs=0.01).allowed(30.0) == 0.01
    assert Tolerance(rel=0.1).allowed(-20.0) == pytest.approx(2.0)
    assert Tolerance(abs=0.5, rel=0.01).allowed(10.0) == 0.5
    assert Tolerance().describe() == "exact"


def test_defaults_come_from_the_shipped_file():
    tol = default_tolerances()
    assert tol.get("any", "psnr") == Tolerance(abs=0.01)
    assert tol.get("any", "ms_per_image").rel == pytest.approx(0.3)
    assert tol.get("any", "unknown-metric") == tol.default
    assert tol.alpha == 0.05 and tol.improvements == "pass"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_tolerance_file_overrides_entries_whole(tmp_path, suffix):
    data = {
        "default": {"abs": 0.5},
        "metrics": {"psnr": {"rel": 0.001}},
        "vaes": {"mine": {"psnr": {"abs": 0.2}}},
        "alpha": None,
        "improvements": "fail",
    }
    path = tmp_path / f"tol{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text(
            "default: {abs: 0.5}\nmetrics:\n  psnr: {rel: 0.001}  # dB\nvaes:\n  mine:\n    psnr: {abs: 0.2}\nalpha: null\nimprovements: fail\n"
        )
    tol = load_tolerances(path)
    assert tol.get("other", "psnr") == Tolerance(rel=0.001)  # replaces the default abs 0.01 entirely
    assert tol.get("mine", "psnr") == Tolerance(abs=0.2)  # per VAE beats per metric
    assert tol.get("mine", "ssim") == Tolerance(abs=0.0002)  # untouched defaults remain
    assert tol.get("mine", "foo") == Tolerance(abs=0.5)
    assert tol.alpha is None and tol.improvements == "fail"
    assert tol.unmatched({("mine", "ssim")}) == ["metrics.psnr", "vaes.mine.psnr"]


@pytest.mark.parametrize(
    "data, argument, fragment",
    [
        ({"metric": {}}, "key", "choose one of default, metrics, vaes, alpha, improvements"),
        ({"metrics": {"psnr": {"absolute": 0.1}}}, "metrics.psnr key", "choose one of abs, rel"),
        ({"metrics": {"psnr": {"abs": -1}}}, "metrics.psnr.abs", "a number >= 0"),
        ({"metrics": {"psnr": {"abs": "0.1"}}}, "metrics.psnr.abs", "a number >= 0"),
        ({"metrics": {"psnr": 0.1}}, "metrics.psnr", "a mapping"),
        ({"vaes": {"x": {"psnr": {"rel": True}}}}, "vaes.x.psnr.rel", "a number >= 0"),
        ({"alpha": 1.5}, "alpha", "(0, 1)"),
        ({"improvements": "warn"}, "improvements", "choose one of pass, fail"),
        (["psnr"], "tol.yaml", "a mapping"),
    ],
)
def test_tolerance_errors_name_key_value_and_choices(data, argument, fragment):
    with pytest.raises(ConfigError) as e:
        parse_tolerances(data, "tol.yaml")
    assert argument in str(e.value) and fragment in str(e.value)


def test_tolerance_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_tolerances(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("metrics: {psnr: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_tolerances(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_tolerances(empty).get("v", "psnr") == default_tolerances().get("v", "psnr")
