"""The run job end to end: result files, bad input, invariances, selection and the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evalvae.run import run
from tests.helpers import NO_SAMPLES, compose_run, evalvae_main, photo, tiny_taef2

# Batch composition (size, workers, other images in the batch) must not change a number beyond float noise.
# Measured with the tiny model on the six 32 px images: 0.0 difference in PSNR and SSIM between batch sizes
# 1, 2, 3, 4 and 6 and with channels_last on or off. Another CPU may pick other float32 convolution kernels
# and round an 8-bit value the other way (the decoder's outputs here come within 1.4e-4 of a rounding edge, on
# 0..255); one such value moves PSNR by at most 4.0e-5 dB and SSIM by at most 1.5e-5 on these images.
# The tolerances allow five per image.
BATCH_PSNR_DB = 2e-4
BATCH_SSIM = 8e-5


def tiny_overrides(tiny_pth_dir, image_dir, *extra, vaes="taef2"):
    return [
        f"+vae={vaes}",
        *tiny_taef2(tiny_pth_dir),
        "dataset=folder",
        f"dataset.path={image_dir}",
        "dataset.resolution=32",
        "workers=0",
        *NO_SAMPLES,
        *extra,
    ]


def assert_same_summary(returned: pd.DataFrame, written: pd.DataFrame) -> None:
    """Equal tables; CSV reads an empty note back as NaN and a float written with repr() back exactly."""

    def plain(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(note=frame["note"].astype(object).fillna("").astype(str)).reset_index(drop=True)

    pd.testing.assert_frame_equal(plain(returned), plain(written), check_dtype=False, rtol=1e-12, atol=0)


def test_run_writes_every_result_file(tmp_path, tiny_pth_dir, image_dir):
    out = tmp_path / "run"
    outcome = run(compose_run(tiny_overrides(tiny_pth_dir, image_dir)), out_dir=out)
    for name in [
        "config.yaml",
        "per_image.parquet",
        "per_image.csv",
        "summary.csv",
        "timings.csv",
        "skipped.csv",
        "vaes.json",
        "metrics.json",
    ]:
        assert (out / name).is_file(), name
    assert not (out / "per_image.partial.csv").exists()
    per_image = pd.read_parquet(out / "per_image.parquet")
    assert list(per_image.columns[:4]) == ["vae", "image", "psnr", "ssim"] and {"height", "width"} <= set(
        per_image.columns
    )
    assert len(per_image) == 6 and (per_image.height == 32).all() and (per_image.width == 32).all()
    pd.testing.assert_frame_equal(per_image, pd.read_csv(out / "per_image.csv"), check_dtype=False)
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["vae", "metric", "mean", "std", "n", "note"]
    timings = pd.read_csv(out / "timings.csv")
    assert (
        timings.loc[0, "n_images"] == 6 and (timings[["load_s", "encode_s", "decode_s", "metrics_s"]] > 0).all().all()
    )
    protocol = json.loads((out / "metrics.json").read_text())
    assert protocol["quantize"] is True and protocol["dataset"]["resolution"] == 32
    assert protocol["metrics"]["psnr"]["higher_is_better"] is True
    vaes = json.loads((out / "vaes.json").read_text())
    assert vaes[0]["status"] == "ok" and len(vaes[0]["encoder_sha256"]) == 64
    # the returned summary is the one written: same rows, columns, labels and numbers
    assert_same_summary(outcome.summary, summary)
    wrong = summary.copy()
    wrong.loc[wrong.metric == "ssim", "mean"] += 1e-9
    with pytest.raises(AssertionError, match="mean"):
        assert_same_summary(outcome.summary, wrong)
    for metric in ("psnr", "ssim"):  # and each row is the per-image column's mean, sample std and count
        row = summary.set_index("metric").loc[metric]
        assert row["n"] == 6
        assert row["mean"] == pytest.approx(per_image[metric].mean(), rel=1e-12)
        assert row["std"] == pytest.approx(per_image[metric].std(ddof=1), rel=1e-12)


def test_metrics_match_an_independent_recomputation(tmp_path, tiny_pth_dir, image_dir):
    """Re-run the model by hand and score with scikit-image: the run's numbers must agree."""
    import torch
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from evalvae.data import folder
    from evalvae.vae.tiny import TinyAdapter

    per_image = run(
        compose_run(tiny_overrides(tiny_pth_dir, image_dir, "channels_last=false")), out_dir=tmp_path
    ).summary
    rows = pd.read_csv(tmp_path / "per_image.csv").set_index("image")
    vae = TinyAdapter("t", str(tiny_pth_dir), latent_space="flux2", weights_prefix="tiny")
    ds = folder(str(image_dir), resolution=32)
    for i in range(len(ds)):
        s = ds[i]
        x = s.image[None].float() / 127.5 - 1
        y = vae.decode(vae.encode(x))
        rec = ((y.clamp(-1, 1) + 1) * 127.5).round()[0].permute(1, 2, 0).to(torch.uint8).numpy()
        orig = s.image.permute(1, 2, 0).numpy()
        assert rows.loc[s.id, "psnr"] == pytest.approx(
            peak_signal_noise_ratio(orig, rec, data_range=255), abs=5e-4
        )  # batch of 1, not the run's: flips ~4e-5 dB each
        ssim = structural_similarity(
            orig, rec, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255
        )
        assert rows.loc[s.id, "ssim"] == pytest.approx(ssim, abs=1e-5)
    assert not per_image.empty


