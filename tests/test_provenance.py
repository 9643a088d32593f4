"""Provenance that reproduces a number: what ``metrics.json`` records of the software and machine, the SSIM
backend that ran, cache keys that follow every version a number depends on, and content hashes of the
scored images that ``compare`` checks."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import metadata

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae import provenance
from evalvae.compare import compare, load_snapshot
from evalvae.compare.baseline import write_baseline
from evalvae.compare.comparison import protocol_differences
from evalvae.compare.verdict import Verdict
from evalvae.run import run
from tests.compare_helpers import identity_vae
from tests.helpers import NO_SAMPLES, REPO, compose_run, evalvae_main, photo

RECORDED_PACKAGES = (
    "evalvae",
    "torch",
    "torchvision",
    "diffusers",
    "Pillow",
    "scikit-image",
    "lpips",
    "torch-fidelity",
    "numpy",
    "scipy",
)


def installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def images(root, n: int = 3, changed: int | None = None):
    """``n`` PNGs named img00.png...; ``changed``: that one's pixels differ (one pixel, one level)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = photo(32, 40, seed=i)
        if i == changed:
            a[5, 7, 1] = (int(a[5, 7, 1]) + 1) % 256
        Image.fromarray(a).save(root / f"img{i:02d}.png")
    return root


def identity_run(out, folder, *extra, psnr_only: bool = True):
    """A PSNR-only (else PSNR and SSIM) run of a near-identity stand-in on ``folder`` at native size."""
    cfg = compose_run(
        [
            *identity_vae("v", 0.02),
            "dataset=folder",
            f"dataset.path={folder}",
            "dataset.crop=none",
            "metrics=default",
            *(["~metrics.ssim"] if psnr_only else []),
            "device=cpu",
            "workers=0",
            *NO_SAMPLES,
            *extra,
        ]
    )
    return run(cfg, out_dir=out).out_dir


