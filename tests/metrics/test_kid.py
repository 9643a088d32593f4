"""KID: the paired and independent estimators against float64 double sums and torch-fidelity, the pairing of
reconstructions with their originals through runs (order, missing files, stored chunks; non-finite images: with rFID,
tests/metrics/test_refstats.py), the std over subsets, the protocol in ``metrics.json`` and ``compare``. task=t2i's
independent KID is tested with its run (tests/t2i/test_run.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.errors import ConfigError
from evalvae.metrics.frechet import FeatureStats, UnpairedSets, kid, paired_features
from evalvae.run import run
from tests.helpers import TinyExtractor, compose_run, photo, read_entry, reference_entries, write_entry, write_images

IDENTITY = "tests.run_standins.Identity"
SET_LEVEL = ["metrics=all", "~metrics.lpips", "metrics.fid.extractor=tests.helpers.TinyExtractor"]


def k(a: np.ndarray, b: np.ndarray) -> float:
    """The KID kernel of two feature vectors, in float64: (a.b / d + 1)^3."""
    return (float(np.dot(a, b)) / len(a) + 1) ** 3


def paired_double_sum(x: np.ndarray, y: np.ndarray) -> float:
    """The paired-unbiased MMD^2 written out: over i != j, k(x_i,x_j) + k(y_i,y_j) - k(x_i,y_j) - k(x_j,y_i)."""
    m = len(x)
    total = sum(
        k(x[i], x[j]) + k(y[i], y[j]) - k(x[i], y[j]) - k(x[j], y[i]) for i in range(m) for j in range(m) if i != j
    )
    return total / (m * (m - 1))


def independent_double_sum(x: np.ndarray, y: np.ndarray) -> float:
    """Binkowski et al.'s estimator for two independent samples: within-set terms over i != j, cross over all i, j."""
    m = len(x)
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return within - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)


def paired_reference(x, y, subsets: int, m: int, seed: int) -> tuple[float, float]:
    """Mean and std (ddof 0) of the paired double sum over subsets of m pairs, one draw of
    ``RandomState(seed).choice(N, m, replace=False)`` per subset for both sets (the documented sampling)."""
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        pick = rng.choice(len(x), m, replace=False)
        values.append(paired_double_sum(x[pick], y[pick]))
    return float(np.mean(values)), float(np.std(values))


def features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Non-negative features of Inception-like size and spread (pool3 activations are >= 0)."""
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(size=(n, d))) * 0.5 + shift


# -- the numeric core ------------------------------------------------------------------------------
def test_independent_subsets_equal_torch_fidelitys_kid_with_subsets_smaller_than_n():
    """torch-fidelity's own kid_features_to_metric on the same float64 features: same draws, same numbers."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    real, fake = features(50, 16, 0), features(40, 16, 1, shift=0.1)
    for seed, subsets, m in ((2020, 20, 10), (0, 7, 25), (5, 3, 40)):
        ours = kid(real, fake, subsets=subsets, subset_size=m, seed=seed, estimator="independent")
        args = {"kid_subsets": subsets, "kid_subset_size": m, "rng_seed": seed, "verbose": False}
        ref = kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), **args)
        # measured: equal to 2e-16 relative (the same float64 matrix products in another order)
        assert ours.mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-12, abs=1e-15)
        assert ours.std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-12, abs=1e-15)
        assert ours.subset_size == m and not ours.identical_subsets and ours.std > 0


def test_independent_estimator_equals_its_double_sum_on_whole_sets():
    real, fake = features(7, 12, 2), features(7, 12, 3, shift=0.05)
    got = kid(real, fake, subsets=5, subset_size=100, estimator="independent")
    assert got.identical_subsets and got.subset_size == 7 and np.isnan(got.std)
    assert got.mean == pytest.approx(independent_double_sum(real, fake), rel=1e-12)


