"""Text fidelity (metrics.text): NED, the text chart, region binning, detection once per image, result files.

The OCR is the real PP-OCRv4 of rapidocr-onnxruntime (CPU). Images are small (the text chart at
64-128 px, a few pages) so that the file runs in seconds.
"""

from __future__ import annotations

import builtins
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.data.textchart import textchart
from evalvae.metrics.regions import REGIONS, SizeBins
from evalvae.run import run
from evalvae.vocab import Region
from tests.helpers import NO_SAMPLES, compose_run
from tests.prerequisites import require_module
from tests.run_standins import Identity

require_module("rapidocr_onnxruntime", 'pip install "evalvae[regions]"')
from evalvae.metrics.text import TextFidelity, levenshtein, ned, normalise  # noqa: E402

IDENTITY = "tests.run_standins.Identity"
PAGES = ["sans-6-7px", "sans-8-14px", "sans-16-24px", "sans-32-64px", "blank"]


@pytest.fixture(scope="module")
def ocr():
    return TextFidelity(cache=False)


@pytest.fixture(scope="module")
def chart():
    """The sans pages and the blank page at 128 px: pixels (N, 3, H, W) float64 and their truth."""
    ds = textchart(128)
    samples = [ds[i] for i, p in enumerate(ds.pages) if p.id in PAGES]
    return torch.stack([s.image for s in samples]).double(), [s.truth for s in samples]


def by_bin(out) -> pd.DataFrame:
    return pd.DataFrame([r for image in out[REGIONS] for r in image]).groupby("bin")[["text_ned", "text_acc"]].mean()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = 4
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float64) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(x)
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c).round()


class Blur(Identity):
    """The stand-in autoencoder with a Gaussian blur of ``sigma`` px on its output."""

    def __init__(self, name, sigma: float = 2.0, **kwargs):
        super().__init__(name, **kwargs)
        self.sigma = sigma

    def _decode_raw(self, z):
        y = super()._decode_raw(z)
        return blur((y + 1) * 127.5, self.sigma) / 127.5 - 1


# -- the numeric core ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "a, b",
    [
        ("", ""),
        ("", "abc"),
        ("kitten", "sitting"),
        ("flaw", "lawn"),
        ("abc", "abc"),
        ("ab", "ba"),
        ("aaaa", "a"),
        ("Zürich", "Zurich"),
        ("日本語テキスト", "日本テキスト語"),
        ("x" * 40 + "y", "y" + "x" * 40),
    ],
)
def test_ned_equals_rapidfuzz(a, b):
    from rapidfuzz.distance import Levenshtein

    assert levenshtein(a, b) == Levenshtein.distance(a, b)
    assert ned(a, b) == pytest.approx(Levenshtein.normalized_distance(a, b), abs=1e-12)
    assert ned(a, b) == ned(b, a)


def test_normalise_folds_case_width_and_whitespace():
    assert normalise(" Hello\tWORLD \n") == "helloworld"
    assert normalise("ＡＢＣ１２") == "abc12"  # full-width forms, as PP-OCR's dictionary can emit them
    assert normalise("Straße") == normalise("STRASSE")


def test_size_bins():
    bins = SizeBins((8, 16, 32))
    assert bins.labels == ["<8", "8–16", "16–32", "≥32"]
    sizes = {6: "<8", 7.99: "<8", 8: "8–16", 15.9: "8–16", 16: "16–32", 31: "16–32", 32: "≥32", 64: "≥32"}
    assert {s: bins.bin_of(s) for s in sizes} == sizes
    with pytest.raises(ValueError, match="bins"):
        SizeBins((16, 8))


def test_textchart_is_deterministic_with_truth_at_any_resolution():
    for r in (64, 96, 256):
        a, b = textchart(r), textchart(r)
        assert a.file_digests() == b.file_digests()
        sizes = {line.size for p in a.pages for line in p.lines}
        assert min(sizes) == 6 and (max(sizes) == 64) == (r >= 256)
        s = a[0]
        assert tuple(s.image.shape) == (3, r, r) and s.truth
        for region in s.truth:
            xs, ys = zip(*region.box)
            assert 0 <= min(xs) < max(xs) <= r and 0 <= min(ys) < max(ys) <= r and region.truth.strip()
    assert textchart(64).fingerprint() != textchart(96).fingerprint()
    assert textchart(128)[len(textchart(128)) - 1].truth == []  # the blank page


# -- the metric on the chart ----------------------------------------------------------------------
def test_identity_scores_ned_0_and_accuracy_1_in_every_bin(ocr, chart):
    pixels, truth = chart
    out = ocr(pixels, pixels.clone(), truth=truth)
    table = by_bin(out)
    assert set(table.index) == {"<8", "8–16", "16–32", "≥32"}
    assert (table["text_ned"] == 0).all() and (table["text_acc"] == 1).all()
    # the ground truth is read back at the sizes the OCR can read (the 6-7 px lines are its limit)
    records = pd.DataFrame([r for image in out[REGIONS] for r in image])
    assert records.loc[records["size_px"] >= 16, "text_t_acc"].mean() == 1.0
    # the blank page: counted (0 regions), its means NaN, never averaged in
    assert out["text_regions"][-1] == 0 and math.isnan(out["text_ned"][-1]) and math.isnan(out["text_acc"][-1])
    assert (out["text_regions"][:-1] > 0).all() and (out["text_ned"][:-1] == 0).all()


