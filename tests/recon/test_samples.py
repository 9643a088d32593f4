"""Samples: a run saves the images its report's grids show, and the report reads files only."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tarfile
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
from evalvae.recon.samples import file_stem, picks, settings
from evalvae.recon.task import ReconTask
from evalvae.report import write_report
from evalvae.report.load import load_inputs
from evalvae.report.saved import reconstruct_images
from evalvae.run import run
from tests import helpers
from tests.golden import sample_passes
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


class Noisy(Identity):
    """:class:`Identity` plus noise drawn for each image from its own seed, as the consistency decoder draws it."""

    def _decode_seeded(self, z, seeds):
        y = self._decode_raw(z)
        noise = [torch.randn(y.shape[1:], generator=torch.Generator().manual_seed(1000 + s)) for s in seeds]
        return y + 0.05 * torch.stack(noise)  # about 6 levels of 255


def standins(worst=2, best=1, extra=()) -> list[str]:
    return [
        "+vae.a._target_=tests.run_standins.Identity",
        "+vae.a.gain=0.9",
        "+vae.b._target_=tests.recon.test_samples.Blemish",
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
    with pytest.MonkeyPatch.context() as mp:
        decoded = sample_passes(mp)
        task.run()
    return {"task": task, "out": root / "run", "images": images, "root": root, "decoded": decoded}


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
    assert index["settings"] == {"typical": True, "worst": 2, "best": 1} and index["metric"] == "psnr"
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
    # "b"'s worst images are none of "a"'s own picks: "a" decodes them after scoring all the same
    blemished = {f"img{i:02d}.{'jpg' if i % 2 else 'png'}" for i in BLEMISHED}
    assert blemished <= set(index["images"])
    for image in blemished:
        assert not any(r.endswith("for a") for r in index["images"][image]["reasons"])
        assert index["images"][image]["vaes"]["a"]["source"] == "encoded"  # in-memory stand-ins store no latents
    files = {p.relative_to(out / "samples").as_posix() for p in (out / "samples").rglob("*.png")}
    listed = {
        s[k] for e in index["images"].values() for s in e["vaes"].values() for k in ("original", "reconstruction")
    }
    assert files == listed  # no stray file: the intermediate picks of the first VAE were removed


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


def test_after_scoring_each_vae_decodes_exactly_the_picked_images_once(standin_run):
    picked = sorted(index_of(standin_run["out"])["images"])
    passes = standin_run["decoded"]
    assert [p["vae"] for p in passes] == ["b", "a"]  # one pass each, the VAE still loaded first
    for p in passes:
        assert sorted(p["images"]) == picked  # read and decoded: the picks, each once, and nothing else
        assert p["encoded"] == len(picked)  # in-memory stand-ins store no latents: the picks are encoded again
    assert len(picked) < len(SIZES)


def test_picks_follow_the_rule_on_a_table_worked_by_hand():
    x = {"i1": 30, "i2": 25, "i3": 25, "i4": 35, "i5": math.nan}
    y = {"i1": 20, "i2": 28, "i3": 22, "i4": 26, "i5": 24}
    rows = [{"vae": v, "image": i, "psnr": float(s)} for v, scores in (("x", x), ("y", y)) for i, s in scores.items()]
    per_image = pd.DataFrame(rows)
    # means over the images both scored: i1 25, i2 26.5, i3 23.5, i4 30.5; median 25.75; i1 and i2 tie at
    # 0.75 from it (i1 first by id); x's worst tie at 25 (i2 before i3); i5 (NaN for x) is never x's pick
    assert picks(per_image, "psnr", True, {"typical": True, "worst": 2, "best": 1}) == {
        "i1": ["typical: median mean PSNR", "worst PSNR #1 for y"],
        "i2": ["worst PSNR #1 for x", "best PSNR #1 for y"],
        "i3": ["worst PSNR #2 for x", "worst PSNR #2 for y"],
        "i4": ["best PSNR #1 for x"],
    }
    per_image["lpips"] = per_image["psnr"] / 100  # lower is better: the highest are the worst
    assert picks(per_image, "lpips", False, {"typical": False, "worst": 2, "best": 0}) == {
        "i4": ["worst LPIPS #1 for x", "worst LPIPS #2 for y"],
        "i1": ["worst LPIPS #2 for x"],
        "i2": ["worst LPIPS #1 for y"],
    }


def test_the_report_builds_with_the_weights_and_the_dataset_gone(golden_recon, tmp_path):
    """Its grids are the pictures the run saved, and the methods say so; a run that saved none still reports."""
    out = shutil.copytree(golden_recon["r32"], tmp_path / "run")
    for f in out.glob("*.*"):  # every path into the golden folder (weights, images, cache) now leads nowhere
        if f.suffix in (".yaml", ".json", ".csv"):
            text = f.read_text(encoding="utf-8").replace(str(golden_recon["r32"].parent), str(tmp_path / "gone"))
            f.write_text(text, encoding="utf-8")
    saved = index_of(out)["images"]
    res = helpers.evalvae_main(["report", str(out)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    report = out / "report"
    grids = sorted((report / "grids").glob("*.png"))
    assert len(grids) == len(saved) >= 2  # the typical image, each VAE's worst and best (some shared)
    md = (report / "report.md").read_text(encoding="utf-8")
    html = (report / "report.html").read_text(encoding="utf-8")
    for image in saved:
        assert f"- `{image}` (" in md
    assert "could not be shown" not in md + html and "not saved" not in html
    assert "differs from the one scored" not in html
    assert html.count('class="full grid-tile') == 3 * len(saved)  # original + two VAEs in every grid
    assert 'alt="taef2: ' in html and 'alt="taesd: ' in html
    assert "re-creat" not in res.stderr  # nothing was loaded to re-create a picture
    footer = html[html.index('<footer id="methods">') :]
    assert "re-created" not in footer and "<strong>Image grids.</strong> Each picture is a PNG the run saved" in footer
    assert "**Image grids.** Each picture is a PNG the run saved (samples/" in md
    shutil.rmtree(out / "samples")  # a run that saved none: the grids say so, the rest of the report stands
    html = write_report([out], tmp_path / "rep", worst=1).read_text(encoding="utf-8")
    assert "saved no samples" in html and "could not be shown" in html and "Results · mean" in html


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


def copied_cache(golden: dict, tmp_path: Path) -> list[str]:
    """The golden 32 px run's overrides with a copy of its cache (a rerun may add to the cache it reads)."""
    cache = shutil.copytree(golden["cache"], tmp_path / "cache")
    return [*golden["overrides"][:-1], f"cache_dir={cache}"]


