"""rFID and KID: the numeric core against independent float64 formulas, invariances, the Inception
extractor's two resize protocols, the reference cache, and the CLI with a stand-in extractor."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from PIL import Image

from evalvae.metrics.features import MetricUnavailable, bicubic_299
from evalvae.metrics.frechet import FeatureStats, frechet_distance, kid
from evalvae.metrics.refstats import load_stats, reference_key, save_stats
from evalvae.ref.task import ref
from evalvae.run import run
from evalvae.store import Store
from tests.helpers import NO_SAMPLES, TinyExtractor, compose_run, evalvae_main, read_entry, reference_entries

FID_RTOL = 1e-6


def scipy_fid(mu1, s1, mu2, s2):
    """The textbook formula with scipy's general matrix square root (TTUR / pytorch-fid style)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def gaussian_stats(rng, d, n, shift=0.0, scale=1.0):
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    x = rng.normal(size=(n, d)) @ a * scale + shift
    return x


@pytest.mark.parametrize("d,shift,scale", [(16, 0.0, 1.0), (64, 0.3, 1.5), (128, 2.0, 0.5)])
def test_frechet_equals_scipy_sqrtm_formula(d, shift, scale):
    rng = np.random.default_rng(d)
    x, y = gaussian_stats(rng, d, 4 * d), gaussian_stats(rng, d, 4 * d, shift, scale)
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_fid(mu1, s1, mu2, s2), rel=FID_RTOL)


def test_frechet_of_identical_sets_is_zero_and_symmetric():
    rng = np.random.default_rng(0)
    x, y = gaussian_stats(rng, 32, 200), gaussian_stats(rng, 32, 200, 0.5)
    mu, s = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)
    m2, s2 = y.mean(0), np.cov(y, rowvar=False)
    assert frechet_distance(mu, s, m2, s2) == pytest.approx(frechet_distance(m2, s2, mu, s), rel=1e-9)


def test_frechet_with_rank_deficient_covariance_is_finite():
    rng = np.random.default_rng(1)
    x, y = gaussian_stats(rng, 64, 20), gaussian_stats(rng, 64, 20, 0.2)  # N < d
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    value = frechet_distance(x.mean(0), s1, y.mean(0), s2)
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(scipy_fid(x.mean(0), s1, y.mean(0), s2), rel=1e-4)  # sqrtm is less exact here


def exact_fid(x, y):
    """FID of two feature sets from the features themselves, in float64 without a covariance's eigenvalues.

    With centred features A, B: ``tr((S1 S2)^(1/2))`` is the nuclear norm of ``A B^T / sqrt((n1-1)(n2-1))``
    (the sum of its singular values); a set larger than the dimension is first reduced to its QR factor R,
    which leaves those singular values unchanged.
    """
    a, b = x - x.mean(0), y - y.mean(0)
    (n1, d), n2 = x.shape, len(y)
    ra = np.linalg.qr(a, mode="r") if n1 > d else a
    rb = np.linalg.qr(b, mode="r") if n2 > d else b
    tr_covmean = np.linalg.svd(ra @ rb.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + (a * a).sum() / (n1 - 1) + (b * b).sum() / (n2 - 1) - 2 * tr_covmean)


def reconstruction_like(rng, d, n, offset):
    """Low-rank features with a common offset (as Inception's pool3 features have) and a close copy of them."""
    x = offset + rng.normal(size=(n, 8)) @ rng.normal(size=(8, d)) + 0.1 * rng.normal(size=(n, d))
    return x, x + 0.01 * rng.normal(size=x.shape)


@pytest.mark.parametrize(
    "d,n,offset,kept",
    [(256, 30, 1.0, 30), (128, 90, 30.0, 90), (64, 300, 1.0, 300), (32, 500, 30.0, 500), (128, 40, 1.0, 25)],
)
def test_frechet_of_streamed_stats_equals_the_exact_value_below_and_above_the_feature_dim(d, n, offset, kept):
    """N < d: rank-deficient covariances, whose round-off eigenvalues must not count (they made FID ~2% low here).
    The last case: 40 originals against 25 of their reconstructions, of ranks 39 and 24 in 128 dimensions."""
    rng = np.random.default_rng(d + n)
    x, y = reconstruction_like(rng, d, n, offset)
    y = y[:kept]
    real, fake = FeatureStats(d), FeatureStats(d)
    real.update(x)
    for chunk in np.array_split(y, 3):
        fake.update(chunk)
    exact = exact_fid(x, y)
    for a, b in ((real, fake), (fake, real)):
        assert frechet_distance(a.mean, a.cov, b.mean, b.cov, a.n, b.n) == pytest.approx(exact, rel=FID_RTOL)
    # without the sample counts, the relative eigenvalue threshold alone drops the round-off
    alone = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert alone == pytest.approx(exact, rel=FID_RTOL)


