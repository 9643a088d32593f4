"""MS-SSIM, the luma PSNR/SSIM, DISTS, CMMD and FD-DINOv2 through ``run``, ``report`` and ``compare``: recorded, titled, gated, and luma
kept apart from RGB."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evalvae.compare import Verdict, compare, load_snapshot
from evalvae.report import write_report
from evalvae.run import run
from tests import helpers
from tests.metrics.test_fd_dinov2 import tiny_dinov2  # noqa: F401 (fixture)
from tests.t2i_helpers import tiny_clip_dir  # noqa: F401 (fixture)

LUMA = ("metrics=ms_ssim", "metrics.psnr.channels=y", "metrics.ssim.channels=y")


def standin_run(root, images, name: str, gain: float, resolution: int, *extra):
    """A run (``root / name``) of a stand-in VAE (``gain`` times the image) named ``v`` on ``images``."""
    cfg = helpers.compose_run(
        [
            "dataset=folder",
            f"dataset.path={images}",
            f"dataset.resolution={resolution}",
            "device=cpu",
            "workers=0",
            *helpers.standin("v", gain=gain),
            f"cache_dir={root / 'cache'}",
            *extra,
        ]
    )
    return run(cfg, out_dir=root / name).out_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs of a stand-in VAE (``gain`` times the image) at 176 px, MS-SSIM's smallest side: on luma at two gains, and in RGB."""
    tmp = tmp_path_factory.mktemp("luma")
    images = helpers.write_images(tmp / "images")

    def one(name, gain, *extra):
        return standin_run(tmp, images, name, gain, 176, *extra)

    return {
        "y": one("y", 0.95, *LUMA),
        "y_worse": one("y_worse", 0.9, *LUMA),
        "rgb": one("rgb", 0.95, "metrics=ms_ssim"),
    }


def test_a_luma_run_records_its_channels_and_ms_ssim(runs):
    metrics = json.loads((runs["y"] / "metrics.json").read_text())["metrics"]
    assert metrics["psnr"]["channels"] == "y" and metrics["psnr"]["info"]["title"] == "PSNR-Y (dB)"
    assert metrics["ssim"]["info"]["title"] == "SSIM-Y" and metrics["ms_ssim"]["backend"] == "scipy"
    assert metrics["ms_ssim"]["scales"] == 5 and metrics["ms_ssim"]["higher_is_better"] is True
    summary = pd.read_csv(runs["y"] / "summary.csv").set_index("metric")
    assert 0.99 < summary.loc["ms_ssim", "mean"] < 1 and summary.loc["ms_ssim", "n"] == 6
    rgb = pd.read_csv(runs["rgb"] / "summary.csv").set_index("metric")
    assert rgb.loc["ms_ssim", "mean"] == summary.loc["ms_ssim", "mean"]  # MS-SSIM is of RGB either way
    assert abs(rgb.loc["psnr", "mean"] - summary.loc["psnr", "mean"]) > 0.5  # luma is another number


def test_the_report_titles_luma_and_keeps_it_apart_from_rgb(runs, tmp_path):
    md = (write_report([runs["y"], runs["rgb"]], tmp_path / "rep", grids=False).parent / "report.md").read_text()
    assert "| VAE | images | PSNR-Y (dB) ↑ | SSIM-Y ↑ | MS-SSIM ↑ |" in md
    assert "| VAE | images | PSNR (dB) ↑ | SSIM ↑ | MS-SSIM ↑ |" in md
    sections = [line for line in md.splitlines() if line.startswith("## images")]
    assert len(sections) == 2 and "PSNR-Y (dB)" in sections[0] and "PSNR (dB)" in sections[1]


