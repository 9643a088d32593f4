"""The run job at its edges: non-finite reconstructions, upcast and force_upcast, a VAE failing part-way, crop=none references."""

from __future__ import annotations

import hashlib
import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch

from evalvae.errors import ConfigError
from evalvae.run import run
from tests.helpers import NO_SAMPLES, TinyExtractor, compose_run, standin

SET_LEVEL = [
    "metrics=all",
    "~metrics.lpips",
    "metrics.fid.extractor=tests.helpers.TinyExtractor",
    "metrics.fid.kid_subsets=10",
]


def overrides(image_dir, cache, *extra) -> list[str]:
    return [
        "dataset=folder",
        f"dataset.path={image_dir}",
        "dataset.resolution=32",
        "device=cpu",
        "workers=0",
        f"cache_dir={cache}",
        *NO_SAMPLES,
        *extra,
    ]


def vaes_json(out) -> dict[str, dict]:
    return {v["vae"]: v for v in json.loads((out / "vaes.json").read_text())}


# -- non-finite reconstructions ------------------------------------------------------------------
def test_nonfinite_reconstructions_are_flagged_and_excluded_from_every_metric(tmp_path, image_dir, caplog):
    """Image 1 decodes to NaN at one pixel, image 4 to +inf (which clamping would turn into a plausible number)."""
    from evalvae.data import folder
    from evalvae.metrics import from_uint8, to_pixels
    from evalvae.metrics.frechet import frechet_distance

    cache = tmp_path / "cache"
    common = overrides(image_dir, cache, *SET_LEVEL, "batch_size=4")
    clean = run(compose_run([*common, *standin("clean", gain=0.9)]), out_dir=tmp_path / "clean").out_dir
    with caplog.at_level(logging.WARNING):
        out = run(
            compose_run([*common, *standin("bad", gain=0.9, nan_images="[1]", inf_images="[4]")]),
            out_dir=tmp_path / "bad",
        ).out_dir
    assert "'bad' (fp32): 2 of 6 reconstruction(s) held NaN or inf" in caplog.text

    per = pd.read_parquet(out / "per_image.parquet")
    pd.testing.assert_frame_equal(per, pd.read_csv(out / "per_image.csv"), check_dtype=False)
    assert per["nonfinite"].tolist() == [False, True, False, False, True, False]
    bad_rows, good_rows = per[per.nonfinite], per[~per.nonfinite]
    assert bad_rows[["psnr", "ssim", "bpp"]].isna().all().all(), (
        "a non-finite image gets no number, not one from clamped pixels, and no rate either"
    )
    assert good_rows["bpp"].notna().all()
    ref = pd.read_csv(clean / "per_image.csv").set_index("image")
    assert not ref["nonfinite"].any()
    np.testing.assert_allclose(
        good_rows.set_index("image")[["psnr", "ssim"]], ref.loc[good_rows.image, ["psnr", "ssim"]], rtol=1e-9
    )

    summary = pd.read_csv(out / "summary.csv").set_index("metric")
    assert set(summary.index) == {"psnr", "ssim", "rfid", "kid", "bpp"}
    assert (summary["n"] == 4).all(), "per-image means and the set-level fakes both count the 4 finite images"
    assert summary["note"].str.contains("2 non-finite reconstruction(s) excluded", regex=False).all()
    assert summary.loc["psnr", "mean"] == pytest.approx(ref.loc[good_rows.image, "psnr"].mean(), rel=1e-12)
    assert not pd.read_csv(clean / "summary.csv")["note"].fillna("").str.contains("non-finite").any()

    # rFID: the fakes are the 4 finite reconstructions (no black images), the reference their 4 originals
    ds = folder(str(image_dir), resolution=32)
    originals = torch.stack([ds[i].image for i in range(len(ds))])[[0, 2, 3, 5]]
    recon = to_pixels(from_uint8(originals) * 0.9).to(torch.uint8)
    real, fake = TinyExtractor()(originals).astype(np.float64), TinyExtractor()(recon).astype(np.float64)
    expected = frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    assert summary.loc["rfid", "mean"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert (out / "per_image.partial.csv").exists() is False


def test_partial_rows_carry_the_nonfinite_flag(tmp_path):
    from evalvae.results import RunWriter

    writer = RunWriter(tmp_path, ["psnr"])
    writer.add_rows(
        [{"vae": "v", "image": "a", "psnr": math.nan, "height": 8, "width": 8, "upscaled": False, "nonfinite": True}]
    )
    partial = pd.read_csv(tmp_path / "per_image.partial.csv")
    assert partial["nonfinite"].tolist() == [True]


def test_a_vae_with_no_finite_reconstruction_still_completes(tmp_path, image_dir):
    out = run(
        compose_run(
            [*overrides(image_dir, tmp_path / "cache", *SET_LEVEL), *standin("nan", nan_images="[0,1,2,3,4,5]")]
        ),
        out_dir=tmp_path / "out",
    )
    summary = out.summary.set_index("metric")
    assert summary["mean"].isna().all() and (summary["n"] == 0).all()
    assert "needs at least 2" in summary.loc["rfid", "note"] and "6 non-finite" in summary.loc["psnr", "note"]


# -- force_upcast ---------------------------------------------------------------------------------
def kl_spec(path, dtype: str, **extra) -> dict:
    return {
        "_target_": "evalvae.vae.kl.KLAdapter",
        "source": str(path),
        "latent_space": "sdxl",
        "dtype": dtype,
        **extra,
    }


def test_force_upcast_runs_an_fp16_vae_in_fp32_and_records_it(tmp_path, tiny_kl_dir, image_dir, caplog):
    assert json.loads((tiny_kl_dir / "config.json").read_text())["force_upcast"] is True
    cfg = compose_run(
        ["+vae=sdxl", f"vae.sdxl.source={tiny_kl_dir}", "dtype=fp16", *overrides(image_dir, tmp_path / "cache")]
    )
    with caplog.at_level(logging.WARNING):
        outcome = run(cfg, out_dir=tmp_path / "run")
    assert (
        "VAE 'sdxl': its config sets force_upcast" in caplog.text
        and "evaluating it in fp32 instead of fp16" in caplog.text
    )
    vae = vaes_json(outcome.out_dir)["sdxl"]
    assert (vae["dtype"], vae["dtype_requested"]) == ("fp32", "fp16") and "force_upcast" in vae["upcast_reason"]
    assert pd.read_csv(outcome.out_dir / "timings.csv")["dtype"].tolist() == ["fp32"]
    assert outcome.summary["mean"].notna().all()


def test_force_upcast_policy_follows_diffusers(tmp_path, tiny_kl_dir):
    """fp16 with the flag: fp32 (the weights re-read, not cast up). bf16, the flag false, or a config that
    predates the key (SD 1.x VAEs, whose pipelines never upcast): the dtype asked for. Each is told from the
    config file before loading, so the identity results are keyed by is the same before and after loading."""
    from evalvae.jobs.policy import load_for_run
    from evalvae.jobs.store import vae_identity

    def loaded(path, dtype, **extra):
        spec, cache = kl_spec(path, dtype, **extra), tmp_path / "cache"
        vae = load_for_run("v", spec, device="cpu", cache_dir=str(cache))
        assert vae_identity(spec, cache)["dtype"] == vae.dtype_name
        assert vae_identity(spec, cache) == vae_identity(spec, cache, vae)
        return vae

    up = loaded(tiny_kl_dir, "fp16")
    assert (up.dtype_name, up.dtype_requested, next(up.module.parameters()).dtype) == ("fp32", "fp16", torch.float32)
    fp32_weights = loaded(tiny_kl_dir, "fp32").module.state_dict()
    assert all(torch.equal(v, fp32_weights[k]) for k, v in up.module.state_dict().items())
    assert loaded(tiny_kl_dir, "bf16").dtype_name == "bf16"
    assert loaded(tiny_kl_dir, "fp16", force_upcast=False).dtype_name == "fp16"

    config = json.loads((tiny_kl_dir / "config.json").read_text())
    for name, value in (("unset", None), ("false", False)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "diffusion_pytorch_model.safetensors").symlink_to(tiny_kl_dir / "diffusion_pytorch_model.safetensors")
        doc = {k: v for k, v in config.items() if k != "force_upcast"} | (
            {} if value is None else {"force_upcast": value}
        )
        (folder / "config.json").write_text(json.dumps(doc))
        vae = loaded(folder, "fp16")
        assert (vae.dtype_name, vae.dtype_requested, vae.upcast_reason) == ("fp16", "fp16", None), name
    assert loaded(tmp_path / "unset", "fp16", force_upcast=True).dtype_name == "fp32"


def test_upcast_never_and_always_override_the_config(tiny_kl_dir, monkeypatch):
    """never: fp16 as asked though the config sets force_upcast; always: fp32 for fp16 and bf16 alike, loading
    only the fp32 copy; fp32 asked: nothing to do. vaes.json (describe) records each; a bad value is one line."""
    from evalvae.jobs import policy

    loads = []
    real = policy.load_vae
    monkeypatch.setattr(
        policy, "load_vae", lambda name, spec, **kw: loads.append(spec["dtype"]) or real(name, spec, **kw)
    )

    def loaded(dtype, upcast):
        loads.clear()
        return policy.load_for_run("v", kl_spec(tiny_kl_dir, dtype, upcast=upcast), device="cpu", cache_dir=None)

    never = loaded("fp16", "never").describe()
    assert (never["dtype"], never["dtype_requested"], never["upcast"], "upcast_reason" in never) == (
        "fp16",
        "fp16",
        "never",
        False,
    )
    for dtype in ("fp16", "bf16"):
        up = loaded(dtype, "always")
        assert loads == ["fp32"] and next(up.module.parameters()).dtype == torch.float32
        d = up.describe()
        assert (d["dtype"], d["dtype_requested"], d["upcast"]) == ("fp32", dtype, "always")
        assert d["upcast_reason"] == "vae.v.upcast=always"
    same = loaded("fp32", "always")
    assert (same.dtype_name, same.dtype_requested, same.upcast_reason, loads) == ("fp32", "fp32", None, ["fp32"])
    auto = loaded("fp16", "auto")  # the config's force_upcast: the fp16 copy, released, then fp32
    assert (auto.dtype_name, auto.describe()["upcast"], loads) == ("fp32", "auto", ["fp16", "fp32"])
    with pytest.raises(ConfigError, match=r"^invalid vae\.v\.upcast='sometimes'; choose one of auto, never, always$"):
        loaded("fp16", "sometimes")


def test_no_file_in_the_cache_changes_a_vaes_dtype_or_its_identity(tmp_path, tiny_kl_dir):
    """A finding of evalvae bench for these weights in bf16, in the cache folder where the bench once kept them,
    is read by nothing: the run evaluates bf16 as asked, and the VAE's identity is unchanged."""
    from evalvae.jobs.policy import load_for_run
    from evalvae.jobs.store import vae_identity

    cache = tmp_path / "cache"
    spec = kl_spec(tiny_kl_dir, "bf16")
    identity = vae_identity(spec, cache)
    vae = load_for_run("v", spec, device="cpu", cache_dir=str(cache))
    assert vae.dtype_name == "bf16"
    where = {"adapter": "evalvae.vae.kl.KLAdapter", "kind": "dir", "location": vae.weights.location, "files": {}}
    finding_key = hashlib.sha256(json.dumps(where, sort_keys=True).encode()).hexdigest()[:16]
    finding = {"vae": "v", "dtype": "bf16", "nonfinite": [{"op": "decode", "resolution": 32, "mode": "plain"}]}
    (cache / "bench").mkdir(parents=True)
    (cache / "bench" / "nonfinite.json").write_text(json.dumps({f"{finding_key}:bf16": finding}))
    assert load_for_run("v", spec, device="cpu", cache_dir=str(cache)).dtype_name == "bf16"
    assert vae_identity(spec, cache) == identity


def test_load_for_run_stays_importable_from_the_bench():
    from evalvae.bench.nonfinite import load_for_run
    from evalvae.jobs import policy

    assert load_for_run is policy.load_for_run


# -- a VAE failing part-way ----------------------------------------------------------------------
@pytest.mark.parametrize("failure", ["oom", "error"])
def test_a_vae_failing_mid_dataset_is_recorded_and_the_others_run(tmp_path, image_dir, caplog, failure):
    common = overrides(image_dir, tmp_path / "cache", *SET_LEVEL, "batch_size=2")
    vaes = [
        *standin("before", gain=0.9),
        *standin("broken", gain=0.7, fail_at=4, failure=failure),
        *standin("after", gain=0.8),
    ]
    with caplog.at_level(logging.ERROR):
        outcome = run(compose_run([*common, *vaes]), out_dir=tmp_path / "run")
    out = outcome.out_dir
    assert set(outcome.failed) == {"broken"}
    record = vaes_json(out)
    assert [v["status"] for v in record.values()] == ["ok", "failed", "ok"]
    assert record["broken"]["failure"] == failure
    if failure == "oom":
        assert "out of memory" in outcome.failed["broken"] and record["broken"]["error"].startswith(
            "OutOfMemoryError: CUDA out of memory"
        )
    else:
        assert record["broken"]["error"] == "RuntimeError: stand-in decoder failure"
    assert "VAE 'broken'" in caplog.text and "4 partial row(s) dropped" in caplog.text

    per = pd.read_csv(out / "per_image.csv")
    assert per.groupby("vae").size().to_dict() == {"before": 6, "after": 6}
    summary = pd.read_csv(out / "summary.csv")
    assert list(dict.fromkeys(summary.vae)) == ["before", "after"] and (summary["n"] == 6).all()
    assert pd.read_csv(out / "timings.csv")["vae"].tolist() == ["before", "after"]
    assert not (out / "per_image.partial.csv").exists()

    solo = run(compose_run([*common, *standin("before", gain=0.9)]), out_dir=tmp_path / "solo").out_dir
    pd.testing.assert_frame_equal(
        summary[summary.vae == "before"].reset_index(drop=True),
        pd.read_csv(solo / "summary.csv"),
        check_exact=False,
        rtol=1e-9,
    )


def test_an_out_of_memory_failure_exits_with_the_failure(tmp_path, image_dir):
    from tests.helpers import evalvae_main

    args = [
        "run",
        *overrides(image_dir, tmp_path / "cache"),
        *standin("ok"),
        *standin("oom", fail_at=0, failure="oom"),
        f"hydra.run.dir={tmp_path / 'run'}",
        "report=false",
    ]
    r = evalvae_main(args, cwd=tmp_path)
    assert r.returncode == 3 and "Traceback" not in r.stderr  # incomplete: a VAE failed
    assert "VAE 'oom' ran out of memory during evaluation" in r.stderr and "1 of 2 VAE(s) failed" in r.stderr
    assert set(pd.read_csv(tmp_path / "run" / "per_image.csv").vae) == {"ok"}


# -- crop=none: references from the cropped originals -------------------------------------------
@pytest.mark.parametrize("geometry", [["dataset.crop=none"], ["dataset.resolution=36"]], ids=["crop-none", "center-36"])
def test_a_perfect_autoencoder_has_zero_rfid(tmp_path, image_dir, geometry):
    """Image sizes (and the 36 px crop) are not multiples of 8: the VAE crops, and so must the reference."""
    out = run(
        compose_run(
            [*overrides(image_dir, tmp_path / "cache", *SET_LEVEL, "batch_size=4", *geometry), *standin("perfect")]
        ),
        out_dir=tmp_path / "run",
    ).out_dir
    per = pd.read_csv(out / "per_image.csv")
    assert ((per.height % 8 == 0) & (per.width % 8 == 0)).all() and np.allclose(per.ssim, 1.0)
    rfid = pd.read_csv(out / "summary.csv").set_index("metric").loc["rfid"]
    assert rfid["n"] == 6 and abs(rfid["mean"]) < 1e-6
    reference = json.loads((out / "metrics.json").read_text())["metrics"]["rfid"]["reference"]
    assert reference["crop_multiple"] == 8


def test_reference_keys_include_the_crop_multiple_only_where_it_crops(tmp_path, image_dir):
    from evalvae.data import folder
    from evalvae.metrics.refstats import References

    class Metric:
        extractor, features_version, libraries = TinyExtractor(), 1, ("torch",)

        def reference_identity(self):
            return self.extractor.identity()

    m = Metric()
    native = References(tmp_path, folder(str(image_dir), crop="none"))
    assert len({native.key(m, 8), native.key(m, 16), native.key(m)}) == 3
    square = References(tmp_path, folder(str(image_dir), resolution=32))
    assert square.key(m, 8) == square.key(m, 16) == square.key(m), (
        "a crop that changes nothing keeps one entry for every factor"
    )
    odd = References(tmp_path, folder(str(image_dir), resolution=36))
    assert odd.key(m, 8) != odd.key(m, 4) == odd.key(m)


def test_ref_command_fills_the_entry_run_reads(tmp_path, image_dir):
    """``ref`` with crop=none computes for factor 8 (its crop_multiple); a run of an f8 VAE then hits the cache."""
    from evalvae.ref.task import ref

    cache = tmp_path / "cache"
    geometry = [
        "dataset=folder",
        f"dataset.path={image_dir}",
        "dataset.crop=none",
        "device=cpu",
        "workers=0",
        f"cache_dir={cache}",
    ]
    info = ref(
        compose_run(
            [*geometry, "metrics.fid.extractor=tests.helpers.TinyExtractor", "metrics.fid.kid_subsets=10"], "ref"
        )
    )
    assert info[TinyExtractor.name]["source"] == "computed" and info[TinyExtractor.name]["crop_multiple"] == 8
    TinyExtractor.calls = 0
    out = run(compose_run([*geometry, *SET_LEVEL, *standin("perfect")]), out_dir=tmp_path / "run").out_dir
    assert TinyExtractor.calls == 6, "reconstructions only: the references came from the cache"
    assert json.loads((out / "metrics.json").read_text())["metrics"]["rfid"]["reference"]["source"] == "cache"
    assert abs(pd.read_csv(out / "summary.csv").set_index("metric").loc["rfid", "mean"]) < 1e-6
