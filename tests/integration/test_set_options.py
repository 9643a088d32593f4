"""Every combination of the set-level metric options completes through ``run``: KID on or off, Inception's
two resizes, LPIPS on or off, the reference cache cold (a run computes it) or warm (a later run reads it),
and a cache entry written without KID's features read by a run that needs them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evalvae.ref.task import ref
from evalvae.run import run
from tests.helpers import TinyExtractor, compose_run, reference_entries, standin

INCEPTION = "fid/pt_inception-2015-12-05_torch-fidelity.pth"
LPIPS_ALEX = "lpips/alexnet_features.pth"


def common(image_dir, cache, kid: bool, *extra) -> list[str]:
    dataset = ["dataset=folder", f"dataset.path={image_dir}", "dataset.resolution=32", "device=cpu", "workers=0"]
    fid = [f"metrics.fid.kid={str(kid).lower()}", "metrics.fid.kid_subsets=10"]
    return [*dataset, f"cache_dir={cache}", "metrics=all", *fid, *extra]


def tiny_extractor(image_dir, cache, kid: bool, *extra) -> list[str]:
    return common(image_dir, cache, kid, "metrics.fid.extractor=tests.helpers.TinyExtractor", *extra)


def run_a(out_dir, image_dir, cache, kid: bool):
    """The gain-0.9 stand-in ``a`` with the stand-in extractor and no LPIPS."""
    return run(
        compose_run([*tiny_extractor(image_dir, cache, kid, "~metrics.lpips"), *standin("a", gain=0.9)]), out_dir
    )


def reference(out) -> dict:
    return json.loads((out / "metrics.json").read_text())["metrics"]["rfid"]["reference"]


def summary(outcome) -> pd.DataFrame:
    return outcome.summary.set_index(["vae", "metric"])


def check_set_rows(s: pd.DataFrame, vae: str, kid: bool, n: int = 6) -> None:
    rows = s.loc[vae]
    assert rows.loc["rfid", "n"] == n and rows.loc["rfid", "mean"] > 0
    assert ("kid" in rows.index) == kid
    if kid:
        assert rows.loc["kid", "n"] == n and pd.notna(rows.loc["kid", "mean"])
        # N below the subset size: every subset is the whole set, so there is no std, and the note says why
        assert pd.isna(rows.loc["kid", "std"]) and "no std: every subset is the whole set" in rows.loc["kid", "note"]


@pytest.fixture(params=["no-lpips", "lpips"])
def lpips(request) -> list[str]:
    if request.param == "no-lpips":
        return ["~metrics.lpips"]
    root = request.getfixturevalue("real_weights")  # skips without them, fails under CI=true
    return [f"metrics.lpips.backbone_weights={root / LPIPS_ALEX}"]


@pytest.mark.parametrize("kid", [True, False], ids=["kid", "no-kid"])
def test_set_metrics_complete_with_a_cold_then_a_warm_cache(tmp_path, image_dir, kid, lpips):
    """Two VAEs per run, so the first VAE's references (computed, then cached) serve the second."""
    cache = tmp_path / "cache"
    vaes = [*standin("a", gain=0.9), *standin("b", gain=0.8)]
    TinyExtractor.calls = 0
    args = [*tiny_extractor(image_dir, cache, kid), *lpips, *vaes]
    cold = run(compose_run(args), out_dir=tmp_path / "cold")
    assert TinyExtractor.calls == 18, "6 originals once, 6 reconstructions per VAE"
    assert reference(cold.out_dir)["source"] == "computed" and not cold.failed
    TinyExtractor.calls = 0
    warm = run(compose_run(args), out_dir=tmp_path / "warm")
    assert TinyExtractor.calls == 12, "reconstructions only: the references come from the cache"
    assert reference(warm.out_dir)["source"] == "cache"
    c, w = summary(cold), summary(warm)
    for vae in ("a", "b"):
        check_set_rows(c, vae, kid)
        has_lpips = "lpips" in c.loc[vae].index
        assert has_lpips == (lpips != ["~metrics.lpips"])
        if has_lpips:
            assert c.loc[(vae, "lpips"), "n"] == 6 and c.loc[(vae, "lpips"), "mean"] > 0
    pd.testing.assert_series_equal(w["mean"], c["mean"], rtol=1e-9)
    assert c.loc[("a", "rfid"), "mean"] < c.loc[("b", "rfid"), "mean"], "the larger gain error is the larger distance"


