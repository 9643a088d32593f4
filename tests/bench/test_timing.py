"""The bench's measuring parts: timing statistics, peak memory, fidelity PSNR, OOM detection, options."""

from __future__ import annotations

import statistics
import sys

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from evalvae.bench.fidelity import image_psnr, latent_psnr
from evalvae.bench.grid import Grid
from evalvae.bench.memory import MemoryProbe
from evalvae.bench.runner import bench
from evalvae.bench.timing import median_iqr, time_calls
from evalvae.bench.worker import is_oom
from evalvae.errors import ConfigError
from tests.helpers import compose_run

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0], list(np.random.default_rng(0).exponential(size=11))]
)
def test_median_and_iqr_match_the_standard_library(values):
    median, iqr = median_iqr(values)
    assert median == pytest.approx(statistics.median(values), rel=1e-12)
    if len(values) > 1:  # "inclusive" quantiles are numpy's default linear interpolation
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        assert iqr == pytest.approx(q3 - q1, rel=1e-12, abs=1e-15)
    else:
        assert iqr == 0


def test_time_calls_warms_up_then_times_each_call():
    calls = []

    def fn():
        calls.append(len(calls))
        return torch.full((4,), float(len(calls)))

    t = time_calls(fn, CPU, warmup=2, repeats=5)
    assert len(calls) == 7 and len(t.seconds) == 5
    assert all(s > 0 for s in t.seconds) and t.first_call_s > 0
    assert torch.equal(t.output, torch.full((4,), 7.0))  # the last call's output


def test_time_calls_stops_early_only_after_min_repeats():
    t = time_calls(lambda: sum(range(1000)), CPU, warmup=0, repeats=50, min_repeats=4, max_seconds=1e-9)
    assert len(t.seconds) == 4
    t = time_calls(lambda: None, CPU, warmup=0, repeats=6, min_repeats=2, max_seconds=None)
    assert len(t.seconds) == 6


def test_image_psnr_matches_scikit_image_per_image_then_averaged():
    rng = np.random.default_rng(0)
    ref = torch.from_numpy(rng.uniform(-1, 1, (3, 3, 16, 20)))
    test = (ref + torch.from_numpy(rng.normal(0, 0.02, ref.shape))).clamp(-1, 1)

    def pix(t):
        return ((t.numpy() + 1) * 127.5).clip(0, 255)

    expected = np.mean([peak_signal_noise_ratio(pix(ref)[i], pix(test)[i], data_range=255) for i in range(3)])
    assert image_psnr(ref.float(), test.float()) == pytest.approx(expected, abs=1e-3)  # inputs rounded to float32
    assert image_psnr(ref, ref) == float("inf")
    assert np.isnan(image_psnr(ref, test * torch.nan))


def test_latent_psnr_uses_each_references_range_as_peak():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 2, (2, 4, 8, 8))
    test = ref + rng.normal(0, 0.05, ref.shape)
    expected = [10 * np.log10((ref[i].max() - ref[i].min()) ** 2 / np.mean((ref[i] - test[i]) ** 2)) for i in range(2)]
    assert latent_psnr(torch.from_numpy(ref), torch.from_numpy(test)) == pytest.approx(np.mean(expected), rel=1e-12)
    bad = torch.from_numpy(test).clone()
    bad[0, 0, 0, 0] = float("inf")
    assert np.isnan(latent_psnr(torch.from_numpy(ref), bad))


@pytest.mark.parametrize(
    ("exc", "oom"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("MPS backend out of memory"), True),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 1e12 bytes"
            ),
            True,
        ),
        (MemoryError(), True),
        (RuntimeError("Given groups=1, weight of size [8, 3, 3, 3], expected input to have 3 channels"), False),
        (ValueError("out of memory"), False),  # not an allocator's error type
    ],
)
def test_is_oom(exc, oom):
    assert is_oom(exc) is oom


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resettable peak RSS is Linux-only")
def test_cpu_peak_memory_is_per_span():
    probe = MemoryProbe(CPU)
    assert probe.metric == "rss_peak"
    probe.reset()
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    first = probe.peak_mb()
    del block
    probe.reset()
    second = probe.peak_mb()
    assert first - probe.current_mb() > 250  # the span saw the block ...
    assert second < first - 250  # ... and the next span does not inherit it


def _grid(*overrides):
    return Grid.from_cfg(compose_run(["+vae=taef2", *overrides], "bench"))


def test_grid_defaults_and_order():
    grid = _grid()
    assert (
        grid.resolutions == [256, 512, 1024]
        and grid.dtypes == ["fp32", "fp16", "bf16"]
        and grid.modes == ["plain", "tiled"]
    )
    configs = grid.configs("v")
    assert len(configs) == 3 * 1 * 3 * 2
    assert [(c.resolution, c.mode, c.dtype) for c in configs[:3]] == [
        (256, "plain", "fp32"),
        (256, "plain", "fp16"),
        (256, "plain", "bf16"),
    ]
    single = _grid("bench.resolutions=64", "bench.dtypes=bf16").configs("v")[0]  # a single value is a list of one
    assert (single.resolution, single.dtype) == (64, "bf16")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bench.modes=[plain,fast]", "invalid bench.modes='fast'; choose one of plain, tiled, sliced"),
        ("bench.dtypes=[fp32,int8]", "invalid bench.dtypes='int8'; choose one of fp32, fp16, bf16"),
        ("bench.ops=[encode,train]", "invalid bench.ops='train'; choose one of encode, decode, roundtrip"),
        ("bench.resolutions=[256,0]", "invalid bench.resolutions=0; an integer >= 8"),
        ("bench.resolutions=[256,256]", "values must not repeat"),
        ("bench.batch_sizes=[]", "invalid bench.batch_sizes=[]; give at least one value"),
        ("bench.repeats=2", "invalid bench.min_repeats=3; at most bench.repeats=2"),
        ("bench.max_seconds=0", "invalid bench.max_seconds=0"),
        ("bench.isolate=thread", "invalid bench.isolate='thread'; choose one of auto, process, none"),
        ("bench.compile=yes", "invalid bench.compile='yes'; choose one of true, false"),
        ("bench.compile=true bench.warmup=0", "invalid bench.warmup=0; at least 1 with bench.compile=true"),
    ],
)
def test_bad_options_name_the_option_the_value_and_the_choices(override, message, tmp_path):
    cfg = compose_run(["+vae=taef2", *override.split()], "bench")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        bench(cfg, out_dir=tmp_path)  # the Python entry checks the grid as the command line does