def saved_files(run_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted((run_dir / "samples").rglob("*.png"))}


def no_loading(name, *args, **kwargs):
    raise AssertionError(f"VAE '{name}' was loaded")


def test_samples_are_decoded_from_the_latents_the_run_cached(golden_recon, tmp_path, monkeypatch):
    out, index = golden_recon["r32"], index_of(golden_recon["r32"])
    assert [p["vae"] for p in golden_recon["decoded"]] == ["taesd", "taef2"]  # the VAE still loaded first
    assert all(p["encoded"] == 0 and sorted(p["images"]) == sorted(index["images"]) for p in golden_recon["decoded"])
    recorded = pd.read_parquet(out / "per_image.parquet").set_index(["vae", "image"])["psnr"]
    for image, entry in index["images"].items():
        for vae, saved in entry["vaes"].items():
            assert saved["source"] == "from the cached latents"
            # decoded in a batch of its own: measured equal here; a level off at a few pixels moves it < 0.01 dB
            assert saved["psnr_saved"] == pytest.approx(recorded[(vae, image)], abs=0.01)
    # cache.latents=false: the run's own latents are read before they are removed with the run's end
    decoded = sample_passes(monkeypatch)
    overrides = [*golden_recon["overrides"][:-1], f"cache_dir={tmp_path / 'cache'}", "cache.latents=false"]
    own = run(helpers.compose_run(overrides), out_dir=tmp_path / "own").out_dir
    assert [p["encoded"] for p in decoded] == [0, 0] and not (own / ".latents").exists()