def test_compare_gates_ms_ssim_and_refuses_luma_against_rgb(runs):
    rows = {r.metric: r for r in compare(load_snapshot(runs["y"]), load_snapshot(runs["y_worse"])).rows}
    assert rows["ms_ssim"].verdict is Verdict.REGRESSED and rows["ms_ssim"].tolerance == "±0.0002"
    assert rows["psnr"].verdict is Verdict.REGRESSED
    rows = {r.metric: r for r in compare(load_snapshot(runs["rgb"]), load_snapshot(runs["y"])).rows}
    assert rows["psnr"].verdict is Verdict.MISMATCH and rows["ssim"].verdict is Verdict.MISMATCH


@pytest.mark.slow  # two runs, each reading, hashing and building the real VGG16 (15 s)
def test_dists_runs_reports_and_compares(real_weights, tmp_path):
    """DISTS through run, report and compare on the real VGG16 (at 32 px: it has no smallest side)."""
    images = helpers.write_images(tmp_path / "images")
    vgg = real_weights / "lpips" / "vgg16_features.pth"
    extra = ("metrics=dists", f"metrics.dists.backbone_weights={vgg}")
    outs = [standin_run(tmp_path, images, name, gain, 32, *extra) for name, gain in (("a", 0.95), ("b", 0.8))]
    entry = json.loads((outs[0] / "metrics.json").read_text())["metrics"]["dists"]
    assert entry["higher_is_better"] is False and entry["weights"]["standard"] is True
    summary = pd.read_csv(outs[0] / "summary.csv").set_index("metric")
    assert 0 < summary.loc["dists", "mean"] < 0.5 and summary.loc["dists", "n"] == 6
    md = (write_report(outs, tmp_path / "rep", grids=False).parent / "report.md").read_text()
    assert "| DISTS ↓ |" in md
    rows = {r.metric: r for r in compare(load_snapshot(outs[0]), load_snapshot(outs[1])).rows}
    assert rows["dists"].verdict is Verdict.REGRESSED and rows["dists"].current > rows["dists"].baseline


def test_cmmd_and_fd_dinov2_run_report_and_compare(tiny_clip_dir, tiny_dinov2, tmp_path):
    """CMMD and FD-DINOv2 through run, report and compare, on a tiny random CLIP and DINOv2 (the real ones cannot be
    had offline)."""
    images = helpers.write_images(tmp_path / "images")
    extra = ("metrics=[cmmd,fd_dinov2]", f"metrics.cmmd.model={tiny_clip_dir}", f"metrics.dinov2.model={tiny_dinov2}")
    outs = [standin_run(tmp_path, images, name, gain, 32, *extra) for name, gain in (("a", 0.95), ("b", 0.5))]
    entry = json.loads((outs[0] / "metrics.json").read_text())["metrics"]["cmmd"]
    assert entry["higher_is_better"] is False and entry["estimator"] == "paired" and entry["scale"] == 1000
    summary = pd.read_csv(outs[0] / "summary.csv").set_index("metric")
    assert summary.loc["cmmd", "n"] == 6 and summary.loc["cmmd", "mean"] > 0
    for out in outs:  # the second run reads the originals' embeddings from the cache, with their positions
        note = pd.read_csv(out / "summary.csv").set_index("metric").loc["cmmd", "note"]
        assert "paired estimator over 6 image pairs" in note
    md = (write_report(outs, tmp_path / "rep", grids=False).parent / "report.md").read_text()
    assert "CMMD ↓" in md and "FD-DINOv2 ↓" in md
    dinov2 = json.loads((outs[0] / "metrics.json").read_text())["metrics"]["rfd_dinov2"]
    assert dinov2["extractor"]["resize"].startswith("PIL bicubic to 224x224") and summary.loc["rfd_dinov2", "n"] == 6
    rows = {r.metric: r for r in compare(load_snapshot(outs[0]), load_snapshot(outs[1])).rows}
    assert rows["cmmd"].verdict is Verdict.REGRESSED and rows["cmmd"].current > rows["cmmd"].baseline
    assert rows["rfd_dinov2"].verdict is Verdict.REGRESSED
