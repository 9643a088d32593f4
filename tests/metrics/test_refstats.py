"""rFID/KID references: an entry cached under a dataset's key covers exactly the images that key names, and a VAE
that scored a subset (``+vae=files`` with files missing, non-finite reconstructions) is scored against the originals
of that same subset, with a note "over N of M images".

Tiny stand-ins: six images at 32 px, the lossless-or-gain ``Identity`` VAE and ``TinyExtractor`` features.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.run import run
from tests.helpers import (
    NO_SAMPLES,
    TinyExtractor,
    compose_run,
    read_entry,
    reference_entries,
    write_entry,
    write_images,
)

IDENTITY = "tests.run_standins.Identity"
SET_LEVEL = [
    "metrics=all",
    "~metrics.lpips",
    "metrics.fid.extractor=tests.helpers.TinyExtractor",
    "metrics.fid.kid_subsets=7",
    "metrics.fid.kid_subset_size=3",
]
MISSING = (1, 4)  # dataset positions whose reconstruction file is missing
# Two runs that score the same images against the same references differ only by float round-off in how the
# float64 sums were formed (a reference less the left-out originals, or summed without them): measured 2.3e-14
# relative at most (rFID and KID; 0 where both runs form the reference alike).
RTOL = 1e-12
# rFID against np.cov statistics of the features computed here (another order of the float64 sums): measured
# 8e-14 relative at most.
RFID_RTOL = 1e-11


def overrides(image_dir, cache, *extra) -> list[str]:
    dataset = ["dataset=folder", f"dataset.path={image_dir}", "dataset.resolution=32", "device=cpu", "workers=0"]
    return [*dataset, "batch_size=4", f"cache_dir={cache}", *SET_LEVEL, *NO_SAMPLES, *extra]


def standin(name: str = "g", gain: float = 0.9, **params) -> list[str]:
    extra = [f"+vae.{name}.{k}={v}" for k, v in params.items()]
    return [f"+vae.{name}._target_={IDENTITY}", f"+vae.{name}.gain={gain}", *extra]


def originals(image_dir) -> torch.Tensor:
    from evalvae.data import folder

    ds = folder(str(image_dir), resolution=32)
    return torch.stack([ds[i].image for i in range(len(ds))])


def gained(images: torch.Tensor, gain: float = 0.8) -> torch.Tensor:
    """``Identity(gain)``'s 8-bit reconstructions: the gain on [-1, 1] pixels, rounded to 8 bits as the run does."""
    from evalvae.metrics import from_uint8, to_pixels

    return to_pixels(from_uint8(images) * gain).to(torch.uint8)


@pytest.fixture
def files_dir(tmp_path, image_dir):
    """Reconstructions (gain 0.8) of the six images, as PNG files named after them, less those at MISSING."""
    rec = tmp_path / "rec"
    rec.mkdir()
    names = sorted(p.name for p in image_dir.iterdir())  # the folder dataset's order
    for i, image in enumerate(gained(originals(image_dir))):
        if i not in MISSING:
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(rec / (os.path.splitext(names[i])[0] + ".png"))
    return rec


def files(rec) -> list[str]:
    """The files VAE as override keys (not ``+vae=files``, whose config group merges first), so VAEs run in the
    order given."""
    return ["+vae.files._target_=evalvae.vae.files.FilesAdapter", f"+vae.files.path={rec}"]


def summary(out) -> pd.DataFrame:
    return pd.read_csv(out / "summary.csv").fillna({"note": ""}).set_index(["vae", "metric"])


def set_rows(out, vae: str) -> pd.DataFrame:
    return summary(out).loc[vae].loc[["rfid", "kid"]]


def expected_rfid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """rFID of two uint8 image sets from TinyExtractor features, means and np.cov (float64) computed here."""
    from evalvae.metrics.frechet import frechet_distance

    x, y = TinyExtractor()(real).astype(np.float64), TinyExtractor()(fake).astype(np.float64)
    return frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False), len(x), len(y))


