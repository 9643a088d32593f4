"""``torchrun --nproc_per_node=2 -m evalvae run``: two CPU processes on gloo give the single-process results.

Batches are dealt out whole, so the per-image rows are the same computation and must agree to
float round-off; set-level statistics are sums of float64 sums across processes (rFID and KID to
1e-9 relative). The dataset has an odd number of batches, so one process gets more than the other.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.helpers import REPO, evalvae_cli, run_args, save_tiny_kl

pytestmark = pytest.mark.slow  # python -m pytest -m slow (CI runs it after the default suite)

SET_LEVEL = [
    "metrics=all",
    "~metrics.lpips",
    "metrics.fid.extractor=tests.helpers.TinyExtractor",
    "metrics.fid.kid_subsets=5",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args(image_dir, kl, cache, out) -> list[str]:
    kl_vae = ["+vae.a._target_=evalvae.vae.kl.KLAdapter", f"+vae.a.source={kl}", "+vae.a.latent_space=sd"]
    return run_args(image_dir, out, "batch_size=2", f"cache_dir={cache}", *SET_LEVEL, *kl_vae)


@pytest.mark.timeout(600)
def test_two_processes_equal_one(tmp_path, image_dir):
    kl = save_tiny_kl(tmp_path / "kl")
    single = tmp_path / "single"
    # one thread per process on both sides, as torchrun sets: float32 convolutions split over a
    # different number of threads round differently, which is not what this test is about
    r = evalvae_cli(args(image_dir, kl, tmp_path / "cache1", single), cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    sharded = tmp_path / "sharded"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "-m",
        "evalvae",
        *args(image_dir, kl, tmp_path / "cache2", sharded),
    ]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sharded over 2 processes" in r.stderr

    one = pd.read_parquet(single / "per_image.parquet")
    two = pd.read_parquet(sharded / "per_image.parquet")
    assert len(two) == len(one) == 6 and two["image"].is_unique, "no image duplicated, padded or lost"
    assert list(two["image"]) == list(one["image"]), "rows in dataset order"
    for column in ("psnr", "ssim"):
        np.testing.assert_allclose(two[column], one[column], rtol=1e-9)
    s1 = pd.read_csv(single / "summary.csv").set_index("metric")
    s2 = pd.read_csv(sharded / "summary.csv").set_index("metric")
    for metric in ("rfid", "kid", "psnr"):
        assert s2.loc[metric, "n"] == s1.loc[metric, "n"] == 6
        assert s2.loc[metric, "mean"] == pytest.approx(s1.loc[metric, "mean"], rel=1e-9, abs=1e-12), metric
    assert not (sharded / ".ranks").exists(), "the other process's scratch files are removed"


def batch_chunks(root) -> int:
    from tests.jobs.test_store import batch_chunks as found

    return len(found(root)) if root.exists() else 0


@pytest.mark.timeout(600)
def test_a_killed_run_started_again_with_the_same_command_ends_with_the_uninterrupted_results(tmp_path):
    import signal
    import time

    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).resize((64, 64)).save(
            images / f"{i:02d}.png"
        )
    kl = save_tiny_kl(tmp_path / "kl")

    def command(cache, out):
        return [x.replace("dataset.resolution=32", "dataset.resolution=64") for x in args(images, kl, cache, out)]

    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-m", "evalvae", *command(cache, tmp_path / "killed")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while batch_chunks(cache / "results") < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = batch_chunks(cache / "results")
    assert proc.returncode == -signal.SIGKILL and 0 < done < 20, f"killed after {done} of 20 batches"

    again = evalvae_cli(command(cache, tmp_path / "again"), cwd=tmp_path)  # the same command: a new run directory
    assert again.returncode == 0, again.stderr[-3000:]
    t = pd.read_csv(tmp_path / "again" / "timings.csv").iloc[0]
    assert t.batches_cached >= done and t.batches_cached < 20
    fresh = evalvae_cli(command(tmp_path / "other-cache", tmp_path / "fresh"), cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    pa, pf = (pd.read_parquet(tmp_path / r / "per_image.parquet") for r in ("again", "fresh"))
    pd.testing.assert_frame_equal(pa, pf, check_exact=False, rtol=1e-9)
    sa, sf = (pd.read_csv(tmp_path / r / "summary.csv").drop(columns="note") for r in ("again", "fresh"))
    pd.testing.assert_frame_equal(sa, sf, check_exact=False, rtol=1e-9)
