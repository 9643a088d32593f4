"""Images too small for a metric or a VAE: one documented behaviour each, and the rest of the run unaffected.

* SSIM and LPIPS on an image with a side below their smallest input are NaN, with both SSIM backends,
  and summary.csv's note says how many images have no value and why;
* a latent of any shape and memory format (1x1 under channels_last) goes through the latent cache;
* an image with a side below a VAE's downsampling factor is skipped for that VAE (skipped.csv), and
  ``dataset.resolution`` below a VAE's factor fails that VAE with an error naming the argument.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.run import run
from evalvae.store import Store
from tests.helpers import compose_run, photo
from tests.metrics.test_pixel import sk_ssim

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on tiny images: fastest, and steadiest, on one thread


# -- the latent cache ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 4, 1, 1), (3, 4, 1, 1), (2, 16, 5, 1), (2, 16, 1, 5), (1, 1, 1, 1)])
def test_chunks_hold_latents_of_any_shape_and_memory_format(tmp_path, shape):
    """A conv's 1x1 output under channels_last is "contiguous" with stride(-1) = C, which a byte view refuses."""
    conv = torch.nn.Conv2d(3, shape[1], 3, stride=8, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(shape[0], 3, 8 * shape[2], 8 * shape[3]).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        z = conv(x)
    assert z.shape == shape
    store = Store(tmp_path)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        key = f"latents-{dtype}"
        store.write(key, {"latents": z.to(dtype)})
        got, _ = store.read(key)
        assert got["latents"].dtype == dtype and torch.equal(got["latents"], z.to(dtype))
    # the checksum is of the values in logical order: the same latents with row-major strides make the same file
    plain = z.clone(memory_format=torch.contiguous_format)
    assert plain.stride() != z.stride() or z.numel() == 1
    store.write("plain", {"latents": plain})
    assert store.path("plain").read_bytes() == store.path(f"latents-{torch.float32}").read_bytes()


# -- metrics below their smallest input ------------------------------------------------------------
SSIM_TOL = 1e-12  # both backends against scikit-image from 11 px up; measured 4.6e-15 (11x11 to 24x32, 3 noise levels)


def pair(h: int, w: int, n: int = 2, noise: float = 15.0):
    g = torch.Generator().manual_seed(h * 1000 + w)
    orig = torch.stack([torch.from_numpy(photo(h, w, seed=i)).permute(2, 0, 1) for i in range(n)]).double()
    return orig, (orig + torch.randn(orig.shape, generator=g, dtype=torch.float64) * noise).clamp(0, 255).round()


@pytest.mark.parametrize("backend", ["skimage", "torchmetrics", "auto"])
@pytest.mark.parametrize(
    "size", [(1, 30), (5, 5), (8, 8), (10, 40), (40, 10), (11, 11), (11, 40), (40, 11), (12, 13), (24, 32)]
)
def test_ssim_is_nan_below_its_window_with_every_backend_and_skimage_elsewhere(backend, size):
    """Below 11 px (the 11x11 window at sigma 1.5) scikit-image raises and torchmetrics gave NaN or raised."""
    from evalvae.metrics.pixel import SSIM

    metric = SSIM(backend=backend)
    o, r = pair(*size)
    got = metric(o, r)["ssim"]
    assert got.shape == (2,) and got.dtype == torch.float64 and metric.min_side == 11
    expected = sk_ssim(o, r)
    if min(size) < 11:
        assert all(math.isnan(v) for v in expected) and torch.isnan(got).all()
    else:
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=SSIM_TOL)