@pytest.mark.parametrize(("n", "m", "subsets"), [(9, 4, 6), (12, 11, 3), (8, 8, 5)], ids=["4-of-9", "11-of-12", "all"])
def test_paired_kid_equals_the_float64_double_sum(n, m, subsets):
    real, fake = features(n, 10, 4), features(n, 10, 5, shift=0.02)
    got = kid(real, fake, subsets=subsets, subset_size=m, seed=3, estimator="paired")
    if m == n:  # every subset is the whole set: one value, no spread
        assert got.identical_subsets and np.isnan(got.std)
        assert got.mean == pytest.approx(paired_double_sum(real, fake), rel=1e-12)
    else:
        mean, std = paired_reference(real, fake, subsets, m, seed=3)
        assert not got.identical_subsets and std > 0
        # measured: 1e-16 relative
        assert got.mean == pytest.approx(mean, rel=1e-12) and got.std == pytest.approx(std, rel=1e-10)


def test_an_exact_reconstruction_has_zero_paired_kid_and_a_negative_independent_one():
    """Four images with 2048-d Inception-like features: the independent estimator's cross term counts each
    image against itself, so it is far below 0 for a perfect reconstruction; the paired one is 0."""
    x = features(4, 2048, 6)
    reference = paired_double_sum(x, x.copy())
    assert abs(reference) <= 1e-6
    paired = kid(x, x.copy(), estimator="paired")
    assert abs(paired.mean) <= 1e-6 and np.isnan(paired.std)
    independent = kid(x, x.copy(), estimator="independent")
    assert independent.mean == pytest.approx(independent_double_sum(x, x), rel=1e-12) and independent.mean < -0.1
    half = kid(features(12, 2048, 7), features(12, 2048, 7), subsets=10, subset_size=6, estimator="paired")
    assert abs(half.mean) <= 1e-6 and half.std == pytest.approx(0.0, abs=1e-9)  # every subset of exact pairs is 0


def test_kid_rejects_an_unknown_estimator_and_unequal_pairs():
    x = features(5, 4, 8)
    with pytest.raises(ValueError, match=r"invalid KID estimator 'biased'; choose one of paired, independent"):
        kid(x, x, estimator="biased")
    with pytest.raises(ValueError, match="paired KID needs as many rows in both sets, got 5 and 4"):
        kid(x, x[:4], estimator="paired")


def stats(rows: np.ndarray, index) -> FeatureStats:
    s = FeatureStats(rows.shape[1], keep_features=True)
    s.update(rows, index)
    return s


def test_features_pair_by_dataset_position_whatever_their_order():
    real = features(6, 5, 9)
    order = np.array([4, 0, 5, 2])  # fakes of four images, in another order; images 1 and 3 have none
    fake = real[order] * 0.9
    x, y, left_out = paired_features(stats(real, range(6)), stats(fake, order))
    np.testing.assert_array_equal(x, real[order].astype(np.float32)) and np.testing.assert_array_equal(y, fake)
    assert left_out == 2
    shuffled = FeatureStats(5, keep_features=True)  # the originals arriving in two chunks, out of order
    shuffled.update(real[[3, 5, 1]], [3, 5, 1])
    shuffled.update(real[[0, 4, 2]], [0, 4, 2])
    x2, _, _ = paired_features(shuffled, stats(fake, order))
    np.testing.assert_array_equal(x2, x)
    with pytest.raises(UnpairedSets, match="carry no image positions"):
        paired_features(stats(real, None), stats(fake, order))
    with pytest.raises(UnpairedSets, match="1 reconstruction"):
        paired_features(stats(real[:5], range(5)), stats(fake, order))
    with pytest.raises(UnpairedSets, match="more than once"):
        paired_features(stats(real, [0, 1, 2, 2, 4, 5]), stats(fake, order))


def test_sets_that_cannot_be_paired_fall_back_to_the_independent_estimator_and_say_so():
    from evalvae.metrics.distribution import FIDKID

    metric = FIDKID(extractor="tests.helpers.TinyExtractor")
    real, fake = features(5, 24, 10), features(5, 24, 11, shift=0.05)
    row = metric.compute(stats(real, None), stats(fake, range(5)))["kid"]
    assert row["mean"] == pytest.approx(independent_double_sum(real, fake), rel=1e-6)
    assert "the images could not be paired (the originals' features carry no image positions)" in row["note"]
    assert "independent-samples estimator used instead" in row["note"]
    entry = metric.protocol()["kid"]
    assert entry["estimator"] == "paired" and entry["unpaired_fallback"] == [
        "the originals' features carry no image positions"
    ]
    paired = FIDKID(extractor="tests.helpers.TinyExtractor")
    row = paired.compute(stats(real, range(5)), stats(fake, range(5)))["kid"]
    assert row["mean"] == pytest.approx(paired_double_sum(real, fake), rel=1e-6)
    assert "unpaired_fallback" not in paired.protocol()["kid"]