def test_streamed_stats_equal_numpy_and_ignore_batching_and_order():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(101, 12)) * 3 + 1
    whole = FeatureStats(12)
    whole.update(x)
    np.testing.assert_allclose(whole.mean, x.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(whole.cov, np.cov(x, rowvar=False), rtol=0, atol=1e-12)
    split = FeatureStats(12)
    for chunk in np.array_split(x[rng.permutation(101)], 7):
        split.update(chunk)
    np.testing.assert_allclose(split.mean, whole.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(split.cov, whole.cov, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"features must be \(N, 12\)"):
        whole.update(np.zeros((3, 5)))


def test_kid_invariances():
    """Both estimators against their float64 double sums are in tests/metrics/test_kid.py; here, what they must not see."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6))
    same_dist = kid(x, rng.normal(size=(40, 6)), subsets=20, subset_size=40, estimator="independent").mean
    y = rng.normal(size=(40, 6)) + 1
    shifted = kid(x, y, subsets=20, subset_size=40, estimator="independent").mean
    assert abs(same_dist) < 0.05 * shifted  # unbiased: about 0 for two independent samples of one distribution
    a = kid(x, y, subsets=3, subset_size=40, estimator="independent").mean
    b = kid(x[::-1], y[rng.permutation(40)], subsets=3, subset_size=40, estimator="independent").mean
    assert a == pytest.approx(b, rel=1e-12) and a > 0.1  # with whole sets, order does not matter
    # paired: reordering the pairs together changes nothing; breaking the pairs changes the number
    order = rng.permutation(40)
    paired = kid(x, y, subset_size=40, estimator="paired").mean
    assert kid(x[order], y[order], subset_size=40, estimator="paired").mean == pytest.approx(paired, rel=1e-12)
    assert abs(kid(x, y[order], subset_size=40, estimator="paired").mean - paired) > 1e-3 * paired


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A randomly initialised torch-fidelity Inception saved as a weights file (its layout, not its values)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    cls = tfi.FeatureExtractorInceptionV3
    original = cls.load_state_dict
    cls.load_state_dict = lambda self, state, *a, **k: None
    try:
        tfi_load = tfi.load_state_dict_from_url
        tfi.load_state_dict_from_url = lambda *a, **k: {}
        torch.manual_seed(0)
        net = cls("random-inception", ["2048"])
    finally:
        cls.load_state_dict, tfi.load_state_dict_from_url = original, tfi_load
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_clean_path_equals_torch_fidelity_at_299(random_inception_weights):
    from evalvae.metrics.features import InceptionV3

    clean = InceptionV3(weights=str(random_inception_weights), resize="clean")
    legacy = InceptionV3(weights=str(random_inception_weights), resize="legacy")
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)
    # At 299x299 neither resize changes the pixels, so our float forward must equal torch-fidelity's own.
    # (Random weights give tiny activations, so compare relative to their scale.)
    a, b = clean(images), legacy(images)
    assert a.shape == (2, 2048) and np.abs(b).max() > 0
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    small = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    c, d = clean(small), legacy(small)
    assert np.abs(c - d).max() > 1e-3 * np.abs(d).max()  # the two protocols differ off-size
    assert clean.identity()["resize"] != legacy.identity()["resize"]
    assert clean.identity()["weights_sha256"] == legacy.identity()["weights_sha256"]


def pil_bicubic_299(images: torch.Tensor) -> np.ndarray:
    """clean-fid's resize as clean-fid does it: each channel a float32 PIL image, bicubic to 299x299, clipped."""
    out = np.empty((len(images), 3, 299, 299), np.float32)
    for i, img in enumerate(images.numpy()):
        for c in range(3):
            ch = Image.fromarray(img[c].astype(np.float32), mode="F").resize((299, 299), Image.Resampling.BICUBIC)
            out[i, c] = np.clip(np.asarray(ch), 0, 255)
    return out


@pytest.mark.parametrize("shape", [(2, 3, 64, 80), (2, 3, 256, 256), (1, 3, 512, 384), (1, 3, 299, 299)])
def test_device_resize_equals_pil_bicubic(shape):
    """The resize on the device equals PIL's float bicubic, up and down: 2.3e-5 measured (float32's rounding of
    PIL's output on 0..255); kept in float, never re-quantized, and the identity at 299."""
    img = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(sum(shape)))
    ours, pil = bicubic_299(img), pil_bicubic_299(img)
    assert ours.shape == (shape[0], 3, 299, 299) and ours.dtype == torch.float32
    assert np.abs(ours.numpy() - pil).max() <= 5e-5
    if shape[-2:] == (299, 299):
        assert torch.equal(ours, img.float())
    else:
        assert (ours != ours.round()).any(), "clean-fid keeps the resized image in float"
        assert ours.min() >= 0 and ours.max() <= 255


def test_missing_inception_weights_are_unavailable(tmp_path, monkeypatch):
    from evalvae.metrics.features import InceptionV3

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MetricUnavailable, match=r"metrics\.fid\.weights=PATH"):
        InceptionV3()