def test_ssim_window_follows_sigma():
    from evalvae.metrics.pixel import SSIM

    o, r = pair(9, 40)
    assert SSIM(sigma=1.0).min_side == 9 and torch.isfinite(SSIM(sigma=1.0, backend="skimage")(o, r)["ssim"]).all()
    assert SSIM(sigma=1.3).min_side == 11 and torch.isnan(SSIM(sigma=1.3, backend="torchmetrics")(o, r)["ssim"]).all()


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_is_nan_below_the_smallest_side_its_backbone_takes(net, monkeypatch):
    """The lpips package itself fails one pixel below ``min_side`` (AlexNet 31 px, VGG16 16 px) and
    scores ``min_side``; evalvae gives NaN below and the package's value from there up."""
    import lpips

    from evalvae.metrics.lpips import LPIPS

    torch.manual_seed(0)
    # a random backbone (sizes, not values); the torchvision classifier LPIPS never runs is left uninitialised,
    # which saves seconds per model
    with monkeypatch.context() as m:
        m.setattr(torch.nn.Linear, "reset_parameters", lambda self: None)
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    metric = LPIPS.from_model(model, net)
    side = metric.min_side
    assert side == {"alex": 31, "vgg": 16}[net]
    assert metric.size_note(2) == (
        f"2 image(s) with a side below {side} px have no LPIPS (the {net} backbone's poolings leave no feature map)"
    )
    for size in [(side - 1, 64), (64, side - 1), (side, side), (side, 64)]:
        o, r = pair(*size)
        x1, x0 = (r / 127.5 - 1).float(), (o / 127.5 - 1).float()
        got = metric(o, r)["lpips"]
        assert got.shape == (2,)
        if min(size) < side:
            with pytest.raises(RuntimeError, match="too small|Kernel size can't be greater"):
                model(x1, x0)
            assert torch.isnan(got).all(), size
        else:
            with torch.no_grad():
                expected = model(x1, x0).flatten().double()
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # the same call: measured 0


# -- the smallest image a VAE takes --------------------------------------------------------------------
def family_vaes(tmp_path, kl_dir, ae_dir, pth_dir) -> list:
    from evalvae.vae.codecs import BicubicCodec, IdentityCodec, PillowCodec
    from evalvae.vae.consistency import ConsistencyAdapter
    from evalvae.vae.dcae import DCAEAdapter
    from evalvae.vae.kl import KLAdapter
    from evalvae.vae.tiny import TinyAdapter
    from tests.family_standins import save_tiny_consistency, save_tiny_dcae

    return [
        KLAdapter("kl", str(kl_dir), latent_space="sd"),
        TinyAdapter("ae", str(ae_dir), latent_space="sd"),
        TinyAdapter("pth", str(pth_dir), latent_space="flux2", weights_prefix="tiny"),
        DCAEAdapter("dc", str(save_tiny_dcae(tmp_path / "dc")), latent_space="sana"),
        ConsistencyAdapter("cd", str(save_tiny_consistency(tmp_path / "cd", kl_dir=kl_dir)), latent_space="sd"),
        IdentityCodec("identity"),
        BicubicCodec("bicubic"),
        *(PillowCodec(f, format=f, quality=75) for f in ("jpeg", "webp", "avif")),
    ]


def test_every_family_takes_an_image_of_exactly_its_factor(tmp_path, tiny_kl_dir, tiny_ae_dir, tiny_pth_dir):
    """The smallest input the per-image skip assumes: a side of the downsampling factor (a 1x1 latent), in both
    memory formats, square or not."""
    vaes = family_vaes(tmp_path, tiny_kl_dir, tiny_ae_dir, tiny_pth_dir)
    assert sorted({v.downsample for v in vaes}) == [1, 2, 8, 32]
    for vae in vaes:
        f = vae.downsample
        for memory_format in (torch.contiguous_format, torch.channels_last):
            vae.module.to(memory_format=memory_format)
            for h, w in ((f, f), (f, 3 * f), (2 * f, f)):
                x = (torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1).contiguous(
                    memory_format=memory_format
                )
                y = vae.decode(vae.encode(x))
                assert y.shape == x.shape and torch.isfinite(y).all(), (vae.name, memory_format, h, w)


# -- end to end: tiny stand-ins on images of mixed sizes ---------------------------------------------
def write(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, (h, w)) in enumerate(sizes.items()):
        Image.fromarray(photo(h, w, seed=i)).save(root / name)
    return root


NORMAL = {"a.png": (24, 40), "b.png": (32, 32)}
TINY = {"c_8x8.png": (8, 8), "d_40x8.png": (40, 8)}  # below SSIM's 11 px; at f8, latents 1x1 and 5x1
UNDER = {"e_5x30.png": (5, 30)}  # below the factor of an f8 VAE


def taef2(pth_dir) -> list[str]:
    return ["+vae=taef2", f"vae.taef2.source={pth_dir}", "vae.taef2.sha256=null", "vae.taef2.weights_prefix=tiny"]


def kl(kl_dir) -> list[str]:
    return ["+vae.kl._target_=evalvae.vae.kl.KLAdapter", f"+vae.kl.source={kl_dir}", "+vae.kl.latent_space=sd"]