def test_batch_size_and_workers_do_not_change_results(tmp_path, tiny_pth_dir, image_dir):
    a = run(compose_run(tiny_overrides(tiny_pth_dir, image_dir, "batch_size=1")), out_dir=tmp_path / "a")
    b = run(compose_run(tiny_overrides(tiny_pth_dir, image_dir, "batch_size=4", "workers=1")), out_dir=tmp_path / "b")
    pa, pb = (pd.read_csv(o.out_dir / "per_image.csv") for o in (a, b))
    assert list(pa.image) == list(pb.image)
    np.testing.assert_allclose(pa.psnr, pb.psnr, rtol=0, atol=BATCH_PSNR_DB)
    np.testing.assert_allclose(pa.ssim, pb.ssim, rtol=0, atol=BATCH_SSIM)


def test_bad_files_are_skipped_and_good_numbers_unaffected(tmp_path, tiny_pth_dir, image_dir):
    clean = run(compose_run(tiny_overrides(tiny_pth_dir, image_dir)), out_dir=tmp_path / "clean")
    dirty_dir = tmp_path / "dirty"
    shutil.copytree(image_dir, dirty_dir)
    good = (image_dir / "img00.png").read_bytes()
    (dirty_dir / "a_truncated.png").write_bytes(good[: len(good) // 3])
    (dirty_dir / "b_not_image.jpg").write_text("hello")
    (dirty_dir / "c_notes.txt").write_text("notes")
    Image.fromarray(photo(40, 40)).convert("LA").save(dirty_dir / "d_gray_alpha.png")
    Image.fromarray(photo(40, 40)).convert("CMYK").save(dirty_dir / "e_cmyk.jpg")
    dirty = run(compose_run(tiny_overrides(tiny_pth_dir, dirty_dir, "batch_size=3")), out_dir=tmp_path / "dirty_run")
    skipped = pd.read_csv(dirty.out_dir / "skipped.csv").set_index("file")["reason"]
    assert set(skipped.index) == {"a_truncated.png", "b_not_image.jpg", "c_notes.txt"}
    assert "cannot decode" in skipped["a_truncated.png"] and "not an image" in skipped["b_not_image.jpg"]
    d = pd.read_csv(dirty.out_dir / "per_image.csv").set_index("image")
    c = pd.read_csv(clean.out_dir / "per_image.csv").set_index("image")
    assert {"d_gray_alpha.png", "e_cmyk.jpg"} <= set(d.index)  # converted, not skipped
    np.testing.assert_allclose(d.loc[c.index, "psnr"], c["psnr"], rtol=0, atol=BATCH_PSNR_DB)
    np.testing.assert_allclose(d.loc[c.index, "ssim"], c["ssim"], rtol=0, atol=BATCH_SSIM)


def test_small_images_follow_the_rule(tmp_path, tiny_pth_dir, image_dir):
    up = run(compose_run(tiny_overrides(tiny_pth_dir, image_dir, "dataset.resolution=48")), out_dir=tmp_path / "up")
    per = pd.read_csv(up.out_dir / "per_image.csv")
    assert len(per) == 6 and per.upscaled.sum() == 4  # shorter sides 40, 48, 40, 36, 50, 44
    skip = run(
        compose_run(tiny_overrides(tiny_pth_dir, image_dir, "dataset.resolution=48", "dataset.small=skip")),
        out_dir=tmp_path / "skip",
    )
    assert len(pd.read_csv(skip.out_dir / "per_image.csv")) == 2
    assert len(pd.read_csv(skip.out_dir / "skipped.csv")) == 4


def test_native_size_crops_to_the_vae_factor(tmp_path, tiny_pth_dir, image_dir):
    out = run(
        compose_run(tiny_overrides(tiny_pth_dir, image_dir, "dataset.crop=none", "batch_size=4")), out_dir=tmp_path
    ).out_dir
    per = pd.read_csv(out / "per_image.csv").set_index("image")
    assert (per.loc["img00.png", ["height", "width"]] == [40, 56]).all()
    assert (per.loc["img03.jpg", ["height", "width"]] == [32, 48]).all()  # 36x50 -> multiples of 8


def test_several_vaes_in_one_run_and_one_that_cannot_load_does_not_stop_the_others(
    tmp_path, tiny_pth_dir, tiny_kl_dir, image_dir
):
    vaes = "[taef2,ft-ema,ft-mse]"  # ft-ema: a hub id, offline here
    cfg = compose_run(tiny_overrides(tiny_pth_dir, image_dir, f"vae.ft-mse.source={tiny_kl_dir}", vaes=vaes))
    outcome = run(cfg, out_dir=tmp_path)
    assert set(outcome.failed) == {"ft-ema"} and "stabilityai/sd-vae-ft-ema" in outcome.failed["ft-ema"]
    per = pd.read_csv(tmp_path / "per_image.csv")
    assert list(dict.fromkeys(per.vae)) == ["taef2", "ft-mse"] and len(per) == 12
    assert set(outcome.summary.vae) == {"taef2", "ft-mse"}
    assert len(pd.read_csv(tmp_path / "timings.csv")) == 2
    assert [v["status"] for v in json.loads((tmp_path / "vaes.json").read_text())] == ["ok", "failed", "ok"]


def test_cli_without_vae_or_default_prints_names_and_fails(tmp_path):
    # with nothing selected a run evaluates task.default_vaes (tests/integration/test_default_run.py); without one it stops
    r = evalvae_main(["run", "task.default_vaes=null", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 2
    assert "no VAE selected" in r.stderr and "ft-mse" in r.stderr and "taef2" in r.stderr


def test_cli_offline_hub_fails_in_one_line_without_traceback(tmp_path):
    r = evalvae_main(["run", "+vae=ft-mse", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr + r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("evalvae:")]
    assert len(errors) == 1 and "VAE 'ft-mse'" in errors[0] and "vae.ft-mse.source=" in errors[0]


def test_cli_multirun_sweeps_vaes(tmp_path, tiny_pth_dir, tiny_ae_dir, image_dir):
    """README: ``run -m +vae=taesd,taef2 ++vae.taef2.source=DIR``: each job selects one VAE; ``++`` sets a
    field in the job that selects it, and no job calls the other VAE unselected."""
    args = [
        "run",
        "-m",
        "+vae=taef2,taesd",
        *tiny_taef2(tiny_pth_dir, "++"),
        f"++vae.taesd.source={tiny_ae_dir}",
        "dataset=folder",
        f"dataset.path={image_dir}",
        "dataset.resolution=32",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    r = evalvae_main(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "not selected" not in r.stderr and "did you mean" not in r.stderr
    summaries = sorted((tmp_path / "sweep").glob("*/summary.csv"))
    assert [set(pd.read_csv(p).vae) for p in summaries] == [{"taef2"}, {"taesd"}]
    for job in ("0", "1"):  # each job ends with its own report
        assert (tmp_path / "sweep" / job / "report" / "report.html").is_file(), r.stderr[-2000:]