def test_reference_key_changes_with_each_ingredient():
    base = reference_key("abc", {"resolution": 256}, {"name": "x", "weights_sha256": "w"})
    assert base == reference_key("abc", {"resolution": 256}, {"weights_sha256": "w", "name": "x"})
    assert base != reference_key("abd", {"resolution": 256}, {"name": "x", "weights_sha256": "w"})
    assert base != reference_key("abc", {"resolution": 512}, {"name": "x", "weights_sha256": "w"})
    assert base != reference_key("abc", {"resolution": 256}, {"name": "x", "weights_sha256": "v"})


def test_reference_store_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    stats = FeatureStats(4, keep_features=True)
    stats.update(rng.normal(size=(9, 4)))
    store = Store(tmp_path)
    save_stats(store, "k", stats, {"what": "test"})
    back = load_stats(store, "k")
    assert back.n == 9 and np.array_equal(back.total, stats.total) and np.array_equal(back.outer, stats.outer)
    assert np.array_equal(back.features, stats.features) and load_stats(store, "missing") is None
    store.path("bad").parent.mkdir()
    store.path("bad").write_bytes(b"not a safetensors file")
    assert load_stats(store, "bad") is None and not store.path("bad").exists()


def dataset(image_dir, cache, *extra) -> list[str]:
    return ["dataset=folder", f"dataset.path={image_dir}", "workers=0", f"cache_dir={cache}", "metrics=all", *extra]


def set_overrides(tiny_pth_dir, image_dir, cache, *extra, vaes="taef2"):
    taef2 = [f"++vae.taef2.source={tiny_pth_dir}", "++vae.taef2.sha256=null", "++vae.taef2.weights_prefix=tiny"]
    fid = ["metrics.fid.extractor=tests.helpers.TinyExtractor", "metrics.fid.kid_subsets=10"]
    return [f"+vae={vaes}", *taef2, *dataset(image_dir, cache, "dataset.resolution=32", *fid, *NO_SAMPLES), *extra]


def test_set_metrics_in_a_run_and_the_cache_across_runs(tmp_path, tiny_pth_dir, tiny_ae_dir, image_dir):
    cache = tmp_path / "cache"
    TinyExtractor.calls = 0
    first = run(compose_run(set_overrides(tiny_pth_dir, image_dir, cache)), out_dir=tmp_path / "a")
    assert TinyExtractor.calls == 12, "first run: 6 reconstructions and 6 originals"
    s = first.summary.set_index("metric")
    assert s.loc["rfid", "n"] == 6 and s.loc["rfid", "mean"] > 0 and pd.isna(s.loc["rfid", "std"])
    assert "N=6 < feature dim 24" in s.loc["rfid", "note"]
    assert s.loc["kid", "n"] == 6 and "10 subsets of 6" in s.loc["kid", "note"]
    assert pd.isna(s.loc["kid", "std"]) and "no std: every subset is the whole set of 6 pairs" in s.loc["kid", "note"]
    assert s.loc["lpips", "n"] == 0 and "backbone weights not found" in s.loc["lpips", "note"]
    per = pd.read_parquet(tmp_path / "a" / "per_image.parquet")
    assert "lpips" in per.columns and per.lpips.isna().all()
    proto = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert (
        proto["metrics"]["rfid"]["reference"]["source"] == "computed"
        and proto["metrics"]["rfid"]["reference"]["n"] == 6
    )
    assert proto["metrics"]["lpips"]["available"] is False
    (cached,) = reference_entries(cache)
    mtime = cached.stat().st_mtime_ns

    TinyExtractor.calls = 0
    second = run(
        compose_run(set_overrides(tiny_pth_dir, image_dir, cache, f"++vae.taesd.source={tiny_ae_dir}", vaes="taesd")),
        out_dir=tmp_path / "b",
    )
    assert TinyExtractor.calls == 6, "second run with another VAE: reconstructions only, references from the cache"
    assert cached.stat().st_mtime_ns == mtime
    proto = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert proto["metrics"]["rfid"]["reference"]["source"] == "cache"
    assert second.summary.set_index("metric").loc["rfid", "mean"] != s.loc["rfid", "mean"]


