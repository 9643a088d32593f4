"""``evalvae robustness``: seam band geometry, tiled vs untiled on stand-ins (a zero and a non-zero seam error),
precision rows, the resolution sweep, the configs, the command end to end and a VAE that fails."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.config import compose, instantiate
from evalvae.errors import ConfigError
from evalvae.jobs.overrides import check_overrides
from evalvae.jobs.schema import Check, ReducedDType, validate
from evalvae.robustness.checks import TIME
from evalvae.run import run
from evalvae.vae.seams import band_mask, diffusers_kl_seams, generic_decode_seams, generic_seams, max_abs_split
from evalvae.vae.tiling import tiled_apply
from evalvae.vocab import ROBUSTNESS_CHECKS

POINTWISE = "tests.robust_standins.Pointwise"
SPATIAL = "tests.robust_standins.Spatial"


def vae_args(name: str, target: str, **fields) -> list[str]:
    extra = "".join(f",{k}:{v}" for k, v in fields.items())
    return [f"+vae.{name}={{_target_:{target}{extra}}}"]


def configure(image_dir, *extra: str):
    return compose(
        [
            "dataset=folder",
            f"dataset.path={image_dir}",
            "dataset.resolution=64",
            "metrics=default",
            "device=cpu",
            "workers=0",
            "progress=false",
            "report=false",
            "robustness.tile_size=32",
            "robustness.resolutions=[32,64]",
            "robustness.plots=false",
            "dataset.limit=3",
            *extra,
        ],
        "robustness",
    )


def table(out) -> pd.DataFrame:
    return pd.read_csv(out / "robustness.csv", dtype={"setting": str})


def value(df, vae, check, setting, metric) -> float:
    sel = df[(df.vae == vae) & (df.check == check) & (df.setting == setting) & (df.metric == metric)]
    assert len(sel) == 1, (vae, check, setting, metric)
    return float(sel.value.iloc[0])


def psnr64(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def inputs(ds):
    """Each image of ``ds`` as the model input (1, 3, H, W) in [-1, 1] and as uint8 (3, H, W) numpy."""
    for i in range(len(ds)):
        img = ds[i].image
        yield img[None].float() / 127.5 - 1, img.numpy()


def pixels(y: torch.Tensor) -> np.ndarray:
    """[-1, 1] floats -> [0, 255] floats, clamped, not rounded (numpy, independently of evalvae)."""
    return np.clip((y.double().numpy() + 1) * 127.5, 0, 255)


# -- the seam band ------------------------------------------------------------------------------
def test_generic_seams_by_hand():
    # 32 latent px, tiles of 8 overlapping by 2 (stride 6): starts 0, 6, 12, 18, 24 -> overlaps [6,8), [12,14), ...
    assert generic_seams(32, 8, 2, 8) == [(48, 64), (96, 112), (144, 160), (192, 208)]
    # the last tile is moved back to end at 32: starts 0, 12, 16
    assert generic_seams(32, 16, 4, 8) == [(96, 128), (128, 224)]
    assert generic_seams(16, 16, 4, 8) == []
    assert generic_decode_seams(8, 8, 8, 2, 8) == ([], [])  # one tile: not tiled at all
    rows, cols = generic_decode_seams(8, 20, 8, 2, 8)  # only the width is tiled
    assert rows == [] and cols == generic_seams(20, 8, 2, 8)


def test_generic_seams_are_where_tiled_apply_puts_two_tiles():
    """Coverage counted from the tiles ``tiled_apply`` actually cut (their coordinates ride in the input)."""
    h, w, tile, overlap, f = 20, 26, 8, 2, 4
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).double()[None]
    cover = torch.zeros(h * f, w * f, dtype=torch.int64)

    def fn(x):
        r0, r1 = int(x[0, 0, 0, 0]), int(x[0, 0, -1, 0]) + 1
        c0, c1 = int(x[0, 1, 0, 0]), int(x[0, 1, 0, -1]) + 1
        cover[r0 * f : r1 * f, c0 * f : c1 * f] += 1
        return torch.nn.functional.interpolate(x, scale_factor=f)

    tiled_apply(fn, coords, tile=tile, overlap=overlap, scale=f)
    band = band_mask(h * f, w * f, *generic_decode_seams(h, w, tile, overlap, f))
    # a pixel on a band row (or column) lies in two tiles of its column (row), and off the band in one only
    assert torch.equal(band, cover >= 2)
    assert bool(band.any()) and not bool(band.all())


def test_diffusers_kl_seams_by_hand():
    # tile 8 latent / 16 px (factor 2): stride int(8 * 0.75) = 6, blend int(16 * 0.25) = 4, row_limit 12;
    # starts 0, 6, ..., 30 -> 6 tiles, tile k >= 1 blends output rows [12k, 12k + 4)
    assert diffusers_kl_seams(32, 8, 16) == [(12, 16), (24, 28), (36, 40), (48, 52), (60, 64)]


def test_kl_seams_are_where_diffusers_blends(tiny_kl_dir):
    """A decoder that paints each tile one constant: blended pixels (between two constants) lie on the band."""
    from evalvae.vae.kl import KLAdapter

    vae = KLAdapter("kl", str(tiny_kl_dir), "sd")
    vae.set_memory_mode("tiled", 16)  # factor 2: 8 latent px per tile

    class Paint(torch.nn.Module):
        calls = 0

        def forward(self, z):
            Paint.calls += 1
            return torch.full((len(z), 3, 2 * z.shape[-2], 2 * z.shape[-1]), float(Paint.calls))

    vae.module.decoder = Paint()
    y = vae.module.decode(torch.zeros(1, 4, 32, 32)).sample[0, 0]
    assert Paint.calls > 1 and y.shape == (64, 64)
    rows, cols = vae.decode_seams(32, 32)
    assert rows == cols == diffusers_kl_seams(32, 8, 16)
    band = band_mask(64, 64, rows, cols)
    blended = y != y.round()
    assert bool(blended.any()) and bool(band[blended].all())
    for lo, hi in rows:  # each band holds blended pixels after its first row (weight 0 for the new tile)
        assert bool(blended[lo + 1 : hi].any())


def test_band_mask_and_split():
    mask = band_mask(6, 8, [(2, 3)], [(5, 7)])
    assert mask.sum() == 8 + 2 * 5
    diff = torch.zeros(1, 3, 6, 8)
    diff[0, 1, 2, 0], diff[0, 0, 0, 0] = -7.0, 2.0
    assert max_abs_split(diff, mask) == (7.0, 2.0)
    assert math.isnan(max_abs_split(diff, torch.zeros(6, 8, dtype=torch.bool))[0])


# -- tiled vs untiled on stand-ins ----------------------------------------------------------------
def _standin(target: str):
    return instantiate({"_target_": target, "name": "s"})


def test_tiled_rows_zero_for_a_per_pixel_decoder_and_not_for_a_spatial_one(image_dir, tmp_path):
    out = tmp_path / "o"
    cfg = configure(image_dir, *vae_args("pw", POINTWISE), *vae_args("sp", SPATIAL), "robustness.checks=[tiled]")
    run(cfg, out_dir=out)
    df = table(out)
    assert set(df.check) == {"tiled"} and set(df.setting) == {"tile=32"}
    # pointwise: tiles blend to the untiled output up to float32 round-off
    assert value(df, "pw", "tiled", "tile=32", "seam_max_abs") < 1e-3
    assert value(df, "pw", "tiled", "tile=32", "max_abs") < 1e-3
    assert value(df, "pw", "tiled", "tile=32", "psnr") > 100
    # spatial (a 3x3 conv at latent resolution, wider than the quarter-overlap margin of 0 here): the seams
    # differ, but away from them each pixel comes from one tile whose receptive field stays inside it
    seam = value(df, "sp", "tiled", "tile=32", "seam_max_abs")
    assert seam > 0.5
    assert value(df, "sp", "tiled", "tile=32", "off_seam_max_abs") < 1e-3
    assert value(df, "sp", "tiled", "tile=32", "max_abs") == pytest.approx(seam)

    # independently: 64 px -> 8 latent px, tiles of 4 with overlap 1, starts 0, 3, 4 -> band [24, 56) px
    vae = _standin(SPATIAL)
    band = np.zeros((64, 64), bool)
    band[24:56, :] = band[:, 24:56] = True
    psnrs, seam_max = [], 0.0
    for x, _ in inputs(instantiate(cfg.dataset)):
        z = vae.encode(x)
        y = pixels(vae.decode(z))
        vae.set_memory_mode("tiled", 32)
        yt = pixels(vae.decode(z))
        vae.set_memory_mode("plain")
        psnrs.append(psnr64(y, yt))
        seam_max = max(seam_max, float(np.abs(yt - y)[..., band].max()))
        assert np.abs(yt - y)[..., ~band].max() < 1e-3
    assert seam == pytest.approx(seam_max, rel=1e-4, abs=1e-4)
    assert value(df, "sp", "tiled", "tile=32", "psnr") == pytest.approx(np.mean(psnrs), abs=1e-3)
    assert value(df, "sp", "tiled", "tile=32", "seam_fraction") == pytest.approx(band.mean())


# -- precision ---------------------------------------------------------------------------------
def test_precision_rows(image_dir, tmp_path):
    out = tmp_path / "o"
    cfg = configure(
        image_dir,
        *vae_args("pw", POINTWISE),
        *vae_args("nanout", POINTWISE, nan_dtype="bf16"),
        *vae_args("nofp", POINTWISE, fail_dtype="bf16"),
        "robustness.checks=[precision]",
        "robustness.dtypes=[fp16,bf16]",
        "robustness.bf16_on_cpu=true",  # whatever this CPU's instruction sets
    )
    run(cfg, out_dir=out)
    df = table(out)
    # bf16 of the plain stand-in: against an independent float64 PSNR of the fp32 and bf16 outputs
    ds = instantiate(cfg.dataset)
    ref, low = _standin(POINTWISE), instantiate({"_target_": POINTWISE, "name": "s", "dtype": "bf16"})
    psnrs, worst = [], 0.0
    for x, _ in inputs(ds):
        a, b = pixels(ref.decode(ref.encode(x))), pixels(low.decode(low.encode(x)))
        psnrs.append(psnr64(a, b))
        worst = max(worst, float(np.abs(a - b).max()))
    assert value(df, "pw", "precision", "bf16", "psnr") == pytest.approx(np.mean(psnrs), abs=1e-3)
    assert value(df, "pw", "precision", "bf16", "max_abs") == pytest.approx(worst, abs=1e-3)
    assert 20 < np.mean(psnrs) < 100 and value(df, "pw", "precision", "bf16", "nonfinite_images") == 0
    # fp16 on CPU: not run, with the reason
    fp16 = df[(df.vae == "pw") & (df.setting == "fp16")]
    assert fp16.value.isna().all() and fp16.note.str.contains("fp16_on_cpu=true").all()
    # a dtype whose output is NaN: counted, no PSNR from it
    n = len(ds)
    assert value(df, "nanout", "precision", "bf16", "nonfinite_images") == n
    assert value(df, "nanout", "precision", "bf16", "nonfinite_values") == n * 3 * 64 * 64
    assert math.isnan(value(df, "nanout", "precision", "bf16", "psnr"))
    # a dtype the VAE cannot run: unavailable, with the reason; the VAE itself is fine
    nofp = df[(df.vae == "nofp") & (df.setting == "bf16")]
    assert nofp.value.isna().all() and nofp.note.str.contains("bf16 cannot run on cpu").all()
    assert nofp.note.str.contains("not implemented").all()
    vaes = {v["vae"]: v["status"] for v in json.loads((out / "vaes.json").read_text())}
    assert vaes == {"pw": "ok", "nanout": "ok", "nofp": "ok"}


def test_fp16_on_cpu_runs_when_asked(image_dir, tmp_path):
    out = tmp_path / "o"
    cfg = configure(
        image_dir,
        *vae_args("pw", POINTWISE),
        "robustness.checks=[precision]",
        "robustness.dtypes=[fp16]",
        "robustness.fp16_on_cpu=true",
        "dataset.limit=1",
        "dataset.resolution=16",
    )
    run(cfg, out_dir=out)
    assert value(table(out), "pw", "precision", "fp16", "psnr") > 30


def test_bf16_on_cpu_runs_where_the_cpu_has_bf16_instructions_or_when_asked(image_dir, tmp_path, monkeypatch):
    from evalvae.robustness import task

    common = (*vae_args("pw", POINTWISE), "robustness.checks=[precision]", "robustness.dtypes=[bf16]")
    common = (*common, "dataset.limit=1", "dataset.resolution=16")
    for native, asked, runs in [(False, None, False), (True, None, True), (False, True, True), (True, False, False)]:
        monkeypatch.setattr(task, "cpu_has_native_bf16", lambda native=native: native)
        out = tmp_path / f"{native}-{asked}"
        run(
            configure(image_dir, *common, f"robustness.bf16_on_cpu={'null' if asked is None else str(asked).lower()}"),
            out_dir=out,
        )
        row = table(out).query("setting == 'bf16' and metric == 'psnr'").iloc[0]
        assert (not math.isnan(row.value)) is runs, (native, asked, row.note)
        if not runs:
            assert "not run on cpu" in row.note and ("bf16_on_cpu=" in row.note), row.note


@pytest.mark.parametrize(
    ("native", "asked", "expected"),
    [
        (True, None, None),
        (False, None, "has no bf16 instructions"),
        (None, None, "does not list its instruction sets"),
        (None, True, None),
        (False, True, None),
        (True, False, "robustness.bf16_on_cpu=false"),
    ],
)
def test_slow_bf16_reason_for_every_combination(native, asked, expected):
    from evalvae.robustness.task import slow_bf16_reason

    reason = slow_bf16_reason(asked, native)
    assert reason is None if expected is None else expected in reason


def test_cpu_flags_read_x86_and_aarch64_listings(tmp_path):
    from evalvae.device import cpu_flags, cpu_has_native_bf16

    x86, arm, empty = tmp_path / "x86", tmp_path / "arm", tmp_path / "empty"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    empty.write_text("processor\t: 0\n")
    assert {"avx2", "avx512_bf16"} <= cpu_flags(str(x86)) and cpu_has_native_bf16(cpu_flags(str(x86)))
    assert cpu_has_native_bf16(cpu_flags(str(arm)))
    assert cpu_has_native_bf16(frozenset({"avx2", "fma"})) is False
    assert cpu_flags(str(empty)) == frozenset() and cpu_flags(str(tmp_path / "missing")) is None


# -- the resolution sweep ------------------------------------------------------------------------
def test_sweep_rows_against_independent_psnr(image_dir, tmp_path):
    out = tmp_path / "o"
    cfg = configure(image_dir, *vae_args("pw", POINTWISE), "robustness.checks=[resolution]")
    run(cfg, out_dir=out)
    df = table(out)
    assert list(dict.fromkeys(df.setting)) == ["32", "64"]
    assert set(df.metric) == {"psnr", "ssim", "s_per_image"}
    vae = _standin(POINTWISE)
    for r in (32, 64):
        ds = instantiate(cfg.dataset, resolution=r)
        psnrs = []
        for x, img in inputs(ds):
            rec = np.round(pixels(vae.decode(vae.encode(x)))[0])
            psnrs.append(psnr64(img, rec))
        assert value(df, "pw", "resolution", str(r), "psnr") == pytest.approx(np.mean(psnrs), abs=1e-6)
        assert value(df, "pw", "resolution", str(r), "s_per_image") > 0
        assert 0 < value(df, "pw", "resolution", str(r), "ssim") < 1
    assert (df.n[df.metric == "psnr"] == len(ds)).all()
    # the images (36-70 px) are upscaled to 64 px, not to 32: said in the notes
    notes = df.set_index(["setting", "metric"]).note.fillna("")
    assert notes[("64", "psnr")].startswith("3 of 3 image(s) upscaled to 64 px")
    assert "upscaled" not in notes[("32", "psnr")]


# -- configs ---------------------------------------------------------------------------------------
def test_config_composes_and_validates_and_choices_match_the_domain():
    cfg = compose(["+vae=taesd"], "robustness")
    assert validate(cfg, "robustness") is cfg
    assert tuple(c.value for c in Check) == ROBUSTNESS_CHECKS
    assert [d.value for d in ReducedDType] == ["fp16", "bf16"]
    assert cfg.task._target_ == "evalvae.robustness.task.RobustnessTask"
    assert cfg.report is True and cfg.robustness.plots is True  # the command writes its plots and report unasked


def test_unknown_check_and_bad_values_are_refused_naming_the_choices():
    with pytest.raises(ConfigError) as e:
        validate(compose(["robustness.checks=[tiled,seams]"], "robustness"), "robustness")
    text = str(e.value)
    assert "robustness.checks" in text and "seams" in text
    assert all(c in text for c in ROBUSTNESS_CHECKS)
    with pytest.raises(ConfigError) as e:
        validate(compose(["robustness.dtypes=[fp8]", "robustness.tile_size=4"], "robustness"), "robustness")
    assert "fp8" in str(e.value) and "bf16" in str(e.value) and "tile_size" in str(e.value)
    with pytest.raises(ConfigError) as e:
        check_overrides(["robustness.tile_sise=64"], "robustness")
    assert "robustness.tile_size" in str(e.value)


# -- the command -----------------------------------------------------------------------------------
def test_run_end_to_end_with_a_failing_vae(image_dir, tmp_path):
    """Every check, the plot and the report; a VAE whose weights are missing is recorded and the other goes on."""
    out = tmp_path / "out"
    cfg = configure(
        image_dir,
        *vae_args("sp", SPATIAL),
        "+vae=taesd",
        f"vae.taesd.source={tmp_path / 'missing'}",
        "dataset.limit=2",
        "robustness.resolutions=[32]",
        "robustness.bf16_on_cpu=true",
        "robustness.plots=true",
        "report=true",
    )
    outcome = run(cfg, out_dir=out)
    assert list(outcome.failed) == ["taesd"]
    df = table(out)
    assert set(df.vae) == {"sp"} and list(dict.fromkeys(df.check)) == ["tiled", "precision", "resolution"]
    assert value(df, "sp", "tiled", "tile=32", "seam_max_abs") > 0
    assert value(df, "sp", "precision", "bf16", "psnr") > 20
    vaes = {v["vae"]: v for v in json.loads((out / "vaes.json").read_text())}
    assert vaes["sp"]["status"] == "ok"
    assert vaes["taesd"]["status"] == "failed" and vaes["taesd"]["failure"] == "load"
    assert "missing" in vaes["taesd"]["error"]
    assert Image.open(out / "robustness-sp.png").size[0] > 500
    assert not (out / "robustness-taesd.png").exists()
    timings = pd.read_csv(out / "timings.csv")
    assert list(timings.vae) == ["sp"] and timings.n_images.iloc[0] == 2
    html = (out / "report" / "report.html").read_text()
    assert "Robustness" in html and "Tiled vs untiled decode" in html and "data:image/png" in html
    md = (out / "report" / "report.md").read_text()
    assert "Resolution sweep" in md and "| sp | bf16 |" in md


# -- images too small for a VAE --------------------------------------------------------------------
def test_images_too_small_for_a_vae_are_skipped_with_the_reason_and_the_rest_unaffected(tmp_path):
    """crop=none: a 5x30 image has no crop to a multiple of the stand-in's factor 8. Every check skips it for that
    VAE (skipped.csv, and a note on its rows) and gives the rows of a run without it."""
    from tests.helpers import photo

    def write(root, sizes):
        root.mkdir()
        for name, (h, w) in sizes.items():
            Image.fromarray(photo(h, w, seed=h * w)).save(root / name)
        return root

    normal = {"a.png": (40, 56), "b.png": (48, 48)}
    mixed = write(tmp_path / "mixed", {**normal, "c_5x30.png": (5, 30)})
    only_normal = write(tmp_path / "normal", normal)
    common = (
        *vae_args("pw", SPATIAL),
        "dataset.crop=none",
        "robustness.dtypes=[bf16]",
        "robustness.bf16_on_cpu=true",
        "robustness.resolutions=[32]",
    )
    run(configure(mixed, *common), out_dir=tmp_path / "mixed-run")
    run(configure(only_normal, *common), out_dir=tmp_path / "normal-run")
    vaes = json.loads((tmp_path / "mixed-run" / "vaes.json").read_text())
    assert [(v["vae"], v["status"]) for v in vaes] == [("pw", "ok")]
    got, want = table(tmp_path / "mixed-run"), table(tmp_path / "normal-run")
    assert list(got.check.unique()) == ["tiled", "precision", "resolution"]
    # the same computation on the same two images (each image a group of its own size): measured equal
    pd.testing.assert_frame_equal(got[["check", "setting", "metric", "n"]], want[["check", "setting", "metric", "n"]])
    timed = got.metric == TIME
    np.testing.assert_allclose(got.value[~timed], want.value[~timed], rtol=1e-12)
    assert (got.n[got.metric.isin(["psnr", "nonfinite_images"])] == 2).all()
    too_small = "too small: 5x30 px (height x width), a side below the downsampling factor 8"
    reason, note = f"vae 'pw': {too_small}", f"1 image(s) skipped for this VAE: {too_small} (skipped.csv)"
    assert got.note.str.contains(note, regex=False).all(), got.note.tolist()
    assert not want.note.fillna("").str.contains("skipped").any()
    skipped = pd.read_csv(tmp_path / "mixed-run" / "skipped.csv")
    assert skipped.values.tolist() == [["c_5x30.png", reason]]
    assert pd.read_csv(tmp_path / "normal-run" / "skipped.csv").empty
