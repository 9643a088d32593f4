"""benchmarks/gpu_bench.py, checked on CPU (--smoke) so that its one GPU run works the first time."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from evalvae.bench.results import read_bench_csv
from tests.helpers import REPO


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "benchmarks" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_grid_is_the_one_asked_for(gpu_bench, tmp_path):
    cmd = " ".join(gpu_bench.bench_command(tmp_path / "taef2", tmp_path / "sd1", None, tmp_path, smoke=False))
    for part in (
        "device=cuda",
        "bench.resolutions=[256,512,1024,2048]",
        "bench.dtypes=[fp32,fp16,bf16]",
        "bench.modes=[plain,tiled]",
        "+vae=taef2",
        "+vae.sd1-random._target_=evalvae.vae.kl.KLAdapter",
        "bench.batch_sizes=[1]",
    ):
        assert part in cmd
    assert cmd.index("+vae=taef2") < cmd.index("+vae.sd1-random")  # the fast model first
    assert gpu_bench.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_a_run_past_its_timeout_is_stopped_and_reported(gpu_bench, tmp_path):
    text, code = gpu_bench.run_streaming(
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"],
        dict(os.environ),
        tmp_path,
        2,
    )
    assert code == 124 and "started" in text and "[stopped after 2 s]" in text


def test_collect_draws_the_plots_a_stopped_run_did_not(gpu_bench, tmp_path, tiny_kl_dir):
    from evalvae.bench.runner import bench
    from tests.helpers import compose_run, write_images

    cfg = compose_run(
        [
            "+vae=ft-mse",
            f"vae.ft-mse.source={tiny_kl_dir}",
            "device=cpu",
            "bench.isolate=none",
            "bench.warmup=0",
            "bench.repeats=1",
            "bench.min_repeats=1",
            "bench.resolutions=[32]",
            "bench.dtypes=[fp32]",
            "bench.modes=[plain]",
            "bench.plots=false",
            "dataset=folder",
            f"dataset.path={write_images(tmp_path / 'images')}",
            f"cache_dir={tmp_path / 'cache'}",
        ],
        "bench",
    )
    bench(cfg, out_dir=tmp_path / "run")
    files = gpu_bench.collect(tmp_path / "run", tmp_path / "out", "the log")
    assert [f.name.split("-", 1)[0] for f in files] == ["bench"] * 5 and len({f.suffix for f in files}) == 4
    assert files[2].read_bytes()[:4] == b"\x89PNG" and files[-1].read_text() == "the log"
    assert len(read_bench_csv(files[0])) == 3


def test_the_random_sd_vae_has_the_sd1_architecture(gpu_bench, tmp_path):
    import json

    from sd_vae_random import SD1_CONFIG, write

    config = json.loads((write(tmp_path / "tiny", tiny=True) / "config.json").read_text())
    assert config["block_out_channels"] == [8, 8]
    # the real SD 1.x VAE: 4 blocks of 128-512 channels, 2 layers each, 4 latent channels, 8x down
    assert SD1_CONFIG["block_out_channels"] == [128, 256, 512, 512] and SD1_CONFIG["layers_per_block"] == 2
    assert (
        SD1_CONFIG["latent_channels"] == 4
        and SD1_CONFIG["scaling_factor"] == 0.18215
        and SD1_CONFIG["sample_size"] == 512
    )
    from diffusers import AutoencoderKL

    # sd-vae-ft-mse has 83,653,863 parameters; equal counts over this layout mean equal compute
    assert sum(p.numel() for p in AutoencoderKL(**SD1_CONFIG).parameters()) == 83_653_863


@pytest.mark.slow
def test_smoke_run_of_the_script(tmp_path, taef2_dir):
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_bench.py"),
            "--smoke",
            "--taef2",
            str(taef2_dir),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 5 and all(n.startswith("bench-") for n in names)
    df = read_bench_csv(next(out.glob("bench-*.csv")))
    assert len(df) == 2 * 2 * 3 * 2 * 3 and (df["status"] == "ok").all()
    assert set(df["vae"]) == {"taef2", "sd1-random"} and not df["nonfinite"].any()