def test_a_run_continued_in_its_directory_keeps_its_samples(golden_recon, tmp_path, monkeypatch, caplog):
    out = shutil.copytree(golden_recon["r32"], tmp_path / "run")
    overrides = copied_cache(golden_recon, tmp_path)
    before, files = index_of(out), saved_files(out)
    monkeypatch.setattr("evalvae.jobs.task.load", no_loading)
    monkeypatch.setattr("evalvae.recon.samples.load", no_loading)
    decoded = sample_passes(monkeypatch)
    with caplog.at_level(logging.INFO, logger="evalvae.recon.samples"):
        run(helpers.compose_run(overrides), out_dir=out)
    assert decoded == [] and index_of(out) == before and saved_files(out) == files
    n = len(before["images"])
    assert f"taef2 {n} kept; taesd {n} kept)" in caplog.text  # the log line says so
    # fewer picks: the others' files go, nothing is decoded; more picks: only the new ones are decoded
    run(helpers.compose_run([*overrides, "samples.worst=1", "samples.best=0"]), out_dir=out)
    fewer = index_of(out)["images"]
    assert decoded == [] and set(fewer) < set(before["images"])
    assert len(list((out / "samples").rglob("*.png"))) == 3 * len(fewer)  # an original and two reconstructions each
    monkeypatch.undo()
    decoded = sample_passes(monkeypatch)
    run(helpers.compose_run([*overrides, "samples.worst=4", "samples.best=0"]), out_dir=out)
    more = index_of(out)["images"]
    assert {p["vae"] for p in decoded} == {"taef2", "taesd"}
    assert all(sorted(p["images"]) == sorted(set(more) - set(fewer)) and p["images"] for p in decoded)
    for image in fewer:
        assert {s["source"] for s in more[image]["vaes"].values()} == {"from the cached latents"}
        assert more[image]["vaes"] == fewer[image]["vaes"]  # kept as they were


def test_a_rerun_in_a_new_directory_loads_each_vae_for_its_samples(golden_recon, tmp_path, monkeypatch):
    from evalvae.jobs.vaes import load

    loads = []

    def load_but_taef2(name, *args, **kwargs):
        loads.append(name)
        if name == "taef2":
            raise RuntimeError("weights gone")
        return load(name, *args, **kwargs)

    monkeypatch.setattr("evalvae.jobs.task.load", no_loading)  # every batch is read from the result chunks
    monkeypatch.setattr("evalvae.recon.samples.load", load_but_taef2)
    decoded = sample_passes(monkeypatch)
    again = run(helpers.compose_run(copied_cache(golden_recon, tmp_path)), out_dir=tmp_path / "again").out_dir
    assert sorted(loads) == ["taef2", "taesd"]  # the cost of a rerun with samples: one load per VAE
    assert [(p["vae"], p["encoded"]) for p in decoded] == [("taesd", 0)]
    first, second = index_of(golden_recon["r32"])["images"], index_of(again)["images"]
    assert first.keys() == second.keys()
    for image, entry in first.items():
        saved = entry["vaes"]["taesd"]
        assert second[image]["vaes"]["taesd"]["key"] == saved["key"]
        for k in ("original", "reconstruction"):
            np.testing.assert_array_equal(
                rgb(golden_recon["r32"] / "samples" / saved[k]), rgb(again / "samples" / saved[k])
            )
        # a VAE that cannot be loaded again: its pictures are not saved, with the reason; its results stand
        assert set(second[image]["vaes"]) == {"taesd"}
        assert second[image]["not_saved"] == {"taef2": "RuntimeError: weights gone"}
    assert set(pd.read_parquet(again / "per_image.parquet")["vae"]) == {"taef2", "taesd"}
    got, reasons = reconstruct_images(load_inputs([again]).runs[0], "taef2", list(second))
    assert not got and all(r.endswith("RuntimeError: weights gone") for r in reasons.values())


