"""Streamed datasets: webdataset tars and Hugging Face datasets against the folder dataset, order, shards, errors."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.config import compose, instantiate
from evalvae.data import ImageDataset, StreamingDataset, folder, hf, known_len, make_loader, webdataset
from evalvae.data.streaming import INSTALL, MissingDependency
from evalvae.errors import ConfigError, DatasetError
from tests.helpers import compose_run, photo, write_images
from tests.prerequisites import require_module

require_module("datasets", 'pip install "evalvae[stream]"')
require_module("webdataset", 'pip install "evalvae[stream]"')

CPU = torch.device("cpu")
CORRUPT = "img09.png"


def write_photos(root: Path) -> Path:
    """The six test photos plus decoding edge cases (alpha, 16-bit gray, palette) and one corrupt file."""
    write_images(root)
    rgba = np.dstack([photo(40, 44, seed=6), np.linspace(0, 255, 40 * 44).reshape(40, 44).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "img06.png")
    Image.fromarray(photo(36, 40, seed=7)[..., 0].astype(np.uint16) * 257 + 3).save(root / "img07.png")
    Image.fromarray(photo(42, 38, seed=8)).convert("P").save(root / "img08.png")
    (root / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def write_members(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar of ``(name, data)`` members, in this order."""
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def write_tar(path: Path, files: list[Path]) -> Path:
    """A WebDataset shard: per image ``<stem>.<ext>`` and, like real shards, a ``<stem>.txt`` beside it."""
    return write_members(path, [m for f in files for m in [(f.name, f.read_bytes()), (f"{f.stem}.txt", b"a caption")]])


@pytest.fixture()
def photos(tmp_path) -> Path:
    return write_photos(tmp_path / "photos")


@pytest.fixture()
def shards(tmp_path, photos) -> str:
    """The photos in three shards; returns the brace pattern."""
    files = sorted(photos.iterdir())
    for s, part in enumerate((files[:4], files[4:7], files[7:])):
        write_tar(tmp_path / f"shards-{s:03d}.tar", part)
    return str(tmp_path / "shards-{000..002}.tar")


def assert_same_images(streamed: list, files: list, ids=None):
    """Streamed samples equal the folder's, in order: ids (if given), pixels, upscaled flags and skip reasons."""
    assert [s.index for s in streamed] == list(range(len(files)))
    if ids is not None:
        assert [s.id for s in streamed] == ids
    for a, b in zip(streamed, files):
        assert (a.image is None) == (b.image is None) and a.reason == b.reason
        if b.image is not None:
            assert a.image.dtype == torch.uint8 and torch.equal(a.image, b.image) and a.upscaled == b.upscaled


# -- pixels: a streamed image decodes exactly as the file does -------------------------------------
@pytest.mark.parametrize("crop", ["center", "none"])
def test_webdataset_tar_yields_the_folder_datasets_pixels(photos, shards, crop):
    ref = folder(str(photos), resolution=48, crop=crop)
    ds = webdataset(shards, resolution=48, crop=crop)
    streamed = list(ds)
    assert isinstance(ds, StreamingDataset) and len(streamed) == len(ref) == 10
    assert_same_images(streamed, [ref[i] for i in range(len(ref))], ids=[Path(r.id).stem for r in ref.records])
    assert streamed[-1].image is None and streamed[-1].id == Path(CORRUPT).stem and "identify" in streamed[-1].reason
    assert sum(s.upscaled for s in streamed) == (0 if crop == "none" else 7)  # shorter side below 48 px