def common(images, *extra) -> list[str]:
    return ["dataset=folder", f"dataset.path={images}", "dataset.crop=none", "device=cpu", "workers=0", *extra]


def per_image(out) -> pd.DataFrame:
    return pd.read_parquet(out / "per_image.parquet").set_index(["vae", "image"])


def test_one_pixel_latents_go_through_the_latent_cache_under_channels_last(tmp_path, tiny_pth_dir):
    images = write(tmp_path / "images", {**NORMAL, **TINY})
    overrides = [*taef2(tiny_pth_dir), *common(images, "~metrics.ssim", "channels_last=true", "batch_size=2")]
    first = run(compose_run(overrides), out_dir=tmp_path / "first")
    assert not first.failed and json.loads((first.out_dir / "vaes.json").read_text())[0]["status"] == "ok"
    rows = per_image(first.out_dir)
    assert len(rows) == 4 and rows.loc[("taef2", "c_8x8.png"), ["height", "width"]].tolist() == [8, 8]
    assert rows["psnr"].notna().all()
    # the same images again, results not cached: every latent is read back from the cache, checksum and all
    again = run(compose_run([*overrides, "cache.results=false"]), out_dir=tmp_path / "again")
    timing = pd.read_csv(again.out_dir / "timings.csv").iloc[0]
    assert (timing.images_encoded, timing.latents_cached) == (0, 4)
    pd.testing.assert_series_equal(per_image(again.out_dir)["psnr"], rows["psnr"])  # the same latents decoded


SSIM_NOTE = "image(s) with a side below 11 px have no SSIM (the 11x11 window does not fit)"


def test_small_images_get_nan_ssim_with_a_note_and_too_small_ones_are_skipped_per_vae(
    tmp_path, tiny_kl_dir, tiny_pth_dir
):
    """Mixed sizes (crop=none) through an f2 and an f8 VAE, once per SSIM backend; a run on the normal
    images alone is the baseline their rows must keep."""
    images = write(tmp_path / "images", {**NORMAL, **TINY, **UNDER})
    vaes = [*kl(tiny_kl_dir), *taef2(tiny_pth_dir)]
    outs = {
        backend: run(
            compose_run([*vaes, *common(images, f"metrics.ssim.backend={backend}", "batch_size=2")]),
            out_dir=tmp_path / backend,
        )
        for backend in ("skimage", "torchmetrics")
    }
    for outcome in outs.values():
        assert not outcome.failed
        assert [v["status"] for v in json.loads((outcome.out_dir / "vaes.json").read_text())] == ["ok", "ok"]
    out = outs["skimage"].out_dir
    rows = per_image(out)
    # every image has a row, but the 5x30 one at f8: skipped for taef2 with the reason, scored by kl (f2, 4x30)
    assert sorted(rows.loc["kl"].index) == sorted([*NORMAL, *TINY, *UNDER])
    assert sorted(rows.loc["taef2"].index) == sorted([*NORMAL, *TINY])
    skipped = pd.read_csv(out / "skipped.csv").set_index("file")["reason"].to_dict()
    reason = "vae 'taef2': too small: 5x30 px (height x width), a side below the downsampling factor 8"
    assert skipped == {"e_5x30.png": reason}
    unscored = pd.read_csv(out / "files_unmatched.csv")  # per VAE, the images it did not score
    assert unscored.values.tolist() == [["taef2", "e_5x30.png", "too small", reason.removeprefix("vae 'taef2': ")]]
    assert rows.loc[("kl", "e_5x30.png"), ["height", "width"]].tolist() == [4, 30]
    # SSIM is NaN exactly where the scored image has a side below 11 px; PSNR is defined everywhere
    small = rows[["height", "width"]].min(axis=1) < 11
    assert rows["psnr"].notna().all() and (rows["ssim"].isna() == small).all()
    assert small.groupby(level="vae").sum().to_dict() == {"kl": 3, "taef2": 2}

    summary = pd.read_csv(out / "summary.csv").fillna({"note": ""}).set_index(["vae", "metric"])
    assert summary["n"].to_dict() == {
        ("kl", "psnr"): 5,
        ("kl", "ssim"): 2,
        ("kl", "bpp"): 5,
        ("taef2", "psnr"): 4,
        ("taef2", "ssim"): 2,
        ("taef2", "bpp"): 4,
    }
    assert summary.loc[("kl", "ssim"), "note"] == f"3 {SSIM_NOTE}"
    assert summary.loc[("taef2", "ssim"), "note"] == f"2 {SSIM_NOTE}"
    assert not summary.loc[(slice(None), ["psnr", "bpp"]), "note"].str.contains("below").any()
    assert summary.loc[("kl", "ssim"), "mean"] == pytest.approx(rows.loc["kl", "ssim"].mean(), rel=1e-12)

    # the torchmetrics backend: NaN in the same places, the same values elsewhere, the same summary
    other = per_image(outs["torchmetrics"].out_dir)
    pd.testing.assert_index_equal(other.index, rows.index)
    assert (other["ssim"].isna() == small).all()
    np.testing.assert_allclose(other.loc[~small, "ssim"], rows.loc[~small, "ssim"], rtol=0, atol=SSIM_TOL)
    other_summary = pd.read_csv(outs["torchmetrics"].out_dir / "summary.csv").fillna({"note": ""})
    pd.testing.assert_frame_equal(
        other_summary.set_index(["vae", "metric"])[["n", "note"]], summary[["n", "note"]], check_exact=True
    )

    # the other images' rows are those of a run without the small ones (each image is a group of its own
    # size, so the same computation: measured equal; allowed 1e-12)
    normal = write(tmp_path / "normal", NORMAL)
    base = per_image(
        run(
            compose_run([*vaes, *common(normal, "batch_size=2", f"cache_dir={tmp_path / 'other-cache'}")]),
            out_dir=tmp_path / "normal-run",
        ).out_dir
    )
    np.testing.assert_allclose(rows.loc[base.index, ["psnr", "ssim"]], base[["psnr", "ssim"]], rtol=1e-12)


