"""Datasets: protocol geometry against torchvision, conversions, bad files, listing and limits."""

from __future__ import annotations

import json
import struct
import zlib
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from torchvision import transforms as T

from evalvae.data import builtin, coco, folder
from evalvae.data.datasets import BUILTIN_IMAGES
from evalvae.data.images import UnreadableImage, declared_bits, load_rgb8, to_rgb8
from evalvae.data.loader import collate
from evalvae.data.transforms import Geometry, crop_to_multiple
from evalvae.errors import ConfigError, DatasetError
from tests.helpers import photo


@pytest.mark.parametrize(
    "h,w,r",
    [
        (480, 640, 256),
        (256, 341, 256),
        (640, 256, 256),
        (255, 400, 256),
        (427, 640, 256),
        (333, 501, 256),
        (768, 512, 128),
        (257, 1000, 256),
        (300, 300, 64),
    ],
)
def test_geometry_equals_torchvision_resize_center_crop(h, w, r):
    rgb = photo(h, w, seed=h)
    ours, upscaled = Geometry(r).apply(rgb)
    ref = T.Compose([T.Resize(r, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(r), T.PILToTensor()])(
        Image.fromarray(rgb)
    )
    assert ours.dtype == torch.uint8 and ours.shape == (3, r, r) and upscaled == (min(h, w) < r)
    assert torch.equal(ours, ref)


def test_geometry_arithmetic():
    """Long side int(R * long / short), truncated; crop offsets int(round((size - R) / 2))."""
    rgb = np.zeros((300, 451, 3), np.uint8)
    rgb[:, 98] = 255  # a column that lands just inside the crop's left edge
    out, _ = Geometry(256).apply(rgb)
    resized = int(256 * 451 / 300)  # 384
    left = int(round((resized - 256) / 2))  # 64
    col = int(98 * resized / 451 + 0.5) - left
    assert out.shape == (3, 256, 256) and out[0, :, col].float().mean() > 100


def test_small_images_upscale_by_default_or_skip():
    rgb = photo(100, 150)
    out, upscaled = Geometry(128).apply(rgb)
    assert upscaled and out.shape == (3, 128, 128)
    from evalvae.data.transforms import TooSmall

    with pytest.raises(TooSmall, match="shorter side 100 px < dataset.resolution=128"):
        Geometry(128, small="skip").apply(rgb)


def test_geometry_validates_choices():
    with pytest.raises(ConfigError, match=r"dataset\.crop='square'; choose one of center, none"):
        Geometry(256, crop="square")
    with pytest.raises(ConfigError, match=r"dataset\.small='pad'"):
        Geometry(256, small="pad")


def test_native_size_and_crop_to_multiple():
    rgb = photo(37, 50)
    out, _ = Geometry(256, crop="none").apply(rgb)
    assert out.shape == (3, 37, 50) and torch.equal(out.permute(1, 2, 0), torch.from_numpy(rgb))
    c = crop_to_multiple(out, 8)
    assert c.shape == (3, 32, 48) and torch.equal(c, out[:, 2:34, 1:49])  # round(5/2)=2, round(2/2)=1


def _png16_rgb(path, a):
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_conversions(tmp_path):
    rgb = photo(20, 30)
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    g, _ = load_rgb8(tmp_path / "gray.png")
    assert g.shape == (20, 30, 3) and (g[..., 0] == g[..., 1]).all()

    rgba = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    rgba[:10, :, 3] = 0  # top half fully transparent -> white
    rgba[10:, :15, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    a, _ = load_rgb8(tmp_path / "alpha.png")
    assert (a[:10] == 255).all() and (a[10:, 15:] == rgb[10:, 15:]).all()
    blend = rgb[10:, :15].astype(float) * 128 / 255 + 255 * (1 - 128 / 255)
    assert np.abs(a[10:, :15] - blend).max() <= 1

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    c, _ = load_rgb8(tmp_path / "cmyk.jpg")
    assert c.shape == (20, 30, 3) and np.abs(c.astype(int) - rgb).mean() < 8

    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    p, _ = load_rgb8(tmp_path / "pal.png")
    assert p.shape == (20, 30, 3) and np.abs(p.astype(int) - rgb).mean() < 12

    g16 = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    x, mode = load_rgb8(tmp_path / "g16.png")
    assert mode.startswith("I") and (x[..., 0] == (g16 >> 8)).all() and (x[..., 2] == (g16 >> 8)).all()

    c16 = (photo(20, 30).astype(np.uint16) * 257 + 77).astype(np.uint16)
    _png16_rgb(tmp_path / "rgb16.png", c16)
    y, _ = load_rgb8(tmp_path / "rgb16.png")
    assert (y == (c16 >> 8)).all()  # the same high-byte rule as for 16-bit grayscale

    frames = [Image.fromarray(photo(20, 30, seed=s)) for s in (1, 2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    f, _ = load_rgb8(tmp_path / "anim.gif")
    assert f.shape == (20, 30, 3)


def _pgm16(path, values: np.ndarray) -> None:
    """A binary 16-bit PGM (maxval 65535), which Pillow opens as mode I with raw mode I;16B."""
    h, w = values.shape
    path.write_bytes(f"P5\n{w} {h}\n65535\n".encode() + values.astype(">u2").tobytes())


def test_32_bit_integer_images_go_by_value_range(tmp_path):
    """Genuine 32-bit samples (TIFF, raw mode I;32S): 0..255 is 8-bit data, 0..65535 16-bit data."""
    eight = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.int32)
    Image.fromarray(eight).save(tmp_path / "i32-8bit.tif")
    x, mode = load_rgb8(tmp_path / "i32-8bit.tif")
    assert mode == "I" and (x == eight[:, :, None]).all(), (
        "values within 0..255 are kept as they are, not shifted to black"
    )

    sixteen = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.int32)
    Image.fromarray(sixteen).save(tmp_path / "i32-16bit.tif")
    y, _ = load_rgb8(tmp_path / "i32-16bit.tif")
    assert (y == (sixteen >> 8)[:, :, None]).all()

    for name, values, reason in [("neg.tif", [[-5, 3]], "values -5..3"), ("big.tif", [[0, 70000]], "values 0..70000")]:
        Image.fromarray(np.array(values, np.int32)).save(tmp_path / name)
        with pytest.raises(UnreadableImage, match=reason):
            load_rgb8(tmp_path / name)

    in_memory = Image.fromarray(eight)  # mode I of unknown depth: by value range; a declared depth of 16 wins
    assert (to_rgb8(in_memory) == eight[:, :, None]).all() and (to_rgb8(in_memory, bits=16) == 0).all()
    assert declared_bits(in_memory) is None


def test_16_bit_files_with_small_values_stay_16_bit(tmp_path):
    """A 16-bit file whose values are all <= 255 is dark 16-bit data, not 8-bit data: its declared depth decides."""
    dark = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.uint16)
    dark[0, 0] = 300
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    _pgm16(tmp_path / "dark16.pgm", dark)
    for name in ("dark16.png", "dark16.pgm"):
        with Image.open(tmp_path / name) as im:
            assert declared_bits(im) == 16, name
        x, mode = load_rgb8(tmp_path / name)
        assert mode in ("I", "I;16") and (x == (dark >> 8)[:, :, None]).all(), name

    # Older Pillow releases open 16-bit grayscale PNGs as mode I (decoded from raw mode I;16B): still 16-bit
    with mock.patch.dict(PngImagePlugin._MODES, {(16, 0): ("I", "I;16B")}):
        with Image.open(tmp_path / "dark16.png") as im:
            assert im.mode == "I" and declared_bits(im) == 16
        x, mode = load_rgb8(tmp_path / "dark16.png")
    assert mode == "I" and (x == (dark >> 8)[:, :, None]).all()
    with Image.open(tmp_path / "dark16.png") as im:
        assert im.mode.startswith("I;16"), "the patch is undone"


def test_unreadable_files(tmp_path):
    Image.fromarray(photo(64, 64)).save(tmp_path / "good.jpg")
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "float.tif")
    for name, reason in [
        ("truncated.jpg", "cannot decode"),
        ("text.png", "not an image"),
        ("empty.png", "not an image"),
        ("float.tif", "mode F"),
    ]:
        with pytest.raises(UnreadableImage, match=reason):
            load_rgb8(tmp_path / name)