def test_image_key_picks_the_member_and_a_sample_without_one_is_skipped(tmp_path, photos):
    png, jpg = photos / "img00.png", photos / "img01.jpg"
    write_members(tmp_path / "mixed.tar", [("a.jpg", jpg.read_bytes()), ("a.png", png.read_bytes()), ("b.json", b"{}")])
    ref = folder(str(photos), crop="none")
    by_id = {r.id: ref[i] for i, r in enumerate(ref.records)}
    first_jpg = list(webdataset(str(tmp_path / "mixed.tar"), crop="none"))
    first_png = list(webdataset(str(tmp_path / "mixed.tar"), image_key="PNG;jpg", crop="none"))
    assert torch.equal(first_jpg[0].image, by_id["img01.jpg"].image)
    assert torch.equal(first_png[0].image, by_id["img00.png"].image)
    assert [s.id for s in first_jpg] == ["a", "b"] and first_jpg[1].image is None
    assert "no member with extension jpg/" in first_jpg[1].reason and "members: json" in first_jpg[1].reason


def test_hf_local_image_folder_streams_the_folder_datasets_pixels(photos):
    ref = folder(str(photos), resolution=40)
    ds = hf(str(photos), split="train", resolution=40)
    assert ds.image_column == "image" and ds.root == f"hf://{photos}/train" and ds.describe()["streaming"] is True
    assert_same_images(list(ds), [ref[i] for i in range(len(ref))], ids=[f"{i:06d}" for i in range(len(ref))])


@pytest.fixture()
def parquet(tmp_path, photos) -> Path:
    """The photos as a parquet file: an Image column (bytes) and a file-name column."""
    import datasets

    files = sorted(photos.iterdir())
    table = {
        "caption": ["a caption"] * len(files),
        "file": [f.name for f in files],
        "jpeg": [{"bytes": f.read_bytes(), "path": None} for f in files],
    }
    features = datasets.Features(
        {"caption": datasets.Value("string"), "file": datasets.Value("string"), "jpeg": datasets.Image()}
    )
    path = tmp_path / "val.parquet"
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(path))
    return path


@pytest.mark.parametrize("streaming", [True, False])
def test_hf_parquet_streams_the_folder_datasets_pixels_by_id(tmp_path, photos, parquet, streaming):
    ref = folder(str(photos), resolution=32)
    ds = hf(
        "parquet",
        data_files=str(parquet),
        id_column="file",
        streaming=streaming,
        cache_dir=str(tmp_path / "hf-cache"),
        resolution=32,
    )
    assert ds.image_column == "jpeg"  # auto-detected: the first Image feature, not the string columns before it
    assert_same_images(list(ds), [ref[i] for i in range(len(ref))], ids=[r.id for r in ref.records])
    assert known_len(ds) == (10 if not streaming else None) and ds.describe()["n_files"] == known_len(ds)


def test_hf_columns_are_checked(tmp_path, parquet):
    import datasets

    with pytest.raises(ConfigError, match=r"dataset.image_column='nope'; choose one of caption, file, jpeg"):
        hf("parquet", data_files=str(parquet), image_column="nope")
    with pytest.raises(ConfigError, match=r"dataset.id_column='name'.*caption, file, jpeg"):
        hf("parquet", data_files=str(parquet), id_column="name")
    plain = tmp_path / "plain.parquet"
    datasets.Dataset.from_dict({"a": [1, 2], "b": ["x", "y"]}).to_parquet(str(plain))
    with pytest.raises(ConfigError, match=r"dataset.image_column=None; choose one of a, b; the dataset has no Image"):
        hf("parquet", data_files=str(plain))
    with pytest.raises(ConfigError, match=r"column 'a' is .*int64.*not an Image, binary or path column"):
        hf("parquet", data_files=str(plain), image_column="a")


