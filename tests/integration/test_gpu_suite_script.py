"""benchmarks/gpu_suite.py, checked on CPU at its tiny scale so that its one GPU run works the first time."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def gpu_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses and pool workers find it by name
    spec.loader.exec_module(module)
    return module


def test_device_names_and_peaks(gpu_suite):
    assert gpu_suite.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_suite.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert gpu_suite.peak_tflops("NVIDIA H100 80GB HBM3", "tf32") == 494.0
    assert gpu_suite.peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert gpu_suite.peak_tflops("cpu", "bf16") is None


def test_the_budget_refuses_what_does_not_fit(gpu_suite):
    now = time.perf_counter()
    assert gpu_suite.Budget(100, now).refuses(5) is None
    assert "budget" in gpu_suite.Budget(100, now).refuses(500)
    assert "budget" in gpu_suite.Budget(10, now - 20).refuses(0)


def test_synthetic_images_are_distinct_and_seeded(gpu_suite, tmp_path):
    first = gpu_suite.write_images(tmp_path / "a", 6, 32, seed=0)
    gpu_suite.write_images(tmp_path / "b", 6, 32, seed=0)
    a = [p.read_bytes() for p in sorted((tmp_path / "a").iterdir())]
    assert first["images"] == 6 and len(set(a)) == 6
    assert a == [p.read_bytes() for p in sorted((tmp_path / "b").iterdir())]


def test_what_the_suite_asks_of_a_run_is_what_this_evalvae_takes(gpu_suite, tmp_path):
    base = ["+vae=kl-f8", "dataset=folder", f"dataset.path={tmp_path}", "device=cpu"]
    scale = gpu_suite.Scale(True, 12, 64, 128, (12, 8), "auto", 4, ("fp32",), 60.0)
    options = gpu_suite.Options(scale, compile_=True)
    assert options.precision("fp32", cuda=False) == ([], "")  # fp32 is never asked for: every evalvae runs it
    assert options.precision("tf32", cuda=False)[0] is None
    for precision in ("fp32", "bf16"):
        extra, _ = options.precision(precision, cuda=False)
        assert gpu_suite.refusal([*base, *options.run(), *extra]) is None


def test_the_random_vaes_share_their_encoder_only(tmp_path):
    from safetensors.torch import load_file

    sys.path.insert(0, str(REPO / "benchmarks"))
    import random_nets

    folders = random_nets.write_vaes(tmp_path, tiny=True)
    states = {name: load_file(folder / "diffusion_pytorch_model.safetensors") for name, folder in folders.items()}
    first, *others = states.values()
    for other in others:
        assert all((other[k] == v).all() for k, v in first.items() if k.startswith(("encoder.", "quant_conv.")))
        assert any(not (other[k] == v).all() for k, v in first.items() if k.startswith("decoder."))
    # the full-size SD 1.x VAE, counted on the meta device: the FLOPs the performance issue states
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **random_nets.SD1_CONFIG}))
    flops = random_nets.vae_flops(tmp_path / "sd", 256)
    assert round(flops["encode"] / 1e9) == 273 and round(flops["decode"] / 1e9) == 622


def _finite_positive(x) -> bool:
    return x is not None and x != "" and math.isfinite(float(x)) and float(x) > 0


@pytest.mark.slow
def test_tiny_run_of_the_script(gpu_suite, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--device", "cpu", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-cpu.csv", "gpu-cpu.json"]
    data = json.loads((out / "gpu-cpu.json").read_text())
    assert data["environment"]["device"] == "cpu" and data["environment"]["torch"]
    assert data["skipped"] == [] and data["options"]["scale"]["tiny"]
    assert all(_finite_positive(v) for v in data["flops"]["per_image_gflop"].values())
    parts = data["parts"]

    a = parts["a"]["cases"]
    assert {(c["resolution"], c["precision"]) for c in a} == {(64, "fp32"), (64, "bf16"), (128, "fp32"), (128, "bf16")}
    for c in a:
        assert all(
            _finite_positive(c[k])
            for k in ("ratio_run_over_tight", "tight_decode_images_per_s", "run_wall_images_per_s")
        )

    (job,) = parts["b"]["cases"]
    (peer,) = parts["c"]["cases"]
    assert job["status"] == peer["status"] == "ok" and job["report_written"]
    assert _finite_positive(job["achieved_tflops"]) and _finite_positive(peer["ratio_evalvae_over_peer"])
    for case in (job, peer):
        assert set(case["metrics"]) == {"kl-f8", "ft-ema", "ft-mse"}
        assert all(_finite_positive(v) for m in case["metrics"].values() for v in m.values())
    # the same PSNR and LPIPS of the same 8-bit reconstructions (posterior mode on both sides)
    for name, diff in peer["evalvae_minus_peer"].items():
        assert abs(diff["psnr"]) < 0.1 and abs(diff["lpips"]) < 1e-3, (name, diff)

    d = parts["d"]["cases"]
    assert [c["workers"] for c in d][-1] == 0 and len({c["workers"] for c in d}) == len(d)
    assert all(_finite_positive(c["images_per_s"]) for c in d)

    with open(out / "gpu-cpu.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == gpu_suite.COLUMNS
    assert {r["part"] for r in rows} == {"a", "b", "c", "d"} and all(r["status"] == "ok" for r in rows)
    assert all(_finite_positive(r["seconds"]) and _finite_positive(r["images_per_s"]) for r in rows)
    ratios = [r for r in rows if r["ratio"]]
    assert {r["part"] for r in ratios} >= {"a", "c"} and all(_finite_positive(r["ratio"]) for r in ratios)
