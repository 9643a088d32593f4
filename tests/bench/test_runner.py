"""``evalvae bench`` end to end on tiny models: the grid, its failures as rows, its files, and the upcast override."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from evalvae.bench.results import read_bench_csv
from evalvae.bench.runner import bench
from evalvae.bench.schema import COLUMNS, STATUSES
from evalvae.run import run
from tests import helpers
from tests.golden import golden

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["device=cpu", "bench.isolate=none", "bench.warmup=0", "bench.repeats=2", "bench.min_repeats=1"]
STANDIN = "tests.bench_standins.StandIn"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return helpers.write_images(tmp_path_factory.mktemp("bench-images"))


def compose(images, cache, *overrides):
    return helpers.compose_run(
        [*FAST, "dataset=folder", f"dataset.path={images}", f"cache_dir={cache}", *overrides], "bench"
    )


def one(dtypes: str = "fp32") -> list[str]:
    """One resolution (32 px) and one mode (plain): a configuration per op and dtype."""
    return ["bench.resolutions=[32]", f"bench.dtypes=[{dtypes}]", "bench.modes=[plain]"]


def build_grid(root: Path) -> dict:
    """Both diffusers families (KL, and the tiny autoencoder with 8-channel blocks) over 2 resolutions x 2
    dtypes x 3 modes, at batch size 2 (so sliced differs from plain); the rows the bench returned are kept
    beside its folder, to be compared with its bench.csv."""
    torch.set_num_threads(1)
    cfg = compose(
        helpers.write_images(root / "images"),
        root / "cache",
        "+vae=[ft-mse,taesd]",
        f"vae.ft-mse.source={helpers.save_tiny_kl(root / 'kl')}",
        f"vae.taesd.source={helpers.save_tiny_autoencoder_tiny(root / 'ae')}",
        "bench.resolutions=[32,64]",
        "bench.batch_sizes=[2]",
        "bench.dtypes=[fp32,bf16]",
        "bench.modes=[plain,tiled,sliced]",
        "bench.tile_size=32",
    )
    done = bench(cfg, out_dir=root / "out")
    done.results.to_parquet(root / "returned.parquet")
    return {"out": str(done.out_dir), "failed": done.failed}


@pytest.fixture(scope="session")
def grid_run(tmp_path_factory):
    """The golden bench (read, never written): its folder, the rows it returned and its failures."""
    for facts in golden(tmp_path_factory, "bench", build_grid):
        out = Path(facts["out"])
        yield SimpleNamespace(
            out_dir=out, results=pd.read_parquet(out.parent / "returned.parquet"), failed=facts["failed"]
        )


def test_the_grid_runs_completely(grid_run):
    df = grid_run.results
    assert len(df) == 2 * 2 * 2 * 3 * 3 and not grid_run.failed
    assert (df["status"] == "ok").all(), df.loc[df["status"] != "ok", ["vae", "op", "mode", "error"]]
    keys = ["vae", "op", "resolution", "batch", "dtype", "mode"]
    assert not df.duplicated(keys).any()
    assert set(df["mode"]) == {"plain", "tiled", "sliced"} and set(df["op"]) == {"encode", "decode", "roundtrip"}


def test_bench_csv_schema(grid_run):
    df = read_bench_csv(grid_run.out_dir / "bench.csv")
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    assert set(df["status"]) <= set(STATUSES)
    assert df["nonfinite"].dtype == "boolean" and not df["nonfinite"].any()
    assert (df["device"] == "cpu").all() and df["torch_version"].eq(torch.__version__).all()
    pd.testing.assert_frame_equal(df[COLUMNS[:7]], grid_run.results[COLUMNS[:7]], check_dtype=False)


def test_timings_and_memory_are_positive_and_consistent(grid_run):
    df = grid_run.results
    assert (df["ms_per_image_median"] > 0).all() and (df["ms_per_image_iqr"] >= 0).all()
    assert (df["images_per_s"] * df["ms_per_image_median"] / 1000).sub(1).abs().max() < 1e-9
    assert (df["repeats"] == 2).all() and (df["first_call_ms"] > 0).all()
    assert (df["peak_mem_mb"] > 0).all() and (df["peak_mem_mb"] >= df["mem_before_mb"] - 1e-6).all()
    assert set(df["mem_metric"]) == {"rss_peak"} and df["compile_s"].isna().all()
    tiled = df[df["mode"] == "tiled"]
    assert (tiled["tile_size"] == 32).all()


def test_reduced_precision_rows_carry_their_fidelity(grid_run):
    df = grid_run.results
    assert df.loc[df["dtype"] == "fp32", "lowp_psnr_vs_fp32"].isna().all()
    bf16 = df.loc[df["dtype"] == "bf16", "lowp_psnr_vs_fp32"]
    # bf16 keeps 8 significant bits: tens of dB from fp32, never identical, never NaN
    assert bf16.between(20, 120).all(), bf16.describe()


def test_outputs_plots_and_environment(grid_run):
    out = grid_run.out_dir
    for name in ("time", "memory"):
        assert (out / f"bench_{name}_b2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads((out / "bench.json").read_text())
    assert info["environment"]["torch_version"] == torch.__version__ and info["environment"]["device"] == "cpu"
    assert info["grid"]["modes"] == ["plain", "tiled", "sliced"] and info["isolated_processes"] is False
    assert len(info["inputs"]["images"]) == 2
    assert not (out / ".work").exists() and (out / "config.yaml").is_file()


def test_an_injected_oom_is_a_row_and_the_grid_goes_on(tmp_path, images):
    cfg = compose(
        images,
        tmp_path / "cache",
        *helpers.standin("cuda-oom", STANDIN, fail_op="decode", fail_from=64),
        *helpers.standin("cpu-oom", STANDIN, fail_op="encode", failure="runtime_oom"),
        *helpers.standin("broken", STANDIN, fail_op="decode", failure="error"),
        "bench.resolutions=[32,64]",
        "bench.batch_sizes=[1,2]",
        "bench.dtypes=[fp32]",
        "bench.modes=[plain,tiled]",
        "bench.plots=false",
    )
    df = bench(cfg, out_dir=tmp_path / "out").results
    assert len(df) == 3 * 2 * 2 * 2 * 3
    status = df[df["batch"] == 1].set_index(["vae", "op", "resolution", "mode"])["status"]
    assert status["cuda-oom", "decode", 64, "plain"] == "oom" and status["cuda-oom", "roundtrip", 64, "plain"] == "oom"
    assert status["cuda-oom", "decode", 32, "plain"] == "ok" and status["cuda-oom", "encode", 64, "plain"] == "ok"
    status = status.sort_index()
    assert (status["cpu-oom", "encode", :, "plain"] == "oom").all()
    # the encoder never ran, so neither did the decoder: nothing to decode is a failure with its reason
    assert (status["cpu-oom", "decode", :, "plain"] == "failed").all()
    assert (
        df.loc[(df["vae"] == "cpu-oom") & (df["op"] == "decode") & (df["mode"] == "plain"), "error"]
        .str.contains("the fp32 encode ran out of memory")
        .all()
    )
    assert (status["broken", "decode", :, "plain"] == "failed").all()
    assert (status["broken", "encode", :, "plain"] == "ok").all()
    assert (df.loc[df["mode"] == "tiled", "status"] == "unsupported").all()  # the stand-in has no tiled mode
    oom = df[df["status"] == "oom"]
    assert oom["ms_per_image_median"].isna().all() and oom["error"].str.contains("out of memory").all()
    assert df.loc[df["status"] == "unsupported", "error"].str.contains("has no tiled mode").all()
    broken = df[(df["vae"] == "broken") & (df["status"] == "failed")]
    assert len(broken) == 8 and broken["error"].str.startswith("ValueError: stand-in failure").all()


def test_an_injected_nan_is_flagged_with_the_override_that_makes_runs_upcast(tmp_path, images, caplog):
    """The bench says where fp16 is non-finite and prints the override; a run reads no finding, it takes the override."""
    cache = tmp_path / "cache"
    params = helpers.standin("xl", STANDIN, nan_dtype="fp16")
    cfg = compose(images, cache, *params, *one("fp32,fp16,bf16"))
    with caplog.at_level(logging.WARNING):
        outcome = bench(cfg, out_dir=tmp_path / "bench")
    df = outcome.results.set_index(["dtype", "op"])
    assert df.loc[("fp16", "decode"), "nonfinite"] and df.loc[("fp16", "roundtrip"), "nonfinite"]
    assert not df.loc[("fp16", "encode"), "nonfinite"] and not df.loc[("bf16", "decode"), "nonfinite"]
    assert (df["status"] == "ok").all()
    assert math.isnan(df.loc[("fp16", "decode"), "lowp_psnr_vs_fp32"])
    assert df.loc[("fp16", "encode"), "lowp_psnr_vs_fp32"] > 20
    assert "VAE 'xl' gave non-finite fp16 outputs (decode at 32 px (plain)" in caplog.text
    assert "run with vae.xl.upcast=always" in caplog.text and "bf16 outputs" not in caplog.text
    (entry,) = json.loads((outcome.out_dir / "bench.json").read_text())["nonfinite"]
    assert (entry["vae"], entry["dtype"], entry["override"]) == ("xl", "fp16", "vae.xl.upcast=always")
    assert {(w["op"], w["resolution"]) for w in entry["nonfinite"]} == {("decode", 32), ("roundtrip", 32)}
    assert not (cache / "bench").exists()  # nothing a later job could read

    def run_with(*extra, out):
        common = [*params, "+vae.xl.dtype=${dtype}", "dataset=folder", f"dataset.path={images}"]
        more = ["dataset.resolution=32", "device=cpu", "workers=0", f"cache_dir={cache}"]
        return run(helpers.compose_run([*common, *more, *extra]), out_dir=tmp_path / out)

    # the run does as its command line says: fp16, whose non-finite reconstructions are flagged
    outcome = run_with("dtype=fp16", out="run")
    assert pd.read_csv(outcome.out_dir / "timings.csv")["dtype"].tolist() == ["fp16"]
    assert outcome.summary["mean"].isna().all()

    # with the bench's override it evaluates the VAE in fp32, and says so
    with caplog.at_level(logging.INFO):
        outcome = run_with("dtype=fp16", "+vae.xl.upcast=always", out="run-upcast")
    assert "VAE 'xl': vae.xl.upcast=always; evaluating it in fp32 instead of fp16." in caplog.text
    assert pd.read_csv(outcome.out_dir / "timings.csv")["dtype"].tolist() == ["fp32"]
    (vae,) = json.loads((outcome.out_dir / "vaes.json").read_text())
    assert (vae["upcast"], vae["dtype"], vae["dtype_requested"]) == ("always", "fp32", "fp16")
    assert vae["upcast_reason"] == "vae.xl.upcast=always"
    assert outcome.summary["mean"].notna().all()  # the upcast VAE produced real numbers


def test_a_real_fp16_overflow_is_flagged(tmp_path, images):
    """A diffusers AutoencoderKL whose decoder activations exceed fp16's range, as the SDXL VAE's do."""
    from diffusers import AutoencoderKL

    path = helpers.save_tiny_kl(tmp_path / "kl")
    model = AutoencoderKL.from_pretrained(path)
    with torch.no_grad():
        model.decoder.conv_in.weight.mul_(3e5)  # weights stay below 65504, their sums do not
    model.save_pretrained(path)
    cfg = compose(images, tmp_path / "cache", "+vae=sdxl", f"vae.sdxl.source={path}", *one("fp32,fp16,bf16"))
    df = bench(cfg, out_dir=tmp_path / "out").results.set_index(["dtype", "op"])
    assert df.xs("decode", level="op")["nonfinite"].to_dict() == {"fp32": False, "fp16": True, "bf16": False}


@pytest.mark.slow  # worker processes
def test_isolated_processes_measure_each_configuration_and_survive_a_killed_worker(tmp_path, images):
    cfg = compose(
        images,
        tmp_path / "cache",
        *helpers.standin("plain", STANDIN),
        *helpers.standin("killed", STANDIN, fail_op="decode", fail_from=64, failure="sigkill"),
        "bench.isolate=process",
        "bench.resolutions=[32,64]",
        "bench.dtypes=[fp32]",
        "bench.modes=[plain]",
    )
    df = bench(cfg, out_dir=tmp_path / "out").results
    status = df.set_index(["vae", "resolution", "op"])["status"].sort_index()
    assert (status["plain"] == "ok").all() and (status["killed", 32] == "ok").all()
    assert (status["killed", 64] == "oom").all()  # the kernel's OOM killer sends the same signal
    assert df.loc[df["status"] == "oom", "error"].str.contains("SIGKILL").all()
    ok = df[df["status"] == "ok"]
    assert (
        (ok["mem_metric"] == "rss_peak").all()
        and (ok["peak_mem_mb"] > 0).all()
        and (ok["ms_per_image_median"] > 0).all()
    )


def test_compile_reports_its_cost_separately(tmp_path, images):
    compiled = ["bench.compile=true", "bench.compile_backend=eager", "bench.warmup=1"]
    cfg = compose(images, tmp_path / "cache", *helpers.standin("s", STANDIN), *compiled, *one())
    df = bench(cfg, out_dir=tmp_path / "out").results
    assert (df["status"] == "ok").all() and df["compile"].all() and df["compile_s"].notna().all()


def test_a_vae_that_cannot_load_fails_alone(tmp_path, images):
    missing = ["+vae=taef2", f"vae.taef2.source={tmp_path / 'missing'}"]
    cfg = compose(images, tmp_path / "cache", *missing, *helpers.standin("s", STANDIN), *one())
    outcome = bench(cfg, out_dir=tmp_path / "out")
    assert list(outcome.failed) == ["taef2"]
    status = outcome.results.set_index("vae")["status"]
    assert (status["taef2"] == "failed").all() and (status["s"] == "ok").all()


def test_real_taef2_on_real_photos(tmp_path, taef2_dir, assets):
    cfg = helpers.compose_run(
        [
            *FAST,
            "+vae=taef2",
            f"vae.taef2.source={taef2_dir}",
            "dataset=folder",
            f"dataset.path={assets / 'images' / 'kodak'}",
            f"cache_dir={tmp_path / 'cache'}",
            "bench.resolutions=[64]",
            "bench.dtypes=[fp32,bf16]",
            "bench.modes=[plain]",
        ],
        "bench",
    )
    df = bench(cfg, out_dir=tmp_path / "out").results.set_index(["dtype", "op"])
    assert (df["status"] == "ok").all() and not df["nonfinite"].any()
    assert 25 < df.loc[("bf16", "roundtrip"), "lowp_psnr_vs_fp32"] < 80


def test_cli(tmp_path, images, tiny_pth_dir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    args = [
        "bench",
        "+vae=taef2",
        *helpers.tiny_taef2(tiny_pth_dir),
        *FAST,
        "dataset=folder",
        f"dataset.path={images}",
        *one(),
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={out}",
    ]
    proc = helpers.evalvae_main(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "roundtrip" in proc.stderr and "ms" in proc.stderr  # the console table
    assert len(read_bench_csv(out / "bench.csv")) == 3
    proc = helpers.evalvae_main(
        ["bench", "+vae=taef2", "bench.modes=[fast]", f"hydra.run.dir={tmp_path / 'bad'}"], cwd=tmp_path
    )
    assert proc.returncode == 2 and "invalid bench.modes='fast'; choose one of plain, tiled, sliced" in proc.stderr


def test_no_vae_selected(tmp_path, images):
    from evalvae.jobs.vaes import NoVAESelected

    with pytest.raises(NoVAESelected, match=r"\+vae=NAME"):
        bench(compose(images, tmp_path / "cache"), out_dir=tmp_path / "out")