def test_reference_statistics_are_of_the_uncropped_originals(tmp_path, tiny_pth_dir, image_dir):
    """At 36 px a VAE with factor 8 scores a 32 px crop; the cached originals' statistics stay those `ref` computes."""
    outcome = run(
        compose_run(set_overrides(tiny_pth_dir, image_dir, tmp_path / "c1", "dataset.resolution=36")),
        out_dir=tmp_path / "a",
    )
    per = pd.read_parquet(tmp_path / "a" / "per_image.parquet")
    assert set(per.height) == {32} and outcome.summary.set_index("metric").loc["rfid", "n"] == 6
    extractor = "metrics.fid.extractor=tests.helpers.TinyExtractor"
    ref(compose_run(dataset(image_dir, tmp_path / "c2", "dataset.resolution=36", extractor), "ref"))
    (from_run,), (from_ref,) = (reference_entries(tmp_path / c) for c in ("c1", "c2"))
    assert from_run.name == from_ref.name, "same key"
    (a, meta_a), (b, meta_b) = read_entry(from_run), read_entry(from_ref)
    assert int(meta_a["n"]) == int(meta_b["n"]) == 6
    for field in ("total", "outer", "features"):
        np.testing.assert_allclose(a[field], b[field], rtol=1e-12, atol=1e-12, err_msg=field)


def test_missing_fid_weights_give_unavailable_rows_and_the_run_goes_on(tmp_path, tiny_pth_dir, image_dir, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    overrides = [o for o in set_overrides(tiny_pth_dir, image_dir, tmp_path / "cache") if "extractor" not in o]
    outcome = run(compose_run(overrides), out_dir=tmp_path / "run")
    s = outcome.summary.set_index("metric")
    assert s.loc["psnr", "n"] == 6
    for name in ("rfid", "kid"):
        assert s.loc[name, "n"] == 0 and pd.isna(s.loc[name, "mean"])
        assert "Inception weights not found" in s.loc[name, "note"]


def test_cli_ref_then_run_uses_the_cache(tmp_path, tiny_pth_dir, image_dir):
    cache = tmp_path / "cache"
    common = ["dataset=folder", f"dataset.path={image_dir}", "dataset.resolution=32", f"cache_dir={cache}"]
    common.append("metrics.fid.extractor=tests.helpers.TinyExtractor")
    r = evalvae_main(["ref", *common, f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "computed from 6 images" in r.stderr and len(reference_entries(cache)) == 1
    no_lpips = "metrics.lpips.backbone_weights=/no/such/alexnet.pth"  # LPIPS unavailable wherever this runs
    args = [
        *set_overrides(tiny_pth_dir, image_dir, cache, no_lpips),
        "report=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    r = evalvae_main(["run", *args], cwd=tmp_path)
    assert r.returncode == 3, r.stderr[-2000:]  # incomplete: LPIPS was asked for (metrics=all) and is unavailable
    assert r.stderr.splitlines()[-1].startswith("evalvae: incomplete run (exit status 3): lpips unavailable;")
    assert "cache hit (6 images)" in r.stderr and "rfid" in r.stderr and "unavailable" in r.stderr
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert set(summary.metric) == {"psnr", "ssim", "lpips", "rfid", "kid", "bpp"}