def test_a_strong_blur_fails_the_small_bins_first(ocr, chart):
    pixels, truth = chart
    table = by_bin(ocr(pixels, blur(pixels, 1.5), truth=truth))
    ned_by_size = table.loc[["<8", "8–16", "16–32", "≥32"], "text_ned"].to_numpy()
    assert ned_by_size[0] > 0.5 and ned_by_size[-1] < 0.05, table
    assert (np.diff(ned_by_size) <= 1e-9).all(), f"NED should fall with text height:\n{table}"
    assert table.loc["<8", "text_acc"] < table.loc["≥32", "text_acc"]


def test_detection_finds_the_lines_without_truth(ocr, chart):
    pixels, _ = chart
    ocr.calls["detect"] = 0
    out = ocr(pixels[2:4], pixels[2:4].clone())  # the 16-64 px pages: no ground truth given
    assert ocr.calls["detect"] == 2
    assert out["text_regions"].tolist() == [len(t) for t in chart[1][2:4]]  # one box per rendered line
    records = [r for image in out[REGIONS] for r in image]
    assert all(r["text_acc"] == 1 and math.isnan(r["text_t_ned"]) for r in records)
    sizes = sorted(r["size_px"] for r in records)
    assert sizes[0] >= 12 and sizes[-1] <= 80  # a detected box's height is near the font size (16-64 px)