def test_references_leave_out_the_images_a_vae_of_that_factor_skips(tmp_path):
    """A perfect f8 stand-in on crop=none images, one 5x30: rFID 0 over the 4 others, whether the
    references come from the run's own pass or from ``evalvae ref`` (crop_multiple 8) beforehand."""
    from evalvae.ref.task import ref
    from tests.helpers import TinyExtractor

    images = write(tmp_path / "images", {**NORMAL, **TINY, **UNDER})
    fid = ["metrics.fid.extractor=tests.helpers.TinyExtractor", "metrics.fid.kid_subsets=5"]
    perfect = ["+vae.perfect._target_=tests.run_standins.Identity"]
    set_level = ["metrics=all", "~metrics.lpips", *fid]
    for where in ("pass", "ref"):
        cache = f"cache_dir={tmp_path / where}"
        if where == "ref":
            info = ref(compose_run([*common(images, cache), *fid], "ref"))
            assert info[TinyExtractor.name]["n"] == 4 and info[TinyExtractor.name]["crop_multiple"] == 8
        out = run(compose_run([*perfect, *common(images, cache, *set_level)]), out_dir=tmp_path / where).out_dir
        summary = pd.read_csv(out / "summary.csv").set_index("metric")
        source = json.loads((out / "metrics.json").read_text())["metrics"]["rfid"]["reference"]["source"]
        assert source == ("cache" if where == "ref" else "computed")
        assert summary.loc["rfid", "n"] == 4 and abs(summary.loc["rfid", "mean"]) < 1e-6, where
        assert summary.loc["psnr", "n"] == 4 and summary.loc["ssim", "n"] == 2
        assert list(pd.read_csv(out / "skipped.csv")["file"]) == ["e_5x30.png"]