def entries(cache) -> list[int]:
    """The image count of each cached reference entry."""
    return [int(read_entry(entry)[1]["n"]) for entry in reference_entries(cache)]


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> pd.DataFrame:
    """rFID and KID of the gain-0.9 stand-in run alone on the six images (the same files as ``image_dir``)."""
    root = tmp_path_factory.mktemp("alone")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVALVAE_CACHE", str(root / "evalvae-cache"))
        images = write_images(root / "images")
        return set_rows(run(compose_run([*standin(), *overrides(images, root / "c")]), out_dir=root / "r").out_dir, "g")


# -- a later VAE is not scored against a partial reference -----------------------------------------
def test_a_vae_after_a_partial_files_vae_in_the_same_run_scores_as_it_does_alone(tmp_path, image_dir, files_dir, alone):
    both = run(
        compose_run([*files(files_dir), *standin(), *overrides(image_dir, tmp_path / "c")]), out_dir=tmp_path / "both"
    ).out_dir
    assert [v["vae"] for v in json.loads((both / "vaes.json").read_text())] == ["files", "g"]
    got, want = set_rows(both, "g"), alone
    assert got["n"].tolist() == want["n"].tolist() == [6, 6]
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=RTOL)
    whole = originals(image_dir)
    assert got["mean"]["rfid"] == pytest.approx(expected_rfid(whole, gained(whole, 0.9)), rel=RFID_RTOL)
    assert entries(tmp_path / "c") == [6], "the one reference entry holds all six originals"
    assert json.loads((both / "metrics.json").read_text())["metrics"]["rfid"]["reference"]["n"] == 6


def test_a_later_run_sharing_the_cache_scores_as_it_does_alone(tmp_path, image_dir, files_dir, alone):
    cache = tmp_path / "c"
    run(compose_run([*files(files_dir), *overrides(image_dir, cache)]), out_dir=tmp_path / "files")
    assert entries(cache) == [6]
    later = run(compose_run([*standin(), *overrides(image_dir, cache)]), out_dir=tmp_path / "later").out_dir
    assert json.loads((later / "metrics.json").read_text())["metrics"]["rfid"]["reference"]["source"] == "cache"
    np.testing.assert_allclose(set_rows(later, "g")["mean"], alone["mean"], rtol=RTOL)

    # the references rebuilt from the files VAE's stored chunks (its batches are read, not recomputed) also
    # cover every original: the originals' chunks hold the images whose reconstruction file is missing too
    for entry in reference_entries(cache):
        entry.unlink()
    rebuilt = run(
        compose_run([*files(files_dir), *standin(), *overrides(image_dir, cache)]), out_dir=tmp_path / "rebuilt"
    ).out_dir
    assert pd.read_csv(rebuilt / "timings.csv").set_index("vae").loc["files", "batches_cached"] == 2
    assert entries(cache) == [6]
    np.testing.assert_allclose(set_rows(rebuilt, "g")["mean"], alone["mean"], rtol=RTOL)