# -- configs ----------------------------------------------------------------------------------------
def test_configs_compose_and_instantiate(photos, shards):
    cfg = compose(["dataset=webdataset", f'dataset.urls="{shards}"', "dataset.resolution=32", "dataset.limit=5"])
    ds = instantiate(cfg.dataset)
    assert isinstance(ds, StreamingDataset) and ds.root == shards and len(ds.urls) == 3 and len(ds) == 5
    assert ds.geometry.resolution == 32 and ds.image_key[:3] == ("jpg", "jpeg", "png")
    cfg = compose(["dataset=hf", f"dataset.name={photos}", "dataset.split=train", "dataset.streaming=true"])
    assert cfg.dataset.image_column is None and cfg.dataset.id_column is None and cfg.dataset.small == "upscale"
    ds = instantiate(cfg.dataset)
    assert ds.image_column == "image" and ds.geometry.resolution == 256 and sum(1 for _ in ds) == 10
    for name in ("hf", "webdataset"):  # every documented key of folder.yaml's geometry is there
        spec = compose([f"dataset={name}"]).dataset
        assert {"resolution", "crop", "small", "limit"} <= set(spec)


# -- sharding and loader workers ---------------------------------------------------------------------
def test_shard_halves_are_disjoint_and_cover_everything(photos, shards):
    for ds in (webdataset(shards, resolution=32), folder(str(photos), resolution=32)):
        whole = list(ds)
        halves = [list(ds.shard(rank, 2)) for rank in (0, 1)]
        got = sorted(s.index for h in halves for s in h)
        assert got == list(range(len(whole))) and len(halves[0]) == 5 and len(halves[1]) == 5
        for rank, half in enumerate(halves):
            assert all(s.index % 2 == rank for s in half)
            for s in half:
                ref = whole[s.index]
                assert s.id == ref.id and s.reason == ref.reason
                assert (s.image is None and ref.image is None) or torch.equal(s.image, ref.image)
        assert [len(list(ds.shard(r, 3))) for r in range(3)] == [4, 3, 3]
        assert ds.shard(1, 3).describe() == ds.describe()
        assert ds.shard(1, 2).fingerprint() == ds.fingerprint()
        with pytest.raises(ConfigError, match=r"invalid rank=2; an integer in 0\.\.1"):
            ds.shard(2, 2)
    assert len(webdataset(shards, limit=7).shard(0, 2)) == 4


@pytest.mark.parametrize("kind,workers,batch_size", [("webdataset", 2, 2), ("webdataset", 3, 3), ("hf", 2, 3)])
def test_loader_workers_keep_the_order_of_one_process(photos, shards, kind, workers, batch_size):
    ds = webdataset(shards, resolution=32) if kind == "webdataset" else hf(str(photos), resolution=32)

    def stream(w):
        out = []
        for batch in make_loader(ds, batch_size, w, CPU):
            assert len(batch.groups) <= 1 and batch.n_images + len(batch.skipped) <= batch_size
            for g in batch.groups:
                out += [(i, image_id, img) for i, image_id, img in zip(g.indices, g.ids, g.images)]
            out += [(None, image_id, reason) for image_id, reason in batch.skipped]
        return out

    single, multi = stream(0), stream(workers)
    assert [x[:2] for x in multi] == [x[:2] for x in single] and len(single) == 10
    assert [x[0] for x in single if x[0] is not None] == [i for i in range(10) if i != 9]
    assert all(torch.equal(a[2], b[2]) if a[0] is not None else a[2] == b[2] for a, b in zip(single, multi))


# -- memory -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["webdataset", "hf"])
def test_iterating_keeps_no_image_alive(tmp_path, kind):
    """Each image is freed once the consumer drops it, while the stream is still being read."""
    root = tmp_path / "many"
    root.mkdir()
    for i in range(40):
        Image.fromarray(photo(24, 24, seed=i)).save(root / f"{i:03d}.png")
    if kind == "webdataset":
        ds = webdataset(str(write_tar(tmp_path / "many.tar", sorted(root.iterdir()))))
    else:
        ds = hf(str(root), split="train")
    state = {k: repr(v) for k, v in vars(ds).items()}
    alive = []
    for sample in ds:  # not enumerate(): it keeps its last tuple, hence the last sample, until the next one
        alive.append(weakref.ref(sample.image))
        del sample
        assert all(r() is None for r in alive), f"{sum(r() is not None for r in alive)} of {len(alive)} images kept"
    assert len(alive) == 40 and {k: repr(v) for k, v in vars(ds).items()} == state