def test_a_seeded_decoder_decodes_its_picks_as_it_scored_them(standin_run, tmp_path):
    overrides = ["+vae.n._target_=tests.recon.test_samples.Noisy", "samples.worst=3", "samples.best=2"]
    cfg = helpers.compose_run([*overrides, "batch_size=5", "workers=0", *dataset(standin_run["images"])])
    out = run(cfg, out_dir=tmp_path / "run").out_dir
    recorded = pd.read_parquet(out / "per_image.parquet").set_index("image")["psnr"]
    data = instantiate(cfg.dataset)
    position, vae = {rec.id: i for i, rec in enumerate(data.records)}, instantiate(cfg.vae.n, name="n")
    saved = index_of(out)["images"]
    assert len(saved) >= 5 and {position[i] // 5 for i in saved} == {0, 1, 2}  # picks from every batch
    for image, entry in saved.items():
        s = entry["vaes"]["n"]
        assert s["psnr_saved"] == pytest.approx(recorded[image], abs=1e-9)  # the noise of the scored decode
        x, seeds = from_uint8(data[position[image]].image[None]), [position[image]]
        direct = to_pixels(vae.decode(vae.encode(x, seeds=seeds), seeds=seeds), True).to(torch.uint8)[0]
        np.testing.assert_array_equal(rgb(out / "samples" / s["reconstruction"]), direct.permute(1, 2, 0).numpy())


def test_a_streamed_dataset_is_read_again_for_its_picks(standin_run, tmp_path):
    pytest.importorskip("webdataset")
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for f in sorted(standin_run["images"].iterdir()):
            tar.add(f, arcname=f.name)
    overrides = [
        "+vae.b._target_=tests.recon.test_samples.Blemish",
        "+vae.b.gain=0.9",
        f"+vae.b.indices=[{BLEMISHED[0]}]",
    ]
    data = ["dataset=webdataset", f"dataset.urls={tmp_path / 'shard.tar'}", "dataset.resolution=32"]
    out = run(helpers.compose_run([*overrides, *data, "batch_size=4", "workers=0"]), out_dir=tmp_path / "run").out_dir
    per_image = pd.read_parquet(out / "per_image.parquet")
    index = index_of(out)["images"]
    assert set(index) == set(expected_picks(per_image, worst=3, best=1)) and len(index) > 1
    recorded = per_image.set_index("image")["psnr"]
    for image, entry in index.items():
        assert not entry["not_saved"] and entry["vaes"]["b"]["psnr_saved"] == pytest.approx(recorded[image], abs=1e-9)


def test_no_samples_when_none_are_asked_for(tmp_path):
    images = helpers.write_images(tmp_path / "images")
    cfg = helpers.compose_run([*standins(worst=0, best=0, extra=["samples.typical=false"]), *dataset(images)])
    out = run(cfg, out_dir=tmp_path / "run").out_dir
    assert not (out / "samples").exists()


def test_samples_settings_name_the_key_and_value():
    from evalvae.config import compose
    from evalvae.jobs.schema import validate

    assert settings(None) == {"typical": True, "worst": 3, "best": 1}
    with pytest.raises(ConfigError, match="samples.pool_mib"):
        validate(compose(["+vae=taesd", "+samples.pool_mib=1024"]))
    with pytest.raises(ConfigError, match="samples.worst") as e:
        validate(compose(["+vae=taesd", "samples.worst=-1"]))
    assert e.value.value == -1
    with pytest.raises(ConfigError, match="samples.wrost"):
        validate(compose(["+vae=taesd", "+samples.wrost=2"]))
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