# -- a VAE that scored a subset: against the originals of that subset ------------------------------------
@pytest.mark.parametrize("order", ["files-last", "files-only"])
def test_a_files_vae_with_missing_files_is_scored_against_the_originals_it_reconstructed(
    tmp_path, image_dir, files_dir, order
):
    """Whether the full reference was cached by the VAE before it or is computed in its own pass, the files VAE's
    rFID is that of its 4 reconstructions against those 4 originals, as a run on a dataset of just those 4 gives."""
    vaes = [*standin(), *files(files_dir)] if order == "files-last" else files(files_dir)
    cache = tmp_path / "c"
    out = run(compose_run([*vaes, *overrides(image_dir, cache)]), out_dir=tmp_path / "r").out_dir
    assert [v["vae"] for v in json.loads((out / "vaes.json").read_text())] == ["g", "files"][-len(vaes) // 2 :]
    kept = [i for i in range(6) if i not in MISSING]
    real = originals(image_dir)[kept]
    rows = set_rows(out, "files")
    assert rows["n"].tolist() == [4, 4]
    assert rows["mean"]["rfid"] == pytest.approx(expected_rfid(real, gained(real)), rel=RFID_RTOL)
    assert "rFID over 4 of 6 images, against the originals of those 4" in rows["note"]["rfid"]
    assert "KID over 4 of 6 images, against the originals of those 4" in rows["note"]["kid"]
    assert entries(cache) == [6], "the whole dataset's entry is complete; no subset is cached under its key"

    # the same 4 reconstructions scored on a dataset of just those 4 images give the same rFID and KID
    subset = tmp_path / "subset"
    subset.mkdir()
    names = sorted(p.name for p in image_dir.iterdir())
    for i in kept:
        (subset / names[i]).write_bytes((image_dir / names[i]).read_bytes())
    small = run(
        compose_run([*files(files_dir), *overrides(subset, tmp_path / "fresh")]), out_dir=tmp_path / "small"
    ).out_dir
    np.testing.assert_allclose(rows["mean"], set_rows(small, "files")["mean"], rtol=RTOL)
    assert "over" not in set_rows(small, "files")["note"]["rfid"], "a VAE that scored every image has no such note"
    protocol = json.loads((out / "metrics.json").read_text())["metrics"]["rfid"]["reference"]
    assert protocol["n"] == 6 and protocol["subsets"] == {"files": {"n": 4, "of": 6}}

    # a rerun reads the stored chunks (which keep the left-out originals' features) and scores the same
    again = run(compose_run([*vaes, *overrides(image_dir, cache)]), out_dir=tmp_path / "again").out_dir
    assert pd.read_csv(again / "timings.csv").set_index("vae").loc["files", "batches_cached"] == 2
    pd.testing.assert_frame_equal(set_rows(again, "files"), rows)


def test_non_finite_reconstructions_are_scored_against_the_originals_of_the_finite_ones(tmp_path, image_dir):
    """Images 1 and 4 decode to NaN/inf: rFID is of the other four against their originals, and KID pairs those four
    with their own originals, in subsets of 3."""
    from tests.metrics.test_kid import paired_reference, tiny_features

    out = run(
        compose_run([*standin("bad", nan_images="[1]", inf_images="[4]"), *overrides(image_dir, tmp_path / "c")]),
        out_dir=tmp_path / "r",
    ).out_dir
    kept = [0, 2, 3, 5]
    real = originals(image_dir)[kept]
    fake = gained(real, 0.9)
    rows = set_rows(out, "bad")
    assert rows["n"].tolist() == [4, 4]
    assert rows["mean"]["rfid"] == pytest.approx(expected_rfid(real, fake), rel=RFID_RTOL)
    assert "rFID over 4 of 6 images" in rows["note"]["rfid"] and "2 non-finite" in rows["note"]["rfid"]
    assert entries(tmp_path / "c") == [6]
    mean, std = paired_reference(tiny_features(real), tiny_features(fake), subsets=7, m=3, seed=0)
    # measured: 3e-8 relative (features stored as float32 and the float kernels' order)
    assert rows["mean"]["kid"] == pytest.approx(mean, rel=1e-6) and rows["std"]["kid"] == pytest.approx(std, rel=1e-5)
    assert "KID over 4 of 6 images, against the originals of those 4" in rows["note"]["kid"]
    assert "std over subsets, ddof 0" in rows["note"]["kid"]
    protocol = json.loads((out / "metrics.json").read_text())["metrics"]["kid"]
    assert protocol["estimator"] == "paired" and protocol["std_ddof"] == 0 and protocol["subset_size"] == 3


# -- the numeric core: statistics of a set less some of its images ----------------------------------------
def test_statistics_without_some_images_equal_those_of_the_rest():
    from evalvae.metrics.frechet import FeatureStats

    rng = np.random.default_rng(0)
    f = np.abs(rng.normal(0.3, 0.4, (40, 16)))  # non-negative, as Inception's pool3 features
    index = rng.permutation(100)[:40]
    full = FeatureStats(16, keep_features=True)
    for rows in np.array_split(np.arange(40), 3):
        full.update(f[rows], index[rows])
    gone = np.array([3, 17, 18, 39])
    dropped = FeatureStats(16, keep_features=True)
    dropped.update(f[gone], index[gone])
    rest = full.without(dropped)
    keep = np.setdiff1d(np.arange(40), gone)
    assert rest.n == 36 and rest.index.tolist() == index[keep].tolist()
    np.testing.assert_array_equal(rest.features, f[keep].astype(np.float32))
    # float64 mean and covariance of the rest, computed here: measured 1.7e-16 absolute (sums of 40 rows less 4)
    np.testing.assert_allclose(rest.mean, f[keep].mean(0), rtol=0, atol=1e-14)
    np.testing.assert_allclose(rest.cov, np.cov(f[keep], rowvar=False), rtol=0, atol=1e-14)
    assert full.n == 40, "the statistics it was taken from are unchanged"

    sums = FeatureStats(16)  # rFID's statistics keep no features: the sums alone
    sums.update(f)
    part = FeatureStats(16)
    part.update(f[gone])
    np.testing.assert_allclose(sums.without(part).cov, np.cov(f[keep], rowvar=False), rtol=0, atol=1e-14)

    stranger = FeatureStats(16, keep_features=True)
    stranger.update(f[:2], [1000, 1001])
    with pytest.raises(ValueError, match="2 image\\(s\\) to remove, 0 of them found by position"):
        full.without(stranger)
    unplaced = FeatureStats(16, keep_features=True)
    unplaced.update(f[:2])
    with pytest.raises(ValueError, match="without their images' positions"):
        full.without(unplaced)
    with pytest.raises(ValueError, match="cannot remove 40 images from statistics of 4"):
        dropped.without(full)


def test_a_cached_reference_of_other_images_gives_no_number_and_says_why(tmp_path, image_dir):
    """An entry whose count differs from the images the VAE saw (damaged, or written by other code under the same
    key) is not used: rFID and KID are NaN with the reason, and the per-image metrics are unaffected."""
    cache = tmp_path / "c"
    first = run(compose_run([*standin(), *overrides(image_dir, cache)]), out_dir=tmp_path / "a").out_dir
    (entry,) = reference_entries(cache)
    arrays, meta = read_entry(entry)
    write_entry(entry, arrays, {**meta, "n": "5"})
    out = run(compose_run([*standin(), *overrides(image_dir, cache)]), out_dir=tmp_path / "b").out_dir
    rows = set_rows(out, "g")
    assert rows["mean"].isna().all() and rows["n"].tolist() == [6, 6]
    why = "the reference statistics do not cover the images this VAE saw: it holds 5 originals, this VAE saw 6"
    assert (
        rows["note"].str.startswith(why).all() and rows["note"].str.endswith(f"delete {entry} to recompute them").all()
    )
    assert summary(out).loc[("g", "psnr"), "mean"] == summary(first).loc[("g", "psnr"), "mean"]


def test_entries_and_chunks_of_the_earlier_coverage_are_not_read(tmp_path, image_dir, files_dir, monkeypatch):
    """Reference entries and chunks written when they held only the originals a VAE reconstructed have other keys:
    a bump of either version misses them, an unchanged one hits."""
    from evalvae.jobs import store
    from evalvae.metrics import refstats

    args = [*files(files_dir), *overrides(image_dir, tmp_path / "c")]
    run(compose_run(args), out_dir=tmp_path / "a")

    def timing(out) -> pd.Series:
        return pd.read_csv(out / "timings.csv").set_index("vae").loc["files"]

    def source(out) -> str:
        return json.loads((out / "metrics.json").read_text())["metrics"]["rfid"]["reference"]["source"]

    again = run(compose_run(args), out_dir=tmp_path / "b").out_dir
    assert timing(again)["batches_cached"] == 2 and source(again) == "cache"
    monkeypatch.setattr(refstats, "COVERAGE", refstats.COVERAGE + 1)
    assert source(run(compose_run(args), out_dir=tmp_path / "c1").out_dir) == "computed"
    monkeypatch.setattr(store, "ORIGINALS_VERSION", store.ORIGINALS_VERSION + 1)
    assert timing(run(compose_run(args), out_dir=tmp_path / "c2").out_dir)["batches_cached"] == 0
