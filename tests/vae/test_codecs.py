"""Codec baselines as VAEs (evalvae.vae.codecs), bits per pixel (evalvae.vae.bits, evalvae.recon.rate) and
``metrics.latent_bits``: round trips, rate formulas against Pillow and numpy, the target-bpp search, a run."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.errors import ConfigError
from evalvae.jobs.schema import validate
from evalvae.metrics import from_uint8
from evalvae.recon.rate import Rate, check_latent_bits
from evalvae.run import run
from evalvae.vae import codecs, load_vae
from evalvae.vae.bits import SIDE_BITS, quantize_latents, quantized_bits, stored_bits
from tests.helpers import NO_SAMPLES, compose_run, photo, tiny_taef2

CODECS = ["identity", "bicubic-f8", "jpeg", "webp", "avif"]


def codec(name: str, **fields):
    cfg = compose_run([f"+vae={name}", *(f"vae.{name}.{k}={v}" for k, v in fields.items())])
    return load_vae(name, dict(cfg.vae[name]), device="cpu")


def batch(*arrays: np.ndarray) -> torch.Tensor:
    """uint8 HWC arrays -> the [-1, 1] batch the run feeds a VAE."""
    return from_uint8(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous())


def levels(y: torch.Tensor) -> np.ndarray:
    """A decode in [-1, 1] -> uint8 HWC, as the metrics see it."""
    return ((y + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def kodak(assets) -> list[np.ndarray]:
    """Four Kodak photos at 256x256 (a centre crop of a bicubic resize)."""
    out = []
    for i in (1, 3, 7, 23):
        im = Image.open(assets / "images" / "kodak" / f"kodim{i:02d}.png").convert("RGB")
        im = im.resize((384, 256), Image.BICUBIC) if im.width > im.height else im.resize((256, 384), Image.BICUBIC)
        left, top = (im.width - 256) // 2, (im.height - 256) // 2
        out.append(np.asarray(im.crop((left, top, left + 256, top + 256))))
    return out


def test_every_codec_config_composes_validates_and_instantiates():
    for name in CODECS:
        validate(compose_run([f"+vae={name}"]), "run")
        vae = codec(name)
        assert vae.family == "codec" and vae.describe()["parameters"] == 0, name
    for bad in ("quality=101", "quality=null", "bpp=-1", "tolerance=2", "format=gif"):
        key, value = bad.split("=")
        with pytest.raises(ConfigError, match=f"vae.jpeg.{key}"):
            codec("jpeg", **{key: value})


def test_identity_is_exact_at_24_bpp():
    images = batch(photo(24, 40, seed=1), photo(24, 40, seed=2))
    vae = codec("identity")
    z = vae.encode(images)
    assert z.dtype == torch.uint8 and z.shape == (2, 3, 24, 40)
    assert torch.equal(vae.decode(z), images)
    assert vae.rate_bits(z).tolist() == [24 * 24 * 40] * 2


def test_bicubic_f8_is_an_8_bit_area_thumbnail_upsampled_bicubically():
    image = photo(32, 48, seed=3)
    vae = codec("bicubic-f8")
    z = vae.encode(batch(image))
    assert z.dtype == torch.uint8 and z.shape == (1, 3, 4, 6) and vae.downsample == 8
    blocks = image.astype(np.float64).reshape(4, 8, 6, 8, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(z[0].permute(1, 2, 0).numpy(), np.floor(blocks + 0.5).astype(np.uint8))
    y = vae.decode(z)
    assert y.shape == (1, 3, 32, 48)
    # a flat thumbnail upsamples to the same flat image (bicubic weights sum to 1)
    flat = torch.full((1, 3, 2, 2), 77, dtype=torch.uint8)
    assert torch.allclose(vae.decode(flat), torch.full((1, 3, 16, 16), 77 / 127.5 - 1), atol=1e-6)
    assert float(vae.rate_bits(z)[0]) / (32 * 48) == pytest.approx(24 / 64)


@pytest.mark.parametrize("name", ["jpeg", "webp", "avif"])
def test_pillow_codecs_decode_what_pillow_encodes_and_count_its_bytes(name):
    image = photo(40, 56, seed=4)
    vae = codec(name, quality=80)
    z = vae.encode(batch(image, image[::-1].copy()))
    y = vae.decode(z)
    assert y.shape == (2, 3, 40, 56) and y.dtype == torch.float32 and float(y.min()) >= -1 and float(y.max()) <= 1
    for j, array in enumerate((image, image[::-1].copy())):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format=name.upper(), quality=80)
        theirs = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        np.testing.assert_array_equal(levels(y)[j], theirs)
        assert float(vae.rate_bits(z)[j]) == 8 * len(buf.getvalue())
        mse = np.mean((theirs.astype(float) - array) ** 2)
        assert 10 * math.log10(255**2 / mse) > 25  # a sane reconstruction
    assert vae.rate_facts(z) == {"bpp_target": [math.nan] * 2, "codec_quality": [80.0, 80.0]} or (
        math.isnan(vae.rate_facts(z)["bpp_target"][0]) and vae.rate_facts(z)["codec_quality"] == [80.0, 80.0]
    )


def test_jpeg_tables_equal_pillow_quality_at_integers():
    image = Image.fromarray(photo(64, 64, seed=5))
    for q in (5, 30, 50, 75, 95, 100):
        a, b = io.BytesIO(), io.BytesIO()
        image.save(a, format="JPEG", quality=q)
        image.save(b, format="JPEG", qtables=codecs.jpeg_tables(q))
        assert a.getvalue() == b.getvalue(), q
    # between integers the tables move: a control finer than the integer quality
    assert codecs.jpeg_tables(96.3) not in (codecs.jpeg_tables(96), codecs.jpeg_tables(97))


@pytest.mark.parametrize("name, target", [("jpeg", 1.0), ("jpeg", 4.0), ("webp", 1.0), ("avif", 1.0)])
def test_target_bpp_lands_within_5_percent_on_kodak(kodak, name, target):
    vae = codec(name, bpp=target)
    z = vae.encode(batch(*kodak))
    bpp = vae.rate_bits(z).numpy() / (256 * 256)
    assert np.abs(bpp / target - 1).max() <= 0.05, bpp
    assert vae.rate_warnings(z) == [""] * len(kodak)
    # the bits are those of the file decode reads
    for (data, _, _), y in zip(codecs.unpack(z), levels(vae.decode(z))):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), y)


def test_an_unreachable_target_is_reported_per_image(kodak):
    high, low = codec("jpeg", bpp=30), codec("jpeg", bpp=0.01)
    z = high.encode(batch(kodak[0]))
    buf = io.BytesIO()
    Image.fromarray(kodak[0]).save(buf, format="JPEG", quality=100)
    assert float(high.rate_bits(z)[0]) == 8 * len(buf.getvalue())  # the nearest: its highest quality
    assert high.rate_facts(z)["codec_quality"] == [100.0]
    assert "beyond JPEG's range" in high.rate_warnings(z)[0]
    assert "below JPEG's range" in low.rate_warnings(low.encode(batch(kodak[0])))[0]
    data, quality, status = codecs.search_quality(lambda q: b"x" * (10 if q < 50 else 20), 120, 0, 100, True, 0.05)
    assert status == codecs.COARSE and len(data) in (10, 20)  # 80 or 160 bits around a 120-bit target


def test_avif_without_pillow_support_is_unavailable_with_the_reason(monkeypatch):
    from PIL import features

    monkeypatch.setattr(features, "check", lambda name: name != "avif")
    with pytest.raises(codecs.CodecUnavailable, match="AVIF is unavailable: this Pillow .* without avif support"):
        codec("avif")


def test_codecs_never_share_an_identity():
    hashes = {
        (n, str(f)): codec(n, **f).encoder_hash
        for n, f in [
            ("jpeg", {}),
            ("jpeg", {"quality": 76}),
            ("jpeg", {"bpp": 1.0}),
            ("jpeg", {"bpp": 1.5}),
            ("webp", {}),
            ("avif", {}),
            ("identity", {}),
            ("bicubic-f8", {}),
            ("bicubic-f8", {"factor": 4}),
        ]
    }
    assert len(set(hashes.values())) == len(hashes)
    assert codec("jpeg").encoder_hash == codec("jpeg").encoder_hash


def test_bits_follow_the_latent_dtype():
    z = torch.zeros(3, 32, 4, 5)
    assert stored_bits(z).tolist() == [32 * 4 * 5 * 32] * 3
    assert stored_bits(z.half()).tolist() == stored_bits(z.bfloat16()).tolist() == [32 * 4 * 5 * 16] * 3
    assert quantized_bits(z, 8).tolist() == [32 * 4 * 5 * 8 + 32 * SIDE_BITS] * 3


def test_latent_quantization_equals_the_numpy_formula():
    z = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(0)) * 3 + 1
    z[1, 2] = 0.25  # a constant channel stays as it is
    for bits in (1, 4, 8):
        x = z.numpy().astype(np.float64)
        lo = x.min(axis=(2, 3), keepdims=True)
        hi = x.max(axis=(2, 3), keepdims=True)
        n = 2**bits - 1
        step = np.where(hi > lo, (hi - lo) / n, 1.0)
        expected = lo + np.round((x - lo) / step) * step
        got = quantize_latents(z, bits).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert len(np.unique(got[0, 0])) <= 2**bits
    assert torch.equal(quantize_latents(z, 8)[1, 2], z[1, 2])


def test_latent_bits_is_checked():
    assert check_latent_bits(None) is None and check_latent_bits(8) == 8
    for bad in (0, 17, "8", True, 2.5):
        with pytest.raises(ConfigError, match="metrics.latent_bits"):
            check_latent_bits(bad)
    with pytest.raises(ConfigError, match="metrics.latent_bits"):
        validate(compose_run(["+vae=identity", "metrics.latent_bits=0"]), "run")


def test_rate_decode_quantizes_counts_and_measures_the_loss():
    class Halves:  # a stand-in VAE: latents are the image at half resolution, decoded by repetition
        name = "halves"
        quantizable_latents = True

        def decode(self, z, seeds=None):
            return z.repeat_interleave(2, 2).repeat_interleave(2, 3)

        def rate_bits(self, z):
            return stored_bits(z)

        def rate_facts(self, z):
            return {}

        def rate_warnings(self, z):
            return [""] * len(z)

    images = torch.from_numpy(np.stack([photo(8, 8, seed=s) for s in (6, 7)])).permute(0, 3, 1, 2)
    z = from_uint8(images)[:, :, ::2, ::2].contiguous()
    y, columns = Rate(latent_bits=2).decode(Halves(), z, images, ["a", "b"])
    assert columns["bpp"] == [(3 * 4 * 4 * 2 + 3 * SIDE_BITS) / 64] * 2
    assert torch.equal(y, Halves().decode(quantize_latents(z, 2)))

    def psnr(rec):
        mse = ((levels(rec).astype(float) - images.permute(0, 2, 3, 1).numpy()) ** 2).mean(axis=(1, 2, 3))
        return 10 * np.log10(255**2 / mse)

    expected = psnr(Halves().decode(z)) - psnr(y)
    np.testing.assert_allclose(columns["latent_bits_psnr_drop"], expected, atol=1e-9)
    assert (expected > 0).all()
    _, plain = Rate().decode(Halves(), z, images, ["a", "b"])
    assert plain["bpp"] == [3 * 4 * 4 * 32 / 64] * 2 and "latent_bits_psnr_drop" not in plain


def run_overrides(tiny_pth_dir, image_dir, *extra):
    return [
        "+vae=[taef2,jpeg,bicubic-f8]",
        *tiny_taef2(tiny_pth_dir),
        "dataset=folder",
        f"dataset.path={image_dir}",
        "dataset.resolution=32",
        "workers=0",
        *NO_SAMPLES,
        *extra,
    ]


def test_a_run_with_codecs_writes_bpp_rows_and_the_report_plots_rate_against_quality(tmp_path, tiny_pth_dir, image_dir):
    out = tmp_path / "run"
    run(compose_run(run_overrides(tiny_pth_dir, image_dir, "vae.jpeg.bpp=8"), report=True), out_dir=out)
    per_image = pd.read_parquet(out / "per_image.parquet")
    bpp = per_image.groupby("vae")["bpp"]
    assert (bpp.min()["taef2"], bpp.max()["taef2"]) == (16.0, 16.0)  # 32 ch x 4 x 4 x 32 bit / 32²
    assert (per_image.loc[per_image.vae == "bicubic-f8", "bpp"] == 0.375).all()
    jpeg = per_image[per_image.vae == "jpeg"]
    assert (abs(jpeg.bpp / 8 - 1) <= 0.05).all() and (jpeg.bpp_target == 8).all()
    summary = pd.read_csv(out / "summary.csv").set_index(["vae", "metric"])
    assert summary.loc[("jpeg", "bpp"), "mean"] == pytest.approx(jpeg.bpp.mean())
    info = json.loads((out / "metrics.json").read_text())["metrics"]["bpp"]["info"]
    assert info["title"] == "Bits per pixel" and info["higher_is_better"] is False and info["decimals"] == 3
    plot = out / "report" / "plots"
    assert [p.name for p in plot.glob("*rate-distortion.png")], list(plot.iterdir())
    markdown = (out / "report" / "report.md").read_text()
    assert "Rate–distortion" in markdown
    # bpp is a rate: the findings give its range, they do not call the smallest file the best
    assert "- Bits per pixel: from 0.375 (bicubic-f8) to 16.000 (taef2)" in markdown, markdown
    assert "best bicubic-f8" not in markdown
    assert "Rate–distortion" in (out / "report" / "report.html").read_text()

    again = tmp_path / "again"  # the same run again: every batch from the result chunks, the same rows
    run(compose_run(run_overrides(tiny_pth_dir, image_dir, "vae.jpeg.bpp=8")), out_dir=again)
    assert (pd.read_csv(again / "timings.csv")["images_encoded"] == 0).all()
    pd.testing.assert_frame_equal(pd.read_parquet(again / "per_image.parquet"), per_image)

    quant = tmp_path / "quant"  # latent_bits=8: taef2's bits and the PSNR lost; codecs unchanged
    run(compose_run(run_overrides(tiny_pth_dir, image_dir, "vae.jpeg.bpp=8", "metrics.latent_bits=8")), out_dir=quant)
    q = pd.read_parquet(quant / "per_image.parquet")
    assert (q.loc[q.vae == "taef2", "bpp"] == (32 * 16 * 8 + 32 * SIDE_BITS) / 1024).all()
    drop = q.set_index("vae")["latent_bits_psnr_drop"]
    assert drop["taef2"].notna().all() and drop.drop("taef2").isna().all(), "a codec quantizes nothing: no drop"
    pd.testing.assert_series_equal(q.loc[q.vae != "taef2", "bpp"], per_image.loc[per_image.vae != "taef2", "bpp"])