# -- software and machine -------------------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter
def test_reading_versions_imports_no_library():
    code = (
        "import sys; from evalvae import provenance; v = provenance.versions(); "
        "heavy = [m for m in ('torch', 'lpips', 'torch_fidelity', 'skimage', 'diffusers', 'scipy') if m in sys.modules]; "
        "print(heavy, v['numpy'] is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] True", out.stdout + out.stderr


def test_the_run_records_the_software_the_machine_the_ssim_backend_that_ran_and_the_pixels_it_scored(tmp_path):
    folder = images(tmp_path / "img")
    out = identity_run(tmp_path / "run", folder, psnr_only=False)
    meta = json.loads((out / "metrics.json").read_text())
    software = meta["software"]
    for package in RECORDED_PACKAGES:
        assert software[package] == installed(package), package  # null where it is not installed
    env = meta["environment"]
    assert env["device"] == "cpu" and env["threads"] == torch.get_num_threads()
    assert env["cuda"] == torch.version.cuda  # None on a CPU build of torch
    assert env["device_name"] == provenance.cpu_name() and env["device_name"]
    # SSIM: the backend that computed the values, and the one asked for
    ssim = meta["metrics"]["ssim"]
    assert (ssim["backend"], ssim["backend_requested"]) == ("skimage", "auto")
    assert meta["metrics"]["psnr"]["version"] == 1 and ssim["version"] == 1
    # per_image: the sha256 of the scored pixels and of the file they came from
    per = pd.read_parquet(out / "per_image.parquet").set_index("image")
    for path in sorted(folder.iterdir()):
        pixels = np.asarray(Image.open(path).convert("RGB"))  # crop=none, factor 1: the file's pixels are scored
        assert per.loc[path.name, "image_sha256"] == hashlib.sha256(pixels.tobytes()).hexdigest()
        assert per.loc[path.name, "file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(meta["image_hashes"]) == {"per_image.image_sha256", "per_image.file_sha256"}


def test_ssim_records_the_backend_auto_picks_and_the_one_that_ran():
    from evalvae.metrics.pixel import SSIM

    m = SSIM()
    # nothing computed here (every value from stored results): the backend the device selects
    assert m.ran(torch.device("cuda")) == {"backend": "torchmetrics", "backend_requested": "auto"}
    x = torch.from_numpy(photo(24, 24)).permute(2, 0, 1)[None].double()
    m(x, x.flip(-1))
    assert m.ran(torch.device("cuda")) == {"backend": "skimage", "backend_requested": "auto"}  # CPU tensors ran it
    assert SSIM(backend="torchmetrics").ran(torch.device("cpu"))["backend"] == "torchmetrics"


def test_bench_and_run_environments_come_from_one_place():
    from evalvae.bench.results import environment

    env = environment(torch.device("cpu"))
    shared = provenance.environment(torch.device("cpu"))
    assert env["device_name"] == shared["device_name"] and env["torch_threads"] == shared["threads"]
    assert env["diffusers_version"] == (installed("diffusers") or "")


# -- cache keys -----------------------------------------------------------------------------------


def kl_overrides(image_dir, cache, kl_dir, *extra) -> list[str]:
    return [
        "+vae.a._target_=evalvae.vae.kl.KLAdapter",
        f"+vae.a.source={kl_dir}",
        "+vae.a.latent_space=sd",
        "dataset=folder",
        f"dataset.path={image_dir}",
        "dataset.resolution=32",
        "dataset.limit=3",
        "metrics=default",
        "device=cpu",
        "workers=0",
        "batch_size=4",
        f"cache_dir={cache}",
        *NO_SAMPLES,
        *extra,
    ]


def counts(out) -> dict:
    t = pd.read_csv(out / "timings.csv").set_index("vae").loc["a"]
    return {k: int(t[k]) for k in ("batches_cached", "images_encoded", "latents_cached")}


def test_a_metric_version_bump_misses_the_result_chunks_and_an_unchanged_one_hits(
    tmp_path, image_dir, tiny_kl_dir, monkeypatch
):
    from evalvae.metrics.pixel import PSNR

    cfg = compose_run(kl_overrides(image_dir, tmp_path / "cache", tiny_kl_dir))
    assert counts(run(cfg, out_dir=tmp_path / "r1").out_dir)["batches_cached"] == 0
    assert counts(run(cfg, out_dir=tmp_path / "r2").out_dir)["batches_cached"] == 1  # unchanged: read
    monkeypatch.setattr(PSNR, "version", 2, raising=False)  # a fix that moves PSNR's numbers
    got = counts(run(cfg, out_dir=tmp_path / "r3").out_dir)
    assert got["batches_cached"] == 0, "results of the old PSNR code were served"
    # the latents do not depend on PSNR: they are read, not encoded again
    assert (got["images_encoded"], got["latents_cached"]) == (0, 3)
    meta = json.loads((tmp_path / "r3" / "metrics.json").read_text())
    assert meta["metrics"]["psnr"]["version"] == 2


def test_a_latent_code_version_bump_misses_the_latent_cache_and_an_unchanged_one_hits(
    tmp_path, image_dir, tiny_kl_dir, monkeypatch
):
    from evalvae.jobs import store

    cfg = compose_run(kl_overrides(image_dir, tmp_path / "cache", tiny_kl_dir, "cache.results=false"))
    assert counts(run(cfg, out_dir=tmp_path / "r1").out_dir)["images_encoded"] == 3
    assert counts(run(cfg, out_dir=tmp_path / "r2").out_dir)["latents_cached"] == 3  # unchanged: read
    monkeypatch.setattr(store, "LATENTS_VERSION", getattr(store, "LATENTS_VERSION", 1) + 1, raising=False)
    assert counts(run(cfg, out_dir=tmp_path / "r3").out_dir)["images_encoded"] == 3
    monkeypatch.setattr(provenance, "version", lambda p: "0.0-other" if p == "diffusers" else installed(p))
    assert counts(run(cfg, out_dir=tmp_path / "r4").out_dir)["images_encoded"] == 3  # another diffusers


@pytest.fixture()
def references(tmp_path, image_dir):
    """A folder dataset at 32 px, an rFID of the tiny extractor, and a function giving a fresh References
    over one store (as a later run would build it)."""
    from evalvae.data import make_loader
    from evalvae.data.datasets import folder
    from evalvae.metrics.distribution import FIDKID
    from evalvae.metrics.refstats import References

    dataset = folder(str(image_dir), resolution=32)
    metric = FIDKID(extractor="tests.helpers.TinyExtractor", kid=False)
    cache = tmp_path / "cache"
    References(cache, dataset).compute([metric], make_loader(dataset, 4, 0, torch.device("cpu")))
    return metric, lambda: References(cache, dataset)


def test_reference_statistics_miss_on_a_features_or_library_version_change_and_hit_unchanged(references, monkeypatch):
    from tests.helpers import TinyExtractor

    metric, fresh = references
    assert fresh().get(metric) is not None  # unchanged: served from the cache
    key = fresh().content_key(metric)
    for package in ("torch", "Pillow"):  # the extractor's library; the one that decodes and resizes the images
        with monkeypatch.context() as m:
            m.setattr(provenance, "version", lambda p, other=package: "0.0-other" if p == other else installed(p))
            refs = fresh()
            assert refs.get(metric) is None, package
            assert refs.content_key(metric) == key  # what the statistics are of is unchanged (metrics.json)
    assert fresh().get(metric) is not None
    monkeypatch.setattr(TinyExtractor, "version", 2, raising=False)
    assert fresh().get(metric) is None


# -- content hashes and compare -------------------------------------------------------------------


def test_compare_refuses_psnr_baselines_of_other_images_under_the_same_names(tmp_path):
    first = identity_run(tmp_path / "a", images(tmp_path / "img-a"))
    second = identity_run(tmp_path / "b", images(tmp_path / "img-b", changed=1))
    again = identity_run(tmp_path / "c", images(tmp_path / "img-c"))  # the same pixels in another folder

    result = compare(load_snapshot(first), load_snapshot(second))
    assert result.exit_code == 2 and result.status == "unusable"
    assert result.mismatches == [
        "v: of 3 image(s) also in the baseline, 1 are other files (img01.png; per_image.file_sha256) under the "
        "same name: these are other images, so their numbers are not compared"
    ]
    (row,) = [r for r in result.rows if r.metric == "psnr"]
    assert row.verdict is Verdict.MISMATCH and "other images" in row.detail

    same = compare(load_snapshot(first), load_snapshot(again))
    assert same.exit_code == 0 and not same.mismatches  # same pixels, other folder: compared

    # through a baseline file, and from the command line
    baseline = write_baseline(load_snapshot(first), tmp_path / "baseline.json")
    written = json.loads(baseline.read_text())
    per = pd.read_parquet(first / "per_image.parquet").set_index("image")
    assert written["images"]["v"]["img01.png"] == per.loc["img01.png", "image_sha256"]
    assert written["files"]["img01.png"] == per.loc["img01.png", "file_sha256"]
    proc = evalvae_main(["compare", str(baseline), str(second)], cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "protocol mismatch" in proc.stderr and "img01.png" in proc.stderr


def test_the_same_files_decoded_to_other_pixels_are_compared_with_a_note_and_unknown_files_are_refused(tmp_path):
    """Other software (a Pillow whose resize rounds otherwise) turns the baseline's files into other pixels:
    the numbers are compared, with a note. Where a side did not hash the files, other pixels are refused;
    a baseline that recorded no hashes at all still compares, with a note."""
    run_dir = identity_run(tmp_path / "a", images(tmp_path / "img-a"))
    baseline, current = load_snapshot(run_dir), load_snapshot(run_dir)
    current.images = {"v": {**current.images["v"], "img02.png": "0" * 64}}
    current.protocol = {**current.protocol, "software": {**current.protocol["software"], "Pillow": "0.0-other"}}
    result = compare(baseline, current)
    assert result.exit_code == 0 and not result.mismatches
    (note,) = [n for n in result.notes if "decoded or resized" in n]
    assert "img02.png" in note and "Pillow 0.0-other now" in note
    current.files = {}  # a stream, or results written before the files were hashed
    result = compare(baseline, current)
    assert result.exit_code == 2 and "1 have other pixels (img02.png" in result.mismatches[0]
    # a baseline without hashes (results written before evalvae recorded them) still compares, with a note
    old = load_snapshot(run_dir)
    old.images, old.files = {}, {}
    result = compare(old, load_snapshot(run_dir))
    assert result.exit_code == 0 and not result.mismatches
    assert any("records no image content hashes" in n for n in result.notes)


def test_the_committed_baseline_takes_the_new_provenance_fields_as_no_protocol_change():
    """metrics.json now records software, machine, metric versions and the SSIM backend: a baseline written
    before any of them still compares (no mismatch, no note for fields it never recorded)."""
    old = load_snapshot(REPO / "reports" / "baselines" / "taef2-kodak-256.json").protocol
    new = json.loads(json.dumps(old))
    new["software"] = provenance.software()
    new["environment"] = provenance.environment(torch.device("cpu"))
    new["image_hashes"] = {"per_image.image_sha256": "...", "per_image.file_sha256": "..."}
    new["metrics"]["psnr"]["version"] = 1
    new["metrics"]["ssim"].update(version=1, backend="skimage", backend_requested="auto")
    assert protocol_differences(old, new) == ([], [])
    # between two runs that both record them, a version or backend change is noted, not refused
    newer = json.loads(json.dumps(new))
    newer["metrics"]["psnr"]["version"] = 2
    newer["software"]["torch"] = "0.0-other"
    mismatches, notes = protocol_differences(new, newer)
    assert not mismatches and notes == ["metrics.psnr.version: 1 in the baseline, 2 now"]
    from evalvae.compare.comparison import recorded_differences

    assert recorded_differences(new, newer) == [
        f"software.torch: {new['software']['torch']!r} in the baseline, '0.0-other' now"
    ]


def test_generated_latents_are_keyed_on_the_libraries_that_generate_them(monkeypatch):
    from evalvae.t2i.latents import latent_key

    generation = {"pipeline": "hub:some/model@abc", "steps": 4, "device": "cpu"}
    key = latent_key(generation, "a cat", 0)
    assert latent_key(generation, "a cat", 0) == key
    monkeypatch.setattr(provenance, "version", lambda p: "0.0-other" if p == "diffusers" else installed(p))
    assert latent_key(generation, "a cat", 0) != key  # another scheduler implementation: generated again


@pytest.mark.assets
def test_the_committed_baseline_records_the_kodak_files_it_was_made_from(assets):
    """The CI gate's baseline holds each Kodak file's sha256, so replacing one under its name is refused."""
    snap = load_snapshot(REPO / "reports" / "baselines" / "taef2-kodak-256.json")
    kodak = sorted((assets / "images" / "kodak").glob("*.png"))
    assert len(kodak) == 24 and set(snap.images["taef2"]) == {p.name for p in kodak}
    assert snap.files == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in kodak}