# -- through runs ----------------------------------------------------------------------------------
def standin(name: str, **params) -> list[str]:
    return [f"+vae.{name}._target_={IDENTITY}", *(f"+vae.{name}.{k}={v}" for k, v in params.items())]


def overrides(image_dir, cache, *extra) -> list[str]:
    dataset = ["dataset=folder", f"dataset.path={image_dir}", "dataset.resolution=32", "device=cpu", "workers=0"]
    return [*dataset, f"cache_dir={cache}", *SET_LEVEL, *extra]


def kid_row(out) -> pd.Series:
    return pd.read_csv(out / "summary.csv").set_index("metric").loc["kid"]


def tiny_features(images: torch.Tensor) -> np.ndarray:
    """TinyExtractor's features as the run stores them (float32), back in float64."""
    return TinyExtractor()(images).astype(np.float32).astype(np.float64)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Two runs of a perfect stand-in on six images, one per KID estimator, sharing a cache."""
    root = tmp_path_factory.mktemp("kid")
    images = write_images(root / "images")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVALVAE_CACHE", str(root / "evalvae-cache"))
        for estimator, extra in (("paired", []), ("independent", ["metrics.fid.kid_estimator=independent"])):
            args = [*overrides(images, root / "c", *extra), *standin("perfect")]  # paired: the default
            out[estimator] = run(compose_run(args), out_dir=root / estimator).out_dir
    return {"images": images, **out}


def test_a_perfect_autoencoder_has_zero_kid_with_no_std_and_metrics_json_states_the_protocol(runs):
    from evalvae.report.load import read_run
    from evalvae.report.sections import group_sections

    out = runs["paired"]
    row = kid_row(out)
    assert abs(row["mean"]) <= 1e-6 and row["n"] == 6 and pd.isna(row["std"])
    assert "no std: every subset is the whole set of 6 pairs" in row["note"]
    assert "paired estimator over 6 image pairs" in row["note"]
    (section,) = group_sections([read_run(out, "r")])
    notes = section.cell_notes[("perfect", "kid")]  # the report's footnotes: the caveat, not the protocol restated
    assert notes == ["no std: every subset is the whole set of 6 pairs, so the subsets do not vary"]
    entry = json.loads((out / "metrics.json").read_text())["metrics"]["kid"]
    assert entry["estimator"] == "paired" and entry["std_ddof"] == 0
    assert entry["subsets"] == 100 and entry["subset_size"] == 1000 and entry["seed"] == 0
    assert "k(x_i,x_j) + k(y_i,y_j) - k(x_i,y_j) - k(x_j,y_i)" in entry["formula"]
    assert "i!=j" in entry["formula"] and "(a.b / d + 1)^3" in entry["formula"]
    assert entry["pairing"] == "each reconstruction with its own original, by dataset position"


def test_the_independent_option_is_the_biased_estimator_of_the_two_tools(runs):
    from evalvae.data import folder

    out = runs["independent"]
    ds = folder(str(runs["images"]), resolution=32)
    f = tiny_features(torch.stack([ds[i].image for i in range(len(ds))]))
    row = kid_row(out)
    assert row["mean"] == pytest.approx(independent_double_sum(f, f), rel=1e-9) and row["mean"] < 0
    assert "independent-samples estimator" in row["note"] and pd.isna(row["std"])
    assert json.loads((out / "metrics.json").read_text())["metrics"]["kid"]["estimator"] == "independent"


def test_compare_refuses_runs_with_different_kid_estimators(runs, caplog):
    from evalvae.compare.cli import run_compare
    from evalvae.report.load import read_run
    from evalvae.report.sections import group_sections

    paired, independent = runs["paired"], runs["independent"]
    with caplog.at_level("ERROR"):
        assert run_compare(paired, [independent]) == 2
    assert "metrics.kid.estimator: 'paired' in the baseline, 'independent' now" in caplog.text
    assert run_compare(paired, [paired]) == 0
    sections = group_sections([read_run(paired, "paired"), read_run(independent, "independent")])
    assert len(sections) == 2, "the report does not put runs with different KID estimators in one table"


def test_a_bad_estimator_names_the_argument_value_and_choices(tmp_path, image_dir):
    with pytest.raises(ConfigError) as e:
        run(
            compose_run([*overrides(image_dir, tmp_path / "c", "metrics.fid.kid_estimator=biased"), *standin("p")]),
            out_dir=tmp_path / "r",
        )
    assert str(e.value) == "invalid metrics.fid.kid_estimator='biased'; choose one of paired, independent"


def test_references_from_ref_in_another_order_pair_with_the_right_reconstructions(tmp_path):
    """With crop=none, images of one size share a group, so a batch of 6 puts image 2 before image 1; ``ref``
    with batches of 1 stores the originals in dataset order. Pairing by position must still match them."""
    from evalvae.data import folder
    from evalvae.metrics import from_uint8, to_pixels
    from evalvae.ref.task import ref

    images = write_images(tmp_path / "images", sizes=((40, 56), (48, 48), (40, 56), (48, 48), (40, 56), (32, 64)))
    cache = tmp_path / "cache"
    geometry = ["dataset.crop=none"]
    ref(compose_run([*overrides(images, cache, *geometry), "batch_size=1"], "ref"))
    TinyExtractor.calls = 0
    out = run(
        compose_run([*overrides(images, cache, *geometry, "batch_size=6"), *standin("g", gain=0.8)]),
        out_dir=tmp_path / "from-ref",
    ).out_dir
    assert TinyExtractor.calls == 6, "the references came from the cache"
    ds = folder(str(images), crop="none")
    x = np.concatenate([tiny_features(ds[i].image[None]) for i in range(6)])
    y = np.concatenate(
        [tiny_features(to_pixels(from_uint8(ds[i].image[None]) * 0.8).to(torch.uint8)) for i in range(6)]
    )
    expected = paired_double_sum(x, y)
    assert expected > 0 and kid_row(out)["mean"] == pytest.approx(expected, rel=1e-6)
    same = run(
        compose_run([*overrides(images, tmp_path / "fresh", *geometry, "batch_size=6"), *standin("g", gain=0.8)]),
        out_dir=tmp_path / "in-run",
    ).out_dir
    assert kid_row(same)["mean"] == pytest.approx(expected, rel=1e-6)


def test_missing_files_leave_their_originals_out_of_the_pairs(tmp_path):
    """``+vae=files`` with two of five reconstructions missing and the others exact copies: KID over 3 pairs is 0."""
    from evalvae.data.transforms import center_crop, resize_shorter
    from evalvae.ref.task import ref

    images, rec = tmp_path / "images", tmp_path / "rec"
    images.mkdir(), rec.mkdir()
    names = ["a.png", "b.jpg", "c.png", "d.png", "e.jpg"]
    for i, (name, (h, w)) in enumerate(zip(names, [(40, 56), (48, 48), (64, 40), (36, 50), (44, 44)])):
        Image.fromarray(photo(h, w, seed=i)).save(images / name)
    for name in ("a.png", "c.png", "e.jpg"):
        crop = center_crop(resize_shorter(Image.open(images / name).convert("RGB"), 32), 32)
        crop.save(rec / (os.path.splitext(name)[0] + ".png"))
    ref(compose_run(overrides(images, tmp_path / "c"), "ref"))  # the references: all five originals
    args = ["+vae=files", f"vae.files.path={rec}", *overrides(images, tmp_path / "c")]
    out = run(compose_run(args), out_dir=tmp_path / "r").out_dir
    assert json.loads((out / "metrics.json").read_text())["metrics"]["kid"]["reference"]["n"] == 5
    row = kid_row(out)
    assert row["n"] == 3 and abs(row["mean"]) <= 1e-6
    assert "KID over 3 of 5 images, against the originals of those 3" in row["note"]
    rfid = pd.read_csv(out / "summary.csv").set_index("metric").loc["rfid"]
    # exact copies against their own 3 originals: measured -5e-15
    assert rfid["n"] == 3 and abs(rfid["mean"]) <= 1e-9


def test_stored_chunks_without_image_positions_are_redone(tmp_path, image_dir, tiny_pth_dir):
    """A result chunk whose kept features lack the images' positions (written before they were stored) is
    recomputed rather than read; chunks with them are read, and the rerun's KID equals the first."""
    from evalvae.metrics.base import INDEX
    from evalvae.store import Store

    cache = tmp_path / "c"
    taef2 = ["+vae=taef2", f"vae.taef2.source={tiny_pth_dir}", "vae.taef2.sha256=null", "vae.taef2.weights_prefix=tiny"]
    args = [*overrides(image_dir, cache, "batch_size=3"), *taef2]
    first = run(compose_run(args), out_dir=tmp_path / "a").out_dir
    TinyExtractor.calls = 0
    again = run(compose_run(args), out_dir=tmp_path / "b").out_dir
    assert TinyExtractor.calls == 0 and pd.read_csv(again / "timings.csv").batches_cached[0] == 2
    assert kid_row(again)["mean"] == pytest.approx(kid_row(first)["mean"], rel=1e-12)
    store = Store(cache / "results")
    stripped = 0
    for path in (cache / "results").glob("??/*.safetensors"):  # result chunks and the originals' chunks
        tensors, meta = store.read(path.stem)
        if any(name.endswith(INDEX) for name in tensors):
            store.write(path.stem, {n: t for n, t in tensors.items() if not n.endswith(INDEX)}, meta)
            stripped += 1
    assert stripped == 4
    (cache / "refstats").rename(cache / "refstats-old")  # the references then come from the run itself
    TinyExtractor.calls = 0
    old = run(compose_run(args), out_dir=tmp_path / "c-old").out_dir
    assert TinyExtractor.calls == 12 and pd.read_csv(old / "timings.csv").batches_cached[0] == 0
    assert kid_row(old)["mean"] == pytest.approx(kid_row(first)["mean"], rel=1e-12)