# -- sizes and identity ---------------------------------------------------------------------------------
def test_size_is_known_only_from_limit_or_metadata(shards, parquet, tmp_path):
    ds = webdataset(shards)
    with pytest.raises(TypeError, match="streamed and its size is not known.*set dataset.limit"):
        len(ds)
    assert known_len(ds) is None and ds.describe()["n_files"] is None and ds.listing_skipped == []
    assert len(webdataset(shards, limit=4)) == 4 and len(list(webdataset(shards, limit=4))) == 4
    downloaded = hf("parquet", data_files=str(parquet), streaming=False, cache_dir=str(tmp_path / "c"), limit=50)
    assert len(downloaded) == 10  # limit above the split's size: the size
    with pytest.raises(ConfigError, match="dataset.limit=0"):
        webdataset(shards, limit=0)


def test_fingerprint_is_the_declared_identity_and_reads_nothing(shards, parquet, monkeypatch):
    from evalvae.data.hf_datasets import HFDataset
    from evalvae.data.tars import TarShards

    def unread(self):
        raise AssertionError("fingerprint() read the stream")

    monkeypatch.setattr(TarShards, "items", unread)
    monkeypatch.setattr(HFDataset, "items", unread)
    a = webdataset(shards).fingerprint()
    assert len(a) == 64 and a == webdataset(shards).fingerprint() == webdataset(shards, resolution=64).fingerprint()
    assert a != webdataset(shards, limit=3).fingerprint()
    assert a != webdataset(shards, image_key="png").fingerprint()
    first = Path(webdataset(shards).urls[0])
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))  # a rewritten local shard
    assert webdataset(shards).fingerprint() != a
    p = hf("parquet", data_files=str(parquet))
    assert p.fingerprint() == hf("parquet", data_files=str(parquet)).fingerprint()
    assert p.fingerprint() != hf("parquet", data_files=str(parquet), id_column="file").fingerprint()
    assert p.identity()["image_column"] == "jpeg" and p.identity()["data_files"] == str(parquet)


# -- errors -----------------------------------------------------------------------------------------
def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg.strip()
    return msg


def test_a_missing_shard_is_one_clear_error(tmp_path, shards):
    with pytest.raises(DatasetError) as e:
        webdataset(shards.replace("{000..002}", "{000..004}"))
    assert one_line(e) == f"dataset.urls: shard {tmp_path / 'shards-003.tar'} not found (2 of 5 shards missing)"
    cfg = compose(["dataset=webdataset", f"dataset.urls={tmp_path / 'nowhere.tar'}"]).dataset
    with pytest.raises(DatasetError, match="nowhere.tar not found"):
        instantiate(cfg)  # unwrapped from Hydra's InstantiationException


def test_a_truncated_shard_is_one_clear_error_naming_it(tmp_path, photos):
    tar = write_tar(tmp_path / "cut.tar", sorted(photos.iterdir()))
    tar.write_bytes(tar.read_bytes()[:5000])  # mid-way through a member
    with pytest.raises(DatasetError) as e:
        list(webdataset(str(tar)))
    assert one_line(e).startswith(f"webdataset shard {tar} is not a readable tar (ReadError: unexpected end of data")


def test_a_missing_hf_dataset_offline_is_one_clear_error():
    with pytest.raises(DatasetError) as e:
        hf("evalvae-tests/no-such-dataset", split="validation")
    msg = one_line(e)
    assert msg.startswith("dataset=hf dataset.name='evalvae-tests/no-such-dataset' dataset.split='validation'")
    assert "HF_HUB_OFFLINE is set" in msg and "local copy" in msg
    cfg = compose(["dataset=hf", "dataset.name=evalvae-tests/no-such-dataset"]).dataset
    with pytest.raises(DatasetError, match="cannot be loaded"):
        instantiate(cfg)


