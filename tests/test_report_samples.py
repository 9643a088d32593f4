"""Samples: a run saves the images its report's grids show, and the report reads files only."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from evalvae.config import instantiate
from evalvae.data.transforms import crop_to_multiple
from evalvae.errors import ConfigError
from evalvae.metrics import from_uint8, to_pixels
from evalvae.metrics.selection import Pick, pick_images, score_table
from evalvae.recon.loop import BatchResult
from evalvae.recon.samples import SampleKeeper, file_stem, settings
from evalvae.recon.task import ReconTask
from evalvae.report import write_report
from evalvae.report.load import load_inputs
from evalvae.report.recreate import reconstruct_images
from evalvae.run import run
from tests import helpers
from tests.run_standins import Identity
from tests.test_architecture import graph

SIZES = [(40 + 2 * i, 48 + 3 * (i % 4)) for i in range(12)]
BLEMISHED = (4, 9)  # dataset indices that stand-in "b" gets badly wrong: its worst images, and none of "a"'s picks


class Blemish(Identity):
    """:class:`Identity` times ``gain``, plus ``amount`` (in [-1, 1] units) on the images at ``indices``."""

    def __init__(self, name: str, indices=(), amount: float = 0.3, **kwargs):
        super().__init__(name, **kwargs)
        self.indices, self.amount = {int(i) for i in indices}, float(amount)

    def _decode_raw(self, z):
        y = super()._decode_raw(z)
        for j, i in enumerate(self._indices):
            if i in self.indices:
                y[j] = y[j] + self.amount
        return y


def standins(worst=2, best=1, extra=()) -> list[str]:
    return [
        "+vae.a._target_=tests.run_standins.Identity",
        "+vae.a.gain=0.9",
        "+vae.b._target_=tests.test_report_samples.Blemish",
        "+vae.b.gain=0.8",
        f"+vae.b.indices=[{','.join(map(str, BLEMISHED))}]",
        f"samples.worst={worst}",
        f"samples.best={best}",
        "batch_size=4",
        "workers=0",
        "progress=false",
        *extra,
    ]


def dataset(images: Path, resolution=32) -> list[str]:
    return ["dataset=folder", f"dataset.path={images}", f"dataset.resolution={resolution}"]


@pytest.fixture(scope="module")
def standin_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    images = helpers.write_images(root / "images", SIZES)
    cfg = helpers.compose_run([*standins(), *dataset(images), f"cache_dir={root / 'cache'}"])
    task = ReconTask(cfg, root / "run")
    task.out.mkdir(parents=True, exist_ok=True)
    task.run()
    return {"task": task, "out": root / "run", "images": images, "root": root}


def index_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "samples" / "index.json").read_text(encoding="utf-8"))


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def expected_picks(per_image: pd.DataFrame, worst: int, best: int) -> dict[str, set[str]]:
    """The typical/worst/best images by plain pandas (PSNR: higher is better), image -> reasons."""
    wide = per_image.pivot(index="image", columns="vae", values="psnr")
    mean = wide.mean(axis=1)
    picks: dict[str, set[str]] = {}
    typical = (mean - mean.median()).abs().sort_values(kind="stable").index[0]
    picks.setdefault(typical, set()).add("typical: median mean PSNR")
    for vae in wide.columns:
        for rank, image in enumerate(wide[vae].sort_values(kind="stable").index[:worst], 1):
            picks.setdefault(image, set()).add(f"worst PSNR #{rank} for {vae}")
        for rank, image in enumerate(wide[vae].sort_values(ascending=False, kind="stable").index[:best], 1):
            picks.setdefault(image, set()).add(f"best PSNR #{rank} for {vae}")
    return picks


def test_a_run_saves_the_typical_worst_and_best_images_with_every_vae(standin_run):
    out = standin_run["out"]
    per_image = pd.read_parquet(out / "per_image.parquet")
    index = index_of(out)
    expected = expected_picks(per_image, worst=2, best=1)
    assert set(index["images"]) == set(expected)
    assert index["settings"] == {"typical": True, "worst": 2, "best": 1, "pool_mib": 1024} and index["metric"] == "psnr"
    recorded = per_image.set_index(["vae", "image"])["psnr"]
    for image, entry in index["images"].items():
        assert set(entry["reasons"]) == expected[image]
        assert set(entry["vaes"]) == {"a", "b"}  # every VAE's reconstruction of every picked image
        for vae, saved in entry["vaes"].items():
            assert saved["psnr"] == pytest.approx(recorded[(vae, image)], abs=1e-12)
            original, recon = (rgb(out / "samples" / saved[k]) for k in ("original", "reconstruction"))
            assert original.shape == recon.shape == (32, 32, 3)
            psnr = 10 * math.log10(255**2 / np.mean((original.astype(float) - recon.astype(float)) ** 2))
            assert psnr == pytest.approx(recorded[(vae, image)], abs=1e-5)  # torchmetrics takes log(255) in float32
            assert saved["psnr_saved"] == pytest.approx(recorded[(vae, image)], abs=1e-12)  # the scored pixels
    # "b"'s worst images are none of "a"'s own picks: "a"'s pixels of them come from the run's pool, as scored
    blemished = {f"img{i:02d}.{'jpg' if i % 2 else 'png'}" for i in BLEMISHED}
    assert blemished <= set(index["images"])
    for image in blemished:
        assert not any(r.endswith("for a") for r in index["images"][image]["reasons"])
        assert index["images"][image]["vaes"]["a"]["source"] == "scored"
        assert index["images"][image]["vaes"]["b"]["source"] == "scored"
    assert standin_run["task"].samples.redecoded == {}, "nothing decoded again"
    assert not (out / ".samples-pool").exists(), "the pool is removed at the end of the run"
    files = {p.relative_to(out / "samples").as_posix() for p in (out / "samples").rglob("*.png")}
    listed = {
        s[k] for e in index["images"].values() for s in e["vaes"].values() for k in ("original", "reconstruction")
    }
    assert files == listed  # no stray file: the intermediate picks of the first VAE were removed


def test_without_the_pool_an_earlier_vae_is_loaded_again_for_later_picks(tmp_path, standin_run):
    cfg = helpers.compose_run(
        [*standins(extra=["samples.pool_mib=0"]), *dataset(standin_run["images"]), f"cache_dir={tmp_path / 'cache'}"]
    )
    task = ReconTask(cfg, tmp_path / "run")
    task.out.mkdir(parents=True, exist_ok=True)
    task.run()
    index, pooled = index_of(tmp_path / "run"), index_of(standin_run["out"])
    assert set(index["images"]) == set(pooled["images"])
    blemished = {f"img{i:02d}.{'jpg' if i % 2 else 'png'}" for i in BLEMISHED}
    for image in blemished:
        assert index["images"][image]["vaes"]["a"]["source"] == "re-decoded"
        a, b = (tmp_path / "run" / "samples", standin_run["out"] / "samples")
        entry, other = index["images"][image]["vaes"]["a"], pooled["images"][image]["vaes"]["a"]
        assert np.array_equal(rgb(a / entry["reconstruction"]), rgb(b / other["reconstruction"]))
    assert task.samples.redecoded.get("a", 0) >= len(blemished)


def test_saved_reconstructions_equal_a_direct_encode_decode(standin_run):
    out = standin_run["out"]
    cfg = OmegaConf.load(out / "config.yaml")
    data = instantiate(cfg.dataset)
    position = {rec.id: i for i, rec in enumerate(data.records)}
    for image, entry in index_of(out)["images"].items():
        sample = data[position[image]]
        for name, saved in entry["vaes"].items():
            vae = instantiate(cfg.vae[name], name=name)
            x = crop_to_multiple(sample.image[None], vae.downsample)
            y = vae.decode(vae.encode(from_uint8(x), seeds=[cfg.seed + sample.index]))
            direct = to_pixels(y, True).to(torch.uint8)[0].permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(rgb(out / "samples" / saved["reconstruction"]), direct)
            np.testing.assert_array_equal(rgb(out / "samples" / saved["original"]), x[0].permute(1, 2, 0).numpy())


def test_the_keeper_holds_at_most_the_configured_images_per_vae(standin_run):
    keeper = standin_run["task"].samples
    n = len(SIZES)
    assert keeper.peaks["a"] <= 2 + 1 < n  # worst + best, of 12 images
    assert keeper.peaks["b"] <= 2 + 1 + len(keeper.wanted)  # and the images "a" had picked
    assert keeper.held == 0 and keeper.candidates == {"worst": [], "best": []}  # released with each VAE


def test_a_long_pass_keeps_only_its_candidates():
    cfg = OmegaConf.create({"samples": {"worst": 2, "best": 1, "typical": True}, "metrics": {"quantize": True}})

    class Psnr:
        name, higher_is_better = "psnr", True

    keeper = SampleKeeper(cfg, Path("/nonexistent"), dataset=None, metrics=[Psnr()])
    rng = np.random.default_rng(0)
    values = rng.normal(30, 3, 400)
    for start in range(0, 400, 8):
        ids = [f"im{i:03d}" for i in range(start, start + 8)]
        pixels = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
        rows = [{"vae": "v", "image": i, "psnr": float(values[int(i[2:])])} for i in ids]
        keeper.observe("v", BatchResult(rows, [], [pixels], [pixels.clone()], [torch.ones(8, dtype=torch.bool)]))
        assert keeper.held <= 3 and all(len(c) <= k for c, k in zip(keeper.candidates.values(), (2, 1)))
    order = np.argsort(values, kind="stable")
    assert [i for _, i in keeper.candidates["worst"]] == [f"im{i:03d}" for i in order[:2]]
    assert [i for _, i in keeper.candidates["best"]] == [f"im{order[-1]:03d}"]
    assert set(keeper.pixels) == {f"im{i:03d}" for i in (*order[:2], order[-1])}


def test_the_report_builds_with_the_weights_and_the_dataset_gone(tmp_path, tiny_pth_dir, tiny_ae_dir):
    images = helpers.write_images(tmp_path / "images")
    pth, ae = shutil.copytree(tiny_pth_dir, tmp_path / "pth"), shutil.copytree(tiny_ae_dir, tmp_path / "ae")
    overrides = [
        "+vae=[taef2,taesd]",
        f"vae.taef2.source={pth}",
        "vae.taef2.sha256=null",
        "vae.taef2.weights_prefix=tiny",
        f"vae.taesd.source={ae}",
        *dataset(images),
        "workers=0",
        "progress=false",
        "samples.worst=1",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    out = run(helpers.compose_run(overrides), out_dir=tmp_path / "run").out_dir
    saved = index_of(out)["images"]
    for gone in (pth, ae, images):
        shutil.rmtree(gone)
    res = helpers.evalvae_cli(["report", str(out)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    report = out / "report"
    grids = sorted((report / "grids").glob("*.png"))
    assert len(grids) == len(saved) >= 2  # the typical image, each VAE's worst and best (some shared)
    md = (report / "report.md").read_text(encoding="utf-8")
    html = (report / "report.html").read_text(encoding="utf-8")
    for image in saved:
        assert f"- `{image}` (" in md
    assert "could not be shown" not in md and "not saved" not in html and "differs from the one scored" not in html
    assert html.count('class="full grid-tile') == 3 * len(saved)  # original + two VAEs in every grid
    assert "re-creat" not in res.stderr  # nothing was loaded to re-create a picture


def test_the_report_imports_no_vae_loading_or_task_code():
    reaches = {
        f"{a} -> {b}"
        for a, targets in graph().items()
        if a.startswith("evalvae.report")
        for b in targets
        if b.startswith(("evalvae.vae", "evalvae.recon", "evalvae.jobs", "evalvae.t2i"))
    }
    assert not reaches


def test_images_the_run_did_not_save_are_shown_as_missing(standin_run, tmp_path, monkeypatch):
    import evalvae.vae

    def no_loading(*args, **kwargs):
        raise AssertionError("the report loaded a VAE")

    monkeypatch.setattr(evalvae.vae, "load_vae", no_loading)
    out = standin_run["out"]
    saved = set(index_of(out)["images"])
    per_image = pd.read_parquet(out / "per_image.parquet")
    other = sorted(set(per_image["image"]) - saved)[0]
    r = load_inputs([out]).runs[0]
    got, reasons = reconstruct_images(r, "a", [other, *saved])
    assert set(got) == saved and list(reasons) == [other]
    assert reasons[other].startswith(f"not saved by run {r.label}")
    write_report([out], tmp_path / "rep", images=[other], worst=3, best=0)  # the run saved 2 worst per VAE
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert f"{other} could not be shown" in md
    third = {per_image[per_image["vae"] == v].sort_values("psnr", kind="stable")["image"].iloc[2] for v in "ab"}
    for image in third - saved:
        assert f"{image} could not be shown" in md
    assert third - saved  # the case is exercised


def test_a_sample_replaced_after_the_run_is_flagged(standin_run, tmp_path):
    d = shutil.copytree(standin_run["out"], tmp_path / "r")
    image, entry = next(iter(index_of(d)["images"].items()))
    path = d / "samples" / entry["vaes"]["b"]["reconstruction"]
    pixels = rgb(path).copy()
    pixels[:8] = 255 - pixels[:8]
    Image.fromarray(pixels).save(path)
    got, _ = reconstruct_images(load_inputs([d]).runs[0], "b", [image])
    assert not got[image].matches
    html = write_report([d], tmp_path / "rep", images=[image], worst=0, best=0).read_text(encoding="utf-8")
    assert html.count("differs from the one scored") == 1  # b flagged, a not


def test_a_run_without_samples_still_reports(standin_run, tmp_path):
    d = shutil.copytree(standin_run["out"], tmp_path / "r")
    shutil.rmtree(d / "samples")
    html = write_report([d], tmp_path / "rep").read_text(encoding="utf-8")
    assert "saved no samples" in html and "Results · mean" in html


def test_file_names_are_portable_for_any_image_id(tmp_path):
    images = tmp_path / "images"
    for i, rel in enumerate(["sub dir/ünï côde #1.png", "A.png", "a.png", "dots..and spaces .png", "x/y/z.jpeg"]):
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(helpers.photo(40, 40, seed=i)).save(images / rel)
    cfg = helpers.compose_run([*standins(worst=5, best=0), *dataset(images)])
    out = run(cfg, out_dir=tmp_path / "run").out_dir
    index = index_of(out)
    assert len(index["images"]) == 5
    names = [p.relative_to(out / "samples").as_posix() for p in (out / "samples").rglob("*.png")]
    assert len(names) == len({n.lower() for n in names}) == 5 * 3  # unique even where case is ignored
    assert all(n.isascii() and " " not in n and not n.split("/")[-1].startswith(".") for n in names)
    assert file_stem("A.png") != file_stem("a.png") and file_stem("") and "/" not in file_stem("x/y/z.jpeg")
    r = load_inputs([out]).runs[0]
    got, reasons = reconstruct_images(r, "b", list(index["images"]))
    assert not reasons and all(rec.matches for rec in got.values())


def test_a_rerun_reads_its_samples_from_the_cache(tmp_path, tiny_pth_dir, tiny_ae_dir, caplog):
    images = helpers.write_images(tmp_path / "images")
    overrides = [
        "+vae=[taef2,taesd]",
        f"vae.taef2.source={tiny_pth_dir}",
        "vae.taef2.sha256=null",
        "vae.taef2.weights_prefix=tiny",
        f"vae.taesd.source={tiny_ae_dir}",
        *dataset(images),
        "workers=0",
        "progress=false",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    first = run(helpers.compose_run(overrides), out_dir=tmp_path / "first").out_dir
    with caplog.at_level(logging.INFO, logger="evalvae.recon.samples"):
        again = run(helpers.compose_run(overrides), out_dir=tmp_path / "again").out_dir
    assert "decoded again: none" in caplog.text
    a, b = index_of(first)["images"], index_of(again)["images"]
    assert a.keys() == b.keys()
    for image in a:
        for vae, saved in a[image]["vaes"].items():
            assert b[image]["vaes"][vae]["source"] == saved["source"]
            for k in ("original", "reconstruction"):
                np.testing.assert_array_equal(rgb(first / "samples" / saved[k]), rgb(again / "samples" / saved[k]))


def test_no_samples_when_none_are_asked_for(tmp_path):
    images = helpers.write_images(tmp_path / "images")
    cfg = helpers.compose_run([*standins(worst=0, best=0, extra=["samples.typical=false"]), *dataset(images)])
    out = run(cfg, out_dir=tmp_path / "run").out_dir
    assert not (out / "samples").exists()


def test_samples_settings_name_the_key_and_value():
    assert settings(None) == {"typical": True, "worst": 3, "best": 1, "pool_mib": 1024}
    with pytest.raises(ConfigError, match="samples.worst") as e:
        settings({"worst": -1})
    assert e.value.value == -1
    with pytest.raises(ConfigError, match="samples.wrost"):
        settings({"wrost": 2})
    from evalvae.config import compose
    from evalvae.jobs.schema import validate

    with pytest.raises(ConfigError, match="samples.best"):
        validate(compose(["+vae=taesd", "samples.best=-2"]), "run")


def test_pick_images_matches_a_plain_sort_with_ties_and_nan():
    rng = np.random.default_rng(3)
    values = rng.integers(20, 26, (30, 3)).astype(float)  # many ties
    values[[2, 7], 1] = np.nan
    wide = pd.DataFrame(values, index=[f"i{k:02d}" for k in range(30)], columns=["x", "y", "z"])
    picks = pick_images(wide, True, worst=3, best=2)
    for entry in wide:
        scores = wide[entry].dropna()
        assert [p.image for p in picks if p.entry == entry and p.kind == "worst"] == list(
            scores.sort_values(kind="stable").index[:3]
        )
        assert [p.image for p in picks if p.entry == entry and p.kind == "best"] == list(
            scores.sort_values(ascending=False, kind="stable").index[:2]
        )
    mean = wide.dropna().mean(axis=1)
    assert picks[0] == Pick((mean - mean.median()).abs().sort_values(kind="stable").index[0], "typical")
    lower = pick_images(wide, False, typical=False, worst=1, best=1, entries=["z"])
    assert [(p.kind, p.image) for p in lower] == [
        ("worst", wide["z"].sort_values(ascending=False, kind="stable").index[0]),
        ("best", wide["z"].sort_values(kind="stable").index[0]),
    ]
    long = wide.stack().rename("psnr").reset_index().set_axis(["image", "vae", "psnr"], axis=1)
    pd.testing.assert_frame_equal(score_table(long, "psnr"), wide.rename_axis(index="image", columns="vae"))


def test_the_methods_say_the_grids_come_from_the_saved_samples(standin_run, tmp_path):
    html = write_report([standin_run["out"]], tmp_path / "rep").read_text(encoding="utf-8")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    footer = html[html.index('<footer id="methods">') :]
    assert "re-created" not in footer and "<strong>Image grids.</strong> Each picture is a PNG the run saved" in footer
    assert "**Image grids.** Each picture is a PNG the run saved (samples/" in md
    html = write_report([standin_run["out"]], tmp_path / "bare", grids=False).read_text(encoding="utf-8")
    assert "Image grids." not in html[html.index('<footer id="methods">') :]  # no grids, nothing to explain