# -- dataset.resolution against the VAEs' factors ----------------------------------------------------
def test_a_resolution_below_a_vaes_factor_fails_that_vae_by_name_and_the_others_run(tmp_path, tiny_kl_dir):
    """crop=center at 16 px: the f32 DC-AE has no crop to a multiple of 32, so it fails before any image, with an
    error naming the argument, its value and the smallest allowed; the f2 VAE runs. At 40 px DC-AE scores 32x32; ``ref`` with crop_multiple=32 refuses 16 px."""
    from evalvae.errors import ConfigError
    from evalvae.ref.task import ref
    from tests.family_standins import save_tiny_dcae

    dc = ["+vae=dc-ae-f32c32", f"vae.dc-ae-f32c32.source={save_tiny_dcae(tmp_path / 'dc')}"]
    images = write(tmp_path / "images", NORMAL)
    square = ["dataset=folder", f"dataset.path={images}", "device=cpu", "workers=0"]
    outcome = run(compose_run([*kl(tiny_kl_dir), *dc, *square, "dataset.resolution=16"]), out_dir=tmp_path / "r16")
    error = (
        "invalid dataset.resolution=16; at least 32 with VAE 'dc-ae-f32c32' (its downsampling factor): "
        "a smaller image has no crop to a multiple of it"
    )
    assert outcome.failed == {"dc-ae-f32c32": error}
    record = {v["vae"]: v for v in json.loads((outcome.out_dir / "vaes.json").read_text())}
    assert (record["dc-ae-f32c32"]["status"], record["dc-ae-f32c32"]["failure"]) == ("failed", "load")
    assert record["dc-ae-f32c32"]["error"] == error
    assert record["kl"]["status"] == "ok"
    rows = per_image(outcome.out_dir)
    assert list(rows.index) == [("kl", "a.png"), ("kl", "b.png")] and (rows[["height", "width"]] == 16).all().all()
    assert pd.read_csv(outcome.out_dir / "skipped.csv").empty

    at_40 = run(compose_run([*dc, *square, "dataset.resolution=40"]), out_dir=tmp_path / "r40")
    assert not at_40.failed and (per_image(at_40.out_dir)[["height", "width"]] == 32).all().all()
    # ``evalvae ref`` refuses a resolution below its crop multiple
    ref_args = [
        *square,
        "dataset.resolution=16",
        "crop_multiple=32",
        "metrics.fid.extractor=tests.helpers.TinyExtractor",
    ]
    with pytest.raises(ConfigError, match=r"invalid dataset.resolution=16; at least 32 with crop_multiple=32"):
        ref(compose_run(ref_args, "ref"))


def test_the_latents_command_skips_images_below_a_factor_and_checks_the_resolution(tmp_path, caplog):
    images = write(tmp_path / "images", {**NORMAL, **UNDER})
    identity = ["+vae.id._target_=tests.run_standins.Identity"]  # f8
    with caplog.at_level(logging.WARNING):
        native = run(
            compose_run([*identity, *common(images, "latents.plots=false")], "latents"), out_dir=tmp_path / "native"
        )
    assert not native.failed and native.summary.set_index("vae").loc["id", "n_images"] == 2
    assert "VAE 'id': 1 image(s) skipped, e.g. e_5x30.png: vae 'id': too small: 5x30 px" in caplog.text

    bicubic32 = ["+vae=bicubic-f8", "vae.bicubic-f8.factor=32"]
    square = ["dataset=folder", f"dataset.path={images}", "dataset.resolution=16", "device=cpu", "workers=0"]
    outcome = run(
        compose_run([*identity, *bicubic32, *square, "latents.plots=false"], "latents"), out_dir=tmp_path / "square"
    )
    assert list(outcome.failed) == ["bicubic-f8"]
    assert outcome.failed["bicubic-f8"].startswith("invalid dataset.resolution=16; at least 32 with VAE 'bicubic-f8'")
    assert outcome.summary.set_index("vae").loc["id", "n_images"] == 3


def test_lpips_below_its_smallest_side_is_nan_with_a_note_in_a_run(tmp_path, tiny_kl_dir, real_weights):
    """Real LPIPS-alex (31 px) on mixed sizes through an f2 VAE: only the 32x32 image has a value."""
    images = write(tmp_path / "images", {**NORMAL, **TINY, **UNDER})
    lpips = ["metrics=lpips", f"metrics.lpips.backbone_weights={real_weights / 'lpips' / 'alexnet_features.pth'}"]
    outcome = run(compose_run([*kl(tiny_kl_dir), *common(images, *lpips)]), out_dir=tmp_path / "run")
    assert not outcome.failed
    rows = per_image(outcome.out_dir).loc["kl"]
    assert rows["lpips"].notna().tolist() == [name == "b.png" for name in rows.index]  # b: 32x32; a: 24x40
    lpips_row = outcome.summary.set_index(["vae", "metric"]).loc[("kl", "lpips")]
    assert lpips_row["n"] == 1 and lpips_row["mean"] == pytest.approx(rows.loc["b.png", "lpips"], rel=1e-12)
    assert lpips_row["note"] == (
        "4 image(s) with a side below 31 px have no LPIPS (the alex backbone's poolings leave no feature map)"
    )
