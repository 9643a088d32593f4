"""The GPU knobs of a run, checked on the CPU: precision (recorded per VAE, keyed), compile, the TF32 switches,
``batch_size=auto`` and batches run in halves when the device runs out of memory."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import torch

from evalvae.device import fp32_math, tf32_state
from evalvae.run import run
from tests.helpers import compose_run, standin
from tests.recon.test_task import tiny_overrides
from tests.recon.test_task_edges import SET_LEVEL, overrides


def vaes_json(out) -> dict:
    return json.loads((out / "vaes.json").read_text())[0]


def psnr(out) -> pd.Series:
    return pd.read_parquet(out / "per_image.parquet").set_index("image")["psnr"]


def test_precision_bf16_runs_the_vaes_in_bf16_and_is_keyed(tmp_path, tiny_pth_dir, image_dir):
    fp32 = run(compose_run(tiny_overrides(tiny_pth_dir, image_dir)), out_dir=tmp_path / "fp32").out_dir
    bf16 = run(
        compose_run(tiny_overrides(tiny_pth_dir, image_dir, "precision=bf16")), out_dir=tmp_path / "bf16"
    ).out_dir
    assert vaes_json(fp32)["precision"] == "fp32" and vaes_json(fp32)["dtype"] == "fp32"
    assert vaes_json(bf16)["precision"] == "bf16" and vaes_json(bf16)["dtype"] == "bf16"
    # bf16 was computed, not read from the fp32 run's cached chunks or latents: its numbers moved
    a, b = psnr(fp32), psnr(bf16)
    assert (a - b).abs().max() > 1e-3
    # a VAE's own dtype still wins over the run's precision
    own = run(
        compose_run(tiny_overrides(tiny_pth_dir, image_dir, "precision=bf16", "vae.taef2.dtype=fp32")),
        out_dir=tmp_path / "own",
    ).out_dir
    assert vaes_json(own)["precision"] == "fp32"
    pd.testing.assert_series_equal(psnr(own), a)


def test_tf32_without_tensor_cores_runs_ieee_fp32_and_says_so(tmp_path, tiny_pth_dir, image_dir, caplog):
    with caplog.at_level(logging.WARNING):
        out = run(
            compose_run(tiny_overrides(tiny_pth_dir, image_dir, "precision=tf32")), out_dir=tmp_path / "r"
        ).out_dir
    assert vaes_json(out)["precision"] == "fp32" and vaes_json(out)["dtype"] == "fp32"
    assert "precision=tf32: cpu has no TF32 tensor cores" in caplog.text


def test_compile_is_recorded_and_moves_no_number(tmp_path, tiny_pth_dir, image_dir):
    """``compile=true`` (dynamo with the eager backend here: inductor's C++ build takes minutes on this CPU)
    traces the VAE's network calls; the numbers are the eager run's."""
    eager = run(compose_run(tiny_overrides(tiny_pth_dir, image_dir)), out_dir=tmp_path / "eager").out_dir
    torch._dynamo.reset()
    overrides = tiny_overrides(tiny_pth_dir, image_dir, "compile=true", "compile_backend=eager")
    compiled = run(compose_run(overrides), out_dir=tmp_path / "compiled").out_dir
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs >= 2  # the encoder's and the decoder's calls were traced
    assert vaes_json(compiled)["compile"] == "eager" and vaes_json(eager)["compile"] is None
    pd.testing.assert_series_equal(psnr(compiled), psnr(eager), rtol=0, atol=1e-9)


@pytest.mark.parametrize("tf32", [True, False])
def test_fp32_math_sets_and_restores_the_cuda_switches(tf32):
    """The switches are plain settings: set for the block on a CUDA device, restored after, untouched elsewhere."""
    before = tf32_state()
    with fp32_math(torch.device("cuda"), tf32):
        assert tf32_state() == {"matmul": tf32, "cudnn": tf32}
    assert tf32_state() == before
    with fp32_math(torch.device("cpu"), not before["cudnn"]):
        assert tf32_state() == before


# -- batch_size=auto and batches that do not fit --------------------------------------------------
def summary_of(out) -> pd.DataFrame:
    return pd.read_csv(out / "summary.csv").drop(columns=["note"])


def test_a_batch_that_runs_out_of_memory_runs_in_halves_with_the_same_numbers(tmp_path, image_dir, caplog):
    """A VAE that fits one image at a time, given batches of 4: every batch is split down to single images, and
    every number (per image and set-level, with the features' pairing) is the batch_size=1 run's."""
    common = overrides(image_dir, tmp_path / "cache", *SET_LEVEL, "cache.results=false", "cache.latents=false")
    vae = standin("small", gain=0.8, most=1)
    with caplog.at_level(logging.WARNING):
        split = run(compose_run([*common, *vae, "batch_size=4"]), out_dir=tmp_path / "split")
    one = run(compose_run([*common, *vae, "batch_size=1"]), out_dir=tmp_path / "one")
    assert not split.failed and "out of memory on a batch of 4 images; it is run in halves" in caplog.text
    a, b = (pd.read_csv(o.out_dir / "per_image.csv").sort_values("image") for o in (split, one))
    assert len(a) == 6
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    pd.testing.assert_frame_equal(summary_of(split.out_dir), summary_of(one.out_dir), rtol=1e-9)


def test_batch_size_auto_is_8_where_memory_is_not_measured(tmp_path, image_dir):
    out = run(compose_run([*overrides(image_dir, tmp_path / "c"), *standin("v"), "batch_size=auto"]), out_dir=tmp_path)
    environment = json.loads((out.out_dir / "metrics.json").read_text())["environment"]
    assert environment["batch_size"] == 8 and "batch_size_auto" not in environment
    assert pd.read_csv(out.out_dir / "timings.csv")["batch_size"].tolist() == [8]


def test_batch_size_auto_measures_the_first_vae_and_fits_the_budget(tmp_path, image_dir, monkeypatch):
    """The measured path, with the device's memory counters replaced: the probe runs the run's own work (the VAE,
    the metrics and the feature network) on 1 and 2 synthetic images, and the fit is capped by the dataset."""
    from evalvae.jobs import autobatch

    seen = []

    def measure(work, device):
        for n in (1, 2):
            work(n)
            seen.append(n)
        return 100e6, 30e6  # bytes: fixed, per image

    monkeypatch.setattr(autobatch, "measurable", lambda device: True)
    monkeypatch.setattr(autobatch, "measure", measure)
    monkeypatch.setattr(autobatch, "budget", lambda device: 400e6)
    assert autobatch.fit(100e6, 30e6, 400e6) == 8  # 10 fit; a multiple of 8
    common = [*overrides(image_dir, tmp_path / "c", *SET_LEVEL), *standin("v", gain=0.9)]
    auto = run(compose_run([*common, "batch_size=auto"]), out_dir=tmp_path / "auto").out_dir
    assert seen == [1, 2]
    environment = json.loads((auto / "metrics.json").read_text())["environment"]
    assert environment["batch_size"] == 6  # no more than the dataset's 6 images
    assert environment["batch_size_auto"] == {"batch_size": 6, "fixed_mb": 100e6 / 2**20, "per_image_mb": 30e6 / 2**20,
                                              "budget_mb": 400e6 / 2**20}  # fmt: skip
    fixed = run(compose_run([*common, "batch_size=6"]), out_dir=tmp_path / "fixed").out_dir
    pd.testing.assert_frame_equal(summary_of(auto), summary_of(fixed))


@pytest.mark.parametrize(
    "fixed, per_image, budget, most, expected",
    [
        (0, 1, 5, 256, 5),
        (0, 1, 13, 256, 8),
        (0, 1, 1000, 256, 256),
        (10, 1, 5, 256, 1),
        (0, 1, 100, 6, 6),
        (0, 0, 1, 9, 9),
    ],
)
def test_fit_arithmetic(fixed, per_image, budget, most, expected):
    from evalvae.jobs.autobatch import fit

    assert fit(fixed, per_image, budget, most=most) == expected
