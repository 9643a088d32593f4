"""The GPU knobs of a run, checked on the CPU: precision (recorded per VAE, keyed), compile, and the TF32 switches."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import torch

from evalvae.device import fp32_math, tf32_state
from evalvae.run import run
from tests.helpers import compose_run
from tests.recon.test_task import tiny_overrides


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
