"""``+vae=files`` (reconstructions made elsewhere) and ``dataset=pairs``: matching, its errors, equality with
the VAE whose reconstructions were saved, staleness, report and compare, and LPIPS's own example pairs."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evalvae.compare.cli import run_compare
from evalvae.config import instantiate
from evalvae.data import make_loader
from evalvae.errors import ConfigError
from evalvae.io import cache_dir
from evalvae.jobs.vaes import NoVAESelected, selected_vaes
from evalvae.recon.loop import reconstruct
from evalvae.report import write_report
from evalvae.run import run
from evalvae.vae import load_vae
from evalvae.vae.files import list_images, match, read_reconstruction
from tests.helpers import REPO, compose_run, photo, tiny_taef2


def save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def test_matching_by_relative_path_and_stem(tmp_path):
    root = tmp_path / "rec"
    for name in ["a/b/img.png", "a/b/other.WEBP", "top.jpg", "twice.png", "twice.jpg", "left.png", "a/.hidden.png"]:
        save(root / name, photo(8, 8), **({"lossless": True} if name.lower().endswith("webp") else {}))
    (root / "notes.txt").write_text("not an image")
    listing = list_images(root)
    ids = ["a/b/img.jpg", "a/b/other.png", "top.png", "astronaut", "twice.png", "a/img.jpg", "A/b/img.jpg"]
    matched, unmatched, extra = match(ids, listing)
    assert matched == {"a/b/img.jpg": "a/b/img.png", "a/b/other.png": "a/b/other.WEBP", "top.png": "top.jpg"}
    assert unmatched["twice.png"].startswith("ambiguous: 2 files") and "twice.jpg, twice.png" in unmatched["twice.png"]
    for missing in ("astronaut", "a/img.jpg", "A/b/img.jpg"):  # another folder, or another case, is not a match
        assert unmatched[missing].startswith("missing: no file ")
    assert extra == ["left.png"]  # hidden files and non-images are not listed at all


def test_each_file_problem_has_its_reason(tmp_path):
    rgb = photo(16, 12)
    save(tmp_path / "ok.png", rgb)
    save(tmp_path / "gray.png", rgb[..., 0])
    save(tmp_path / "alpha.png", np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    save(tmp_path / "small.png", rgb[:8])
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    got, why = read_reconstruction(tmp_path / "ok.png", (16, 12))
    assert why == "" and np.array_equal(got, rgb)
    got, _ = read_reconstruction(tmp_path / "gray.png", (16, 12))
    assert np.array_equal(got, np.repeat(rgb[..., :1], 3, axis=2))
    assert read_reconstruction(tmp_path / "alpha.png", (16, 12))[1].startswith("wrong mode: RGBA")
    assert read_reconstruction(tmp_path / "deep.png", (16, 12))[1].startswith("wrong mode: I")
    assert read_reconstruction(tmp_path / "bad.png", (16, 12))[1].startswith("unreadable: ")
    why = read_reconstruction(tmp_path / "small.png", (16, 12))[1]
    assert why.startswith("misshapen: 12x8 px, the original is 12x16 px") and "never resized" in why


def test_the_adapter_serves_only_its_own_files(tmp_path):
    import torch

    from evalvae.errors import EvalvaeError
    from evalvae.vae.files import FilesAdapter

    save(tmp_path / "a.png", photo(8, 8))
    vae = FilesAdapter("files", str(tmp_path))
    x = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    assert vae.prepare_group(["a.png", "b.png"], torch.zeros(2, 3, 8, 8, dtype=torch.uint8)) == {
        "b.png": "missing: no file b.<png|jpg|jpeg|webp|bmp|tif|tiff>"
    }
    y = vae.decode(vae.encode(x.float()))
    assert torch.equal(((y + 1) * 127.5).round().to(torch.uint8)[0], torch.from_numpy(photo(8, 8)).permute(2, 0, 1))
    with pytest.raises(EvalvaeError, match="prepare_group before encode"):
        vae.encode(x.float())  # each group's files are read once
    with pytest.raises(EvalvaeError, match="decodes only what its encode read"):
        vae.decode(torch.zeros(1, 16, 4, 4))  # a pipeline's latents (task=t2i)
    with pytest.raises(ConfigError, match="vae.files.path"):
        FilesAdapter("files", str(tmp_path / "nope"))


# -- runs ------------------------------------------------------------------------------------------
NESTED = ["a/x.png", "a/b/y.jpg", "z.png", "a/b/w.png", "v.jpg"]


@pytest.fixture()
def nested_images(tmp_path):
    """Five images (``NESTED``) in nested folders, of mixed sizes and extensions."""
    root = tmp_path / "images"
    for i, (name, (h, w)) in enumerate(zip(NESTED, [(40, 56), (48, 48), (64, 40), (36, 50), (44, 44)])):
        save(root / name, photo(h, w, seed=i), quality=95)
    return root


def standin(tiny_pth_dir, images, *extra):
    return [
        "+vae=taef2",
        *tiny_taef2(tiny_pth_dir),
        "dataset=folder",
        f"dataset.path={images}",
        "dataset.resolution=32",
        "batch_size=2",
        "workers=0",
        *extra,
    ]


def files_run(rec, images, *extra):
    return ["+vae=files", f"vae.files.path={rec}", "dataset=folder", f"dataset.path={images}"] + [
        "dataset.resolution=32",
        "batch_size=2",
        "workers=0",
        *extra,
    ]


def save_reconstructions(cfg, rec) -> dict[str, np.ndarray]:
    """The stand-in VAE's 8-bit reconstructions of the run's images, saved as PNG under ``rec`` by image id."""
    import torch

    vae = load_vae("taef2", cfg.vae.taef2, device="cpu")
    vae.module.to(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)  # as the run
    loader = make_loader(instantiate(cfg.dataset), cfg.batch_size, 0, vae.device)
    out = {}
    for result in reconstruct(vae, loader, [], keep_pixels=True, channels_last=cfg.channels_last):
        ids = iter(r["image"] for r in result.rows)
        for recons in result.reconstructions:
            for r in recons:
                image = next(ids)
                out[image] = r.permute(1, 2, 0).numpy()
                save(rec / (os.path.splitext(image)[0] + ".png"), out[image])
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def original(images, image_id) -> np.ndarray:
    from evalvae.data.transforms import center_crop, resize_shorter

    return np.asarray(center_crop(resize_shorter(Image.open(images / image_id).convert("RGB"), 32), 32))


def test_files_run_equals_the_vae_whose_reconstructions_were_saved(tmp_path, tiny_pth_dir, nested_images):
    vae_cfg = compose_run(standin(tiny_pth_dir, nested_images))
    direct = pd.read_parquet(run(vae_cfg, out_dir=tmp_path / "vae").out_dir / "per_image.parquet").set_index("image")
    rec = tmp_path / "rec"
    saved = save_reconstructions(vae_cfg, rec)
    assert sorted(saved) == sorted(direct.index) and (rec / "a" / "b" / "y.png").is_file()
    latents = cache_dir(None) / "latents"
    stored = sorted(latents.rglob("*"))
    out = run(compose_run(files_run(rec, nested_images)), out_dir=tmp_path / "files").out_dir
    assert sorted(latents.rglob("*")) == stored  # no latents stored for files
    got = pd.read_parquet(out / "per_image.parquet").set_index("image").loc[direct.index]
    assert (got.vae == "files").all() and not (out / "files_unmatched.csv").exists()
    for column in ("psnr", "ssim"):
        np.testing.assert_allclose(got[column], direct[column], rtol=0, atol=1e-9)
    for image in direct.index:  # and PSNR by numpy, on the files and the protocol's originals
        assert got.psnr[image] == pytest.approx(psnr(original(nested_images, image), saved[image]), abs=1e-9)


def test_missing_misshapen_unreadable_extra_are_listed_and_the_run_goes_on(tmp_path, nested_images, caplog):
    rec = tmp_path / "rec"
    for image in NESTED:
        save(rec / (os.path.splitext(image)[0] + ".png"), original(nested_images, image))
    (rec / "a" / "x.png").unlink()  # missing
    save(rec / "a" / "b" / "y.png", original(nested_images, "a/b/y.jpg")[:30])  # misshapen
    (rec / "z.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")  # unreadable
    save(rec / "v.webp", original(nested_images, "v.jpg"), lossless=True)  # v.png and v.webp: ambiguous
    save(rec / "b" / "w.png", original(nested_images, "a/b/w.png"))  # extra: another folder
    with caplog.at_level(logging.WARNING, logger="evalvae"):
        out = run(compose_run(files_run(rec, nested_images)), out_dir=tmp_path / "run").out_dir
    per_image = pd.read_parquet(out / "per_image.parquet")
    assert list(per_image.image) == ["a/b/w.png"] and np.isinf(per_image.psnr[0])  # the exact copy, scored
    listed = pd.read_csv(out / "files_unmatched.csv").set_index("file")
    assert dict(listed.problem) == {
        "a/x.png": "missing",
        "a/b/y.jpg": "misshapen",
        "z.png": "unreadable",
        "v.jpg": "ambiguous",
        "b/w.png": "extra",
    }
    assert (listed.vae == "files").all() and "32x30 px" in listed.reason["a/b/y.jpg"]
    line = [r.message for r in caplog.records if "listed in" in r.message]
    assert line == [
        f"VAE 'files': 1 of 5 image(s) scored (not scored: 1 ambiguous, 1 misshapen, 1 missing, 1 unreadable); "
        f"1 extra file(s); listed in {out / 'files_unmatched.csv'}"
    ]
    # a rerun reads its result chunks and lists the same
    again = run(compose_run(files_run(rec, nested_images)), out_dir=tmp_path / "again").out_dir
    assert pd.read_csv(again / "timings.csv").batches_cached[0] == 3
    pd.testing.assert_frame_equal(pd.read_csv(again / "files_unmatched.csv"), pd.read_csv(out / "files_unmatched.csv"))
    assert "a/b/w.png" in write_report([again], tmp_path / "report").read_text(encoding="utf-8")  # grids included


def test_a_changed_file_gives_new_numbers(tmp_path, nested_images, capsys):
    rec = tmp_path / "rec"
    for image in NESTED:
        save(rec / (os.path.splitext(image)[0] + ".png"), original(nested_images, image) // 2)
    first = run(compose_run(files_run(rec, nested_images)), out_dir=tmp_path / "first").out_dir
    before = pd.read_parquet(first / "per_image.parquet").set_index("image").psnr
    changed = original(nested_images, "z.png") // 3
    save(rec / "z.png", changed)  # same name, same size, new content
    second = run(compose_run(files_run(rec, nested_images)), out_dir=tmp_path / "second").out_dir
    after = pd.read_parquet(second / "per_image.parquet").set_index("image").psnr
    assert after["z.png"] == pytest.approx(psnr(original(nested_images, "z.png"), changed), abs=1e-9)
    assert after["z.png"] < before["z.png"] - 1
    assert pd.read_csv(second / "timings.csv").batches_cached[0] == 0  # the folder is another "VAE": nothing reused
    assert after.drop("z.png").equals(before.drop("z.png"))
    run_compare(first, [second])  # one image of five: within noise, but compare says the folder changed
    assert "files differs from the baseline's in: encoder_sha256, weight_files" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_two_processes_list_and_score_as_one(tmp_path, nested_images):
    rec = tmp_path / "rec"
    for image in NESTED[1:]:  # a/x.png missing
        save(rec / (os.path.splitext(image)[0] + ".png"), original(nested_images, image) // 2)
    save(rec / "extra.png", original(nested_images, "v.jpg"))
    # rFID/KID too: each process's originals (the missing file's included) and the one it takes out are combined
    fid = ["metrics=all", "~metrics.lpips", "metrics.fid.extractor=tests.helpers.TinyExtractor"]
    fid += ["metrics.fid.kid_subsets=5", "metrics.fid.kid_subset_size=3"]
    one = run(compose_run(files_run(rec, nested_images, *fid)), out_dir=tmp_path / "one").out_dir
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    env["EVALVAE_CACHE"] = str(tmp_path / "cache2")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    overrides = files_run(
        rec, nested_images, *fid, f"hydra.run.dir={tmp_path / 'two'}", "report=false", "progress=false"
    )
    r = subprocess.run(
        [*cmd, "-m", "evalvae", "run", *overrides], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0 and "sharded over 2 processes" in r.stderr, r.stderr[-3000:]
    a, b = (pd.read_parquet(d / "per_image.parquet") for d in (one, tmp_path / "two"))
    assert list(b.image) == list(a.image) == ["a/b/w.png", "a/b/y.jpg", "v.jpg", "z.png"]
    np.testing.assert_allclose(b.psnr, a.psnr, rtol=0, atol=1e-9)
    listed = [pd.read_csv(d / "files_unmatched.csv") for d in (one, tmp_path / "two")]
    pd.testing.assert_frame_equal(listed[1], listed[0])
    assert list(listed[0].problem) == ["missing", "extra"]
    sums = [pd.read_csv(d / "summary.csv").set_index("metric").loc[["rfid", "kid"]] for d in (one, tmp_path / "two")]
    assert sums[0]["n"].tolist() == sums[1]["n"].tolist() == [4, 4]
    assert sums[1]["note"].str.startswith(("rFID over 4 of 5 images", "KID over 4 of 5 images")).all()
    # the float64 sums added in another order: measured 2e-15 relative (KID equal)
    np.testing.assert_allclose(sums[1]["mean"], sums[0]["mean"], rtol=1e-12)


# -- pairs -----------------------------------------------------------------------------------------
def test_pairs_selects_the_test_folder_and_still_errors_without(tmp_path):
    ref, test = tmp_path / "ref", tmp_path / "test"
    save(ref / "a.png", photo(20, 30))
    save(test / "a.png", photo(20, 30, seed=1))
    save(test / "b.png", photo(20, 30, seed=1))
    cfg = compose_run(["dataset=pairs", f"dataset.reference={ref}", f"dataset.test={test}", "workers=0"])
    assert list(selected_vaes(cfg)) == ["test"]
    out = run(cfg, out_dir=tmp_path / "run").out_dir
    per_image = pd.read_parquet(out / "per_image.parquet")
    assert list(per_image.image) == ["a.png"] and (per_image.width == 30).all()  # native size, no resize
    assert per_image.psnr[0] == pytest.approx(psnr(photo(20, 30), photo(20, 30, seed=1)), abs=1e-9)
    assert list(pd.read_csv(out / "files_unmatched.csv").problem) == ["extra"]
    folder = ["dataset=folder", f"dataset.path={ref}"]
    assert list(selected_vaes(compose_run(folder))) == ["taef2", "jpeg", "bicubic-f8"]  # the default selection
    with pytest.raises(NoVAESelected, match="no VAE selected"):
        selected_vaes(compose_run([*folder, "task.default_vaes=null"]))
    with pytest.raises(ConfigError, match="dataset.test"):
        nope = ["dataset=pairs", f"dataset.reference={ref}", f"dataset.test={tmp_path / 'nope'}"]
        run(compose_run(nope), out_dir=tmp_path / "nope-run")


def test_pairs_on_lpips_examples_give_the_stated_lpips(tmp_path, assets, real_weights):
    """The assets' README states LPIPS-alex v0.1 (ex_ref, ex_p0) = 0.721881 and (ex_ref, ex_p1) = 0.137566."""
    examples = assets / "images" / "lpips-examples"
    ref, test = tmp_path / "ref", tmp_path / "test"
    for p in ("p0", "p1"):
        (ref / "x").mkdir(parents=True, exist_ok=True)
        shutil.copy(examples / "ex_ref.png", ref / "x" / f"{p}.png")
        (test / "x").mkdir(parents=True, exist_ok=True)
        shutil.copy(examples / f"ex_{p}.png", test / "x" / f"{p}.png")
    overrides = ["dataset=pairs", f"dataset.reference={ref}", f"dataset.test={test}", "metrics=lpips", "workers=0"]
    overrides.append(f"metrics.lpips.backbone_weights={real_weights / 'lpips' / 'alexnet_features.pth'}")
    out = run(compose_run(overrides), out_dir=tmp_path / "run").out_dir
    lpips = pd.read_parquet(out / "per_image.parquet").set_index("image").lpips
    assert lpips["x/p0.png"] == pytest.approx(0.721881, abs=5e-6)
    assert lpips["x/p1.png"] == pytest.approx(0.137566, abs=5e-6)