def test_a_cache_written_without_kid_is_recomputed_for_kid_and_then_serves_both(tmp_path, image_dir):
    """A kid=false entry holds no features; a kid=true run recomputes and overwrites it, and then both read it."""
    cache, fresh = tmp_path / "cache", tmp_path / "fresh"
    without = run_a(tmp_path / "no-kid", image_dir, cache, False)
    (entry,) = reference_entries(cache)
    TinyExtractor.calls = 0
    with_kid = run_a(tmp_path / "kid", image_dir, cache, True)
    assert TinyExtractor.calls == 12, "the originals' features were recomputed"
    assert reference(with_kid.out_dir)["source"] == "computed" and reference_entries(cache) == [entry]
    expected = run_a(tmp_path / "fresh-kid", image_dir, fresh, True)
    pd.testing.assert_series_equal(summary(with_kid)["mean"], summary(expected)["mean"], rtol=1e-9)
    rfid = [summary(o).loc[("a", "rfid"), "mean"] for o in (with_kid, without)]
    assert rfid[0] == pytest.approx(rfid[1], rel=1e-12)

    for kid in (True, False):
        TinyExtractor.calls = 0
        again = run_a(tmp_path / f"again-{kid}", image_dir, cache, kid)
        assert TinyExtractor.calls == 6 and reference(again.out_dir)["source"] == "cache"
        check_set_rows(summary(again), "a", kid)


def test_ref_without_kid_then_runs_with_and_without_kid(tmp_path, image_dir):
    cache = tmp_path / "cache"
    info = ref(compose_run(tiny_extractor(image_dir, cache, False), "ref"))
    assert info[TinyExtractor.name]["source"] == "computed" and info[TinyExtractor.name]["n"] == 6
    TinyExtractor.calls = 0
    plain = run_a(tmp_path / "a", image_dir, cache, False)
    assert TinyExtractor.calls == 6 and reference(plain.out_dir)["source"] == "cache"
    TinyExtractor.calls = 0
    with_kid = run_a(tmp_path / "b", image_dir, cache, True)
    assert TinyExtractor.calls == 12 and reference(with_kid.out_dir)["source"] == "computed"
    check_set_rows(summary(with_kid), "a", True)


@pytest.mark.slow  # the real Inception, eight runs
def test_inception_resizes_with_and_without_kid_cold_and_warm(tmp_path, real_weights):
    """The real Inception on three 32 px images, each resize with and without KID, cold and warm.

    Each resize has its own cache entry. clean: kid=false computes it without features, kid=true
    recomputes it. legacy: kid=true computes it with features, kid=false reads it.
    """
    from tests.helpers import write_images

    images = write_images(tmp_path / "images", sizes=((32, 40), (36, 32), (40, 40)))
    cache = tmp_path / "cache"
    weights = f"metrics.fid.weights={real_weights / INCEPTION}"
    rfid = {}
    for resize, steps in (
        ("clean", ((False, "computed"), (True, "computed"))),
        ("legacy", ((True, "computed"), (False, "cache"))),
    ):
        for kid, source in steps:
            extra = [weights, f"metrics.fid.resize={resize}", "~metrics.lpips"]
            outcome = run(
                compose_run([*common(images, cache, kid, *extra), *standin("a", gain=0.9)]),
                out_dir=tmp_path / f"{resize}-{kid}",
            )
            assert reference(outcome.out_dir)["source"] == source, (resize, kid)
            check_set_rows(summary(outcome), "a", kid, n=3)
            rfid.setdefault(resize, []).append(summary(outcome).loc[("a", "rfid"), "mean"])
    assert len(reference_entries(cache)) == 2
    for values in rfid.values():
        assert values[1] == pytest.approx(values[0], rel=1e-9), "KID on or off, the same rFID"
    assert rfid["clean"][0] != pytest.approx(rfid["legacy"][0], rel=1e-6), (
        "the two resizes feed the network different pixels"
    )