def test_cached_references_without_image_positions_are_recomputed(tmp_path, image_dir):
    """A reference entry whose features lack positions is recomputed for the paired KID, then carries them."""
    cache = tmp_path / "c"
    args = [*overrides(image_dir, cache), *standin("g", gain=0.9)]
    first = run(compose_run(args), out_dir=tmp_path / "a").out_dir
    (entry,) = reference_entries(cache)
    arrays, meta = read_entry(entry)
    assert arrays["index"].tolist() == list(range(6))
    write_entry(entry, {name: a for name, a in arrays.items() if name != "index"}, meta)
    for chunk in (cache / "results").rglob("*.safetensors"):
        chunk.unlink()  # so the run needs the references
    out = run(compose_run(args), out_dir=tmp_path / "b").out_dir
    assert json.loads((out / "metrics.json").read_text())["metrics"]["kid"]["reference"]["source"] == "computed"
    assert read_entry(entry)[0]["index"].tolist() == list(range(6))
    assert kid_row(out)["mean"] == pytest.approx(kid_row(first)["mean"], rel=1e-12)
    assert "could not be paired" not in kid_row(out)["note"]


# -- the real Inception ----------------------------------------------------------------------------
@pytest.mark.slow  # about 1-2 min on a shared 2-core CPU (the Inception on 8 images, plus loading)
def test_identity_on_four_kodak_photos_has_zero_kid_with_the_real_inception(tmp_path, assets, real_weights):
    """``+vae=identity metrics=all`` with the real FID Inception on 4 Kodak photos: KID 0 (the independent
    estimator gave -0.215 here), and the float64 double sum on the run's own stored features agrees."""
    inception = f"metrics.fid.weights={real_weights / 'fid' / 'pt_inception-2015-12-05_torch-fidelity.pth'}"
    kodak = ["dataset=folder", f"dataset.path={assets / 'images' / 'kodak'}", "dataset.limit=4", "workers=0"]
    args = ["+vae=identity", "metrics=all", "~metrics.lpips", inception, *kodak, f"cache_dir={tmp_path / 'c'}"]
    out = run(compose_run(args), out_dir=tmp_path / "r").out_dir
    row = kid_row(out)
    assert abs(row["mean"]) <= 1e-6 and row["n"] == 4 and pd.isna(row["std"])
    (entry,) = reference_entries(tmp_path / "c")
    f = read_entry(entry)[0]["features"].astype(np.float64)
    assert f.shape == (4, 2048)
    assert abs(paired_double_sum(f, f.copy())) <= 1e-6
    assert independent_double_sum(f, f.copy()) < -0.1  # what the independent estimator reports for this run