def test_folder_listing_is_recursive_sorted_and_limited(tmp_path):
    for rel in ["b/2.png", "a/1.jpg", "c.webp", "a/0.bmp", "d.tiff"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(16, 16)).save(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    ds = folder(str(tmp_path), resolution=16)
    assert [r.id for r in ds.records] == ["a/0.bmp", "a/1.jpg", "b/2.png", "c.webp", "d.tiff"]
    assert ds.listing_skipped == [("notes.txt", "not an image extension (.txt)")]
    assert [r.id for r in folder(str(tmp_path), resolution=16, limit=2).records] == ["a/0.bmp", "a/1.jpg"]
    with pytest.raises(ConfigError, match=r"dataset\.limit=0"):
        folder(str(tmp_path), limit=0)


def test_empty_or_missing_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="has no images"):
        folder(str(tmp_path))
    with pytest.raises(DatasetError, match="is not a directory"):
        folder(str(tmp_path / "nope"))


def test_bad_samples_are_set_aside_by_collate(tmp_path):
    Image.fromarray(photo(40, 40)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("broken")
    Image.fromarray(photo(10, 10)).save(tmp_path / "c.png")
    ds = folder(str(tmp_path), resolution=32, small="skip")
    batch = collate([ds[i] for i in range(3)])
    assert batch.n_images == 1 and batch.groups[0].ids == ["a.png"]
    assert [f for f, _ in batch.skipped] == ["b.png", "c.png"]
    assert "shorter side 10 px" in batch.skipped[1][1]


def test_builtin_is_offline_rgb_photos():
    ds = builtin(resolution=64)
    assert len(ds) == len(BUILTIN_IMAGES) >= 6
    for i in range(len(ds)):
        s = ds[i]
        assert s.image is not None and s.image.shape == (3, 64, 64), s.reason


def test_coco_reads_captions_and_reports_missing_files(tmp_path):
    for name in ("000002.jpg", "000001.jpg"):
        Image.fromarray(photo(32, 48)).save(tmp_path / name)
    doc = {
        "images": [
            {"id": 2, "file_name": "000002.jpg"},
            {"id": 1, "file_name": "000001.jpg"},
            {"id": 3, "file_name": "000003.jpg"},
        ],
        "annotations": [
            {"image_id": 1, "caption": " a cat "},
            {"image_id": 1, "caption": "a pet"},
            {"image_id": 2, "caption": "a dog"},
        ],
    }
    (tmp_path / "captions.json").write_text(json.dumps(doc))
    ds = coco(str(tmp_path), resolution=32)
    assert [r.id for r in ds.records] == ["000001.jpg", "000002.jpg"]
    assert ds.records[0].meta["captions"] == ["a cat", "a pet"]
    assert ds.listing_skipped == [("000003.jpg", "listed in captions.json but missing from dataset.path")]
    with pytest.raises(DatasetError, match="dataset.captions="):
        coco(str(tmp_path), captions=str(tmp_path / "nope.json"))


def test_coco_mini_assets(assets):
    ds = coco(str(assets / "images" / "coco-val2017-mini"), resolution=64, limit=3)
    assert len(ds) == 3 and all(len(r.meta["captions"]) >= 5 for r in ds.records)