def test_unavailable_without_rapidocr(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_rapidocr(name, *args, **kwargs):
        if name.startswith("rapidocr_onnxruntime"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rapidocr)
    chart = ["dataset=textchart", "dataset.resolution=64", "dataset.limit=2", f"+vae.a._target_={IDENTITY}"]
    out = run(compose_run(run_overrides(tmp_path, *chart)), out_dir=tmp_path / "run").out_dir
    summary = pd.read_csv(out / "summary.csv").set_index("metric")
    for name in ("text_ned", "text_acc", "text_t_ned", "text_t_acc"):
        assert summary.loc[name, "n"] == 0 and math.isnan(summary.loc[name, "mean"])
        assert 'pip install "evalvae[regions]"' in summary.loc[name, "note"]
        assert "\n" not in summary.loc[name, "note"]
    assert summary.loc["psnr", "n"] == 2  # the rest of the run is unaffected
    assert not (out / "per_region.parquet").exists()


# -- in a run ---------------------------------------------------------------------------------------
def run_overrides(tmp_path, *extra) -> list[str]:
    return [
        "metrics=text",
        "device=cpu",
        "workers=0",
        "batch_size=2",
        f"cache_dir={tmp_path / 'cache'}",
        *NO_SAMPLES,
        *extra,
    ]


@pytest.fixture
def chart_folder(tmp_path):
    """Three text chart pages as PNG files (a folder dataset: no ground truth, so the lines are detected)."""
    ds = textchart(64)
    folder = tmp_path / "pages"
    folder.mkdir()
    for i in (1, 2, 16):  # 8-14 px, 16-20 px, blank
        Image.fromarray(ds[i].image.permute(1, 2, 0).numpy()).save(folder / f"{ds.pages[i].id}.png")
    return folder


def test_detection_runs_once_per_image_for_two_vaes_and_is_cached_across_runs(tmp_path, chart_folder, monkeypatch):
    calls = []
    detect = TextFidelity.detect
    monkeypatch.setattr(TextFidelity, "detect", lambda self, bgr: calls.append(1) or detect(self, bgr))
    common = run_overrides(tmp_path, "dataset=folder", f"dataset.path={chart_folder}", "dataset.resolution=64")
    vaes = [f"+vae.a._target_={IDENTITY}", "+vae.b._target_=tests.metrics.test_text.Blur"]
    out = run(compose_run([*common, *vaes]), out_dir=tmp_path / "one").out_dir
    assert len(calls) == 3, "one detection per original, not per VAE"
    per_image = pd.read_parquet(out / "per_image.parquet").set_index(["vae", "image"])
    assert per_image.loc[("a", "blank.png"), "text_regions"] == 0
    assert per_image.loc[("a", "sans-8-14px.png"), "text_regions"] > 0
    summary = pd.read_csv(out / "summary.csv").set_index(["vae", "metric"])
    assert summary.loc[("a", "text_ned"), "n"] == 2  # the blank page is counted out of the mean
    assert summary.loc[("a", "text_ned"), "mean"] == 0 and summary.loc[("a", "text_acc"), "mean"] == 1
    assert summary.loc[("b", "text_ned"), "mean"] > 0
    # a later run with another VAE finds the originals' lines in the cache
    run(compose_run([*common, "+vae.c._target_=tests.metrics.test_text.Blur", "+vae.c.sigma=1.0"]), tmp_path / "two")
    assert len(calls) == 3


def test_per_region_files_and_a_rerun_from_the_result_chunks(tmp_path, tiny_pth_dir):
    # random weights, on disk: its batches are cached
    tiny = ["+vae.tiny._target_=evalvae.vae.tiny.TinyAdapter", f"+vae.tiny.source={tiny_pth_dir}"]
    tiny += ["+vae.tiny.weights_prefix=tiny", "+vae.tiny.latent_space=flux2"]
    chart = ["dataset=textchart", "dataset.resolution=64", "dataset.limit=3"]
    overrides = run_overrides(tmp_path, *chart, f"+vae.id._target_={IDENTITY}", *tiny)
    first = run(compose_run(overrides), out_dir=tmp_path / "first").out_dir
    regions = pd.read_parquet(first / "per_region.parquet")
    assert list(regions.columns[:5]) == ["vae", "image", "metric", "bin", "size_px"]
    columns = {"text_ned", "text_acc", "text_t_ned", "text_t_acc", "truth", "original_text", "recon_text", "box"}
    assert columns <= set(regions.columns)
    per_image = pd.read_parquet(first / "per_image.parquet")
    assert "regions" not in per_image.columns
    assert (
        regions.groupby(["vae", "image"]).size().to_dict()
        == per_image.set_index(["vae", "image"])["text_regions"].astype(int).to_dict()
    )
    by_size = pd.read_csv(first / "summary_by_region_size.csv")
    assert list(by_size.columns) == ["vae", "metric", "bin", "mean", "std", "n"]
    ident = by_size[(by_size["vae"] == "id") & (by_size["metric"] == "text_ned")]
    assert ident["bin"].tolist() == ["<8", "8–16", "16–32"]  # from small to large (64 px: no ≥32 line)
    assert (ident["mean"] == 0).all() and ident["n"].sum() == len(regions[regions["vae"] == "id"])
    tiny = regions[regions["vae"] == "tiny"]
    counted = by_size[(by_size["vae"] == "tiny") & (by_size["metric"] == "text_acc")].set_index("bin")
    assert counted["mean"].to_dict() == pytest.approx(tiny.groupby("bin")["text_acc"].mean().to_dict())
    entry = json.loads((first / "metrics.json").read_text())["metrics"]["text_ned"]
    assert entry["info"]["higher_is_better"] is False and entry["models"]["rec"]["sha256"]

    # a rerun reads the tiny VAE's batches from its result chunks (the metric is not called) and writes the same tables
    def refuse(*args, **kwargs):
        raise AssertionError("a batch read from its result chunk is not scored again")

    again_overrides = [o for o in overrides if not o.startswith("+vae.id")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TextFidelity, "score_regions", refuse)
        again = run(compose_run(again_overrides), out_dir=tmp_path / "again").out_dir
    assert pd.read_csv(again / "timings.csv")["batches_cached"].tolist() == [2]
    rerun = pd.read_parquet(again / "per_region.parquet")
    pd.testing.assert_frame_equal(rerun.reset_index(drop=True), tiny.reset_index(drop=True))


def test_the_records_key_is_one_for_the_metrics_and_the_writer():
    from evalvae import results

    assert results.REGIONS == REGIONS


def test_regions_are_moved_with_the_crop_to_the_vae_factor():
    r = Region.rect(10, 20, 30, 28, 8, "ab")
    moved = Region.from_dict(r.shifted(-3, -4).to_dict())
    assert moved.box == ((7, 16), (27, 16), (27, 24), (7, 24)) and moved.truth == "ab" and moved.size_px == 8


def test_compare_gates_the_text_metrics(tmp_path):
    from evalvae.compare import Verdict, compare, load_snapshot, parse_tolerances

    common = run_overrides(tmp_path, "dataset=textchart", "dataset.resolution=64", "dataset.limit=4")
    sharp = run(compose_run([*common, f"+vae.v._target_={IDENTITY}"]), tmp_path / "sharp").out_dir
    blurred = run(compose_run([*common, "+vae.v._target_=tests.metrics.test_text.Blur"]), tmp_path / "blur").out_dir
    same = compare(load_snapshot(sharp), load_snapshot(sharp))
    verdicts = {r.metric: r.verdict for r in same.rows}
    assert {verdicts[m] for m in ("text_ned", "text_acc", "text_t_ned", "text_t_acc")} == {Verdict.PASS}
    assert same.exit_code == 0
    # four pages are too few for the paired test (alpha); the metrics' own tolerances judge alone
    worse = compare(load_snapshot(sharp), load_snapshot(blurred), parse_tolerances({"alpha": None}))
    rows = {r.metric: r for r in worse.rows}
    assert rows["text_ned"].verdict is Verdict.REGRESSED and rows["text_ned"].higher_is_better is False
    assert rows["text_acc"].verdict is Verdict.REGRESSED and rows["text_acc"].higher_is_better is True
    assert rows["text_ned"].tolerance == "±0.005"  # the info's default tolerance
    assert "text_regions" not in rows  # a count of the original's lines, not a score
    assert worse.exit_code == 1