def test_bad_split_and_missing_files_name_what_was_asked(photos, tmp_path):
    with pytest.raises(DatasetError, match=r"dataset.split='test'.*Bad split: test\. Available splits: \['train'\]"):
        hf(str(photos), split="test")
    with pytest.raises(DatasetError, match=r"Unable to find .*gone.parquet.*check dataset.name, data_files"):
        hf("parquet", data_files=str(tmp_path / "gone.parquet"))
    with pytest.raises(ConfigError, match="dataset.streaming='yes'"):
        hf(str(photos), streaming="yes")


@pytest.mark.parametrize("package,build", [("datasets", "hf"), ("webdataset", "webdataset")])
def test_a_missing_package_names_the_install_command(monkeypatch, shards, photos, package, build):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(MissingDependency) as e:
        hf(str(photos)) if build == "hf" else webdataset(shards)
    assert one_line(e).endswith(f"install it with: {INSTALL}") and f"dataset={build} needs the '{package}'" in str(
        e.value
    )
    assert INSTALL == 'pip install "evalvae[stream]"'


# -- the image dataset's shard view --------------------------------------------------------------------
def test_image_dataset_shard_keeps_original_indices(photos):
    ds = folder(str(photos), resolution=32)
    view = ds.shard(1, 3)
    assert isinstance(view, ImageDataset) and len(view) == 3 and len(ds) == 10
    assert [view[j].index for j in range(len(view))] == [1, 4, 7]
    assert [view[j].id for j in range(len(view))] == [ds.records[i].id for i in (1, 4, 7)]
    assert [s.index for s in view.shard(1, 2)] == [4]  # a shard of a shard: positions within it
    loader = make_loader(view, 2, 0, CPU)
    assert [i for b in loader for g in b.groups for i in g.indices] == [1, 4, 7]


# -- a whole run ---------------------------------------------------------------------------------------
def run_overrides(tmp_path, *dataset) -> list[str]:
    return [
        *dataset,
        "dataset.resolution=32",
        "device=cpu",
        "workers=0",
        "batch_size=3",
        f"cache_dir={tmp_path / 'cache'}",
        "+vae.standin._target_=tests.run_standins.Identity",
        "+vae.standin.gain=0.9",
    ]


def test_a_run_on_a_webdataset_tar_equals_the_run_on_the_folder(tmp_path, photos, shards):
    from evalvae.run import run

    streamed = run(
        compose_run(run_overrides(tmp_path, "dataset=webdataset", f'dataset.urls="{shards}"', "dataset.limit=10")),
        out_dir=tmp_path / "streamed",
    ).out_dir
    files = run(
        compose_run(run_overrides(tmp_path, "dataset=folder", f"dataset.path={photos}")), tmp_path / "f"
    ).out_dir
    a, b = (pd.read_parquet(d / "per_image.parquet") for d in (streamed, files))
    assert list(a.image) == [Path(i).stem for i in b.image] and len(a) == 9
    np.testing.assert_allclose(a.psnr, b.psnr, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.ssim, b.ssim, rtol=0, atol=1e-9)
    skipped = pd.read_csv(streamed / "skipped.csv")
    assert list(skipped.iloc[:, 0]) == [Path(CORRUPT).stem]


def test_a_run_on_a_webdataset_of_unknown_size(tmp_path, shards):
    from evalvae.run import run

    cfg = compose_run(run_overrides(tmp_path, "dataset=webdataset", f'dataset.urls="{shards}"'), report=True)
    out = run(cfg, tmp_path / "r")
    assert len(pd.read_parquet(out.out_dir / "per_image.parquet")) == 9
    assert json.loads((out.out_dir / "metrics.json").read_text())["dataset"]["n_files"] is None  # not known ahead
    assert (out.out_dir / "report" / "report.md").is_file(), "the report reads result files only, never the stream"
