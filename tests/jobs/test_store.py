"""Never redoing finished work: result chunks (rerun, resume, damaged chunks), the latent cache and
shared-encoder dedup, counted through ``timings.csv`` (images the encoder ran on, latents read, batches read).

The VAEs are tiny diffusers AutoencoderKL folders: ``a`` and ``b`` share an encoder (b's decoder is
another's), ``c`` has its own. VAEs built in memory are never cached (no identity outlives them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from evalvae.errors import ConfigError
from evalvae.run import run
from tests.helpers import NO_SAMPLES, compose_run, save_tiny_kl

N_IMAGES, BATCH = 6, 4  # two batches, the second one short
SET_LEVEL = [
    "metrics=all",
    "~metrics.lpips",
    "metrics.fid.extractor=tests.helpers.TinyExtractor",
    "metrics.fid.kid_subsets=5",
]


@pytest.fixture(scope="module")
def kl_dirs(tmp_path_factory):
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("kl")
    a = save_tiny_kl(root / "a", seed=0)
    model = AutoencoderKL.from_pretrained(a)
    other = AutoencoderKL.from_pretrained(save_tiny_kl(root / "other", seed=1))
    model.decoder.load_state_dict(other.decoder.state_dict())
    model.post_quant_conv.load_state_dict(other.post_quant_conv.state_dict())
    model.save_pretrained(root / "b")
    save_tiny_kl(root / "c", seed=2)
    return {k: root / k for k in "abc"}


def vae(name, folder) -> list[str]:
    return [
        f"+vae.{name}._target_=evalvae.vae.kl.KLAdapter",
        f"+vae.{name}.source={folder}",
        f"+vae.{name}.latent_space=sd",
    ]


def overrides(image_dir, cache, *extra) -> list[str]:
    return [
        "dataset=folder",
        f"dataset.path={image_dir}",
        "dataset.resolution=32",
        "device=cpu",
        "workers=0",
        f"batch_size={BATCH}",
        f"cache_dir={cache}",
        *extra,
    ]


def timings(out) -> pd.DataFrame:
    return pd.read_csv(out / "timings.csv").set_index("vae")


def results(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    per = pd.read_parquet(out / "per_image.parquet").sort_values(["vae", "image"]).reset_index(drop=True)
    return per, pd.read_csv(out / "summary.csv").sort_values(["vae", "metric"]).reset_index(drop=True)


def assert_same_results(a, b):
    (pa, sa), (pb, sb) = results(a), results(b)
    pd.testing.assert_frame_equal(pa, pb, check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(sa.drop(columns="note"), sb.drop(columns="note"), check_exact=False, rtol=1e-9)


def test_a_rerun_reads_every_batch_encodes_nothing_and_does_not_load_the_vae(
    tmp_path, image_dir, kl_dirs, monkeypatch, caplog
):
    common = overrides(image_dir, tmp_path / "cache", *SET_LEVEL, *vae("a", kl_dirs["a"]))
    first = run(compose_run(common), out_dir=tmp_path / "r1").out_dir
    t = timings(first).loc["a"]
    assert (t.images_encoded, t.latents_cached, t.batches_cached) == (N_IMAGES, 0, 0)
    second = run(compose_run(common), out_dir=tmp_path / "r2").out_dir
    t = timings(second).loc["a"]
    assert (t.images_encoded, t.latents_cached, t.batches_cached) == (0, 0, 2), "nothing encoded or decoded again"
    assert_same_results(first, second)
    assert len(pd.read_parquet(second / "per_image.parquet")) == N_IMAGES

    def no_load(*args, **kwargs):
        raise AssertionError("the VAE was loaded")

    # without samples to draw, a rerun needs nothing of the VAE: it is not even loaded
    monkeypatch.setattr("evalvae.jobs.task.load", no_load)
    monkeypatch.setattr("evalvae.recon.samples.load", no_load)
    with caplog.at_level(logging.INFO):
        third = run(compose_run([*common, *NO_SAMPLES]), out_dir=tmp_path / "r3").out_dir
    assert "every batch is done (result chunks); it is not loaded" in caplog.text
    assert timings(third).loc["a", "batches_cached"] == 2
    assert_same_results(first, third)
    assert json.loads((first / "vaes.json").read_text()) == json.loads((third / "vaes.json").read_text())


def test_vaes_sharing_an_encoder_encode_each_image_once(tmp_path, image_dir, kl_dirs, caplog):
    common = overrides(image_dir, tmp_path / "cache", *SET_LEVEL)
    with caplog.at_level(logging.INFO):
        out = run(
            compose_run([*common, *vae("a", kl_dirs["a"]), *vae("b", kl_dirs["b"]), *vae("c", kl_dirs["c"])]),
            out_dir=tmp_path / "all",
        ).out_dir
    t = timings(out)
    assert t.loc["a", "images_encoded"] == N_IMAGES and t.loc["c", "images_encoded"] == N_IMAGES
    assert (t.loc["b", "images_encoded"], t.loc["b", "latents_cached"]) == (0, N_IMAGES)
    assert "VAE 'b' has the same encoder as 'a'" in caplog.text and "'c' has the same encoder" not in caplog.text
    vaes = {v["vae"]: v for v in json.loads((out / "vaes.json").read_text())}
    assert vaes["a"]["encoder_sha256"] == vaes["b"]["encoder_sha256"] != vaes["c"]["encoder_sha256"]
    # b's numbers are the ones it gets encoding for itself
    alone = run(
        compose_run([*overrides(image_dir, tmp_path / "fresh", *SET_LEVEL), *vae("b", kl_dirs["b"])]),
        out_dir=tmp_path / "b",
    ).out_dir
    per, _ = results(out)
    mine, _ = results(alone)
    np.testing.assert_allclose(per[per.vae == "b"]["psnr"], mine["psnr"], rtol=1e-9)


def test_a_run_that_adds_a_decoder_decodes_the_cached_latents(tmp_path, image_dir, kl_dirs):
    common = overrides(image_dir, tmp_path / "cache")
    run(compose_run([*common, *vae("a", kl_dirs["a"])]), out_dir=tmp_path / "one")
    out = run(
        compose_run([*common, *vae("a", kl_dirs["a"]), *vae("b", kl_dirs["b"])]), out_dir=tmp_path / "two"
    ).out_dir
    t = timings(out)
    assert t.loc["a", "batches_cached"] == 2 and t.loc["b", "batches_cached"] == 0
    assert (t.loc["b", "images_encoded"], t.loc["b", "latents_cached"]) == (0, N_IMAGES)


def test_cache_latents_false_stores_no_latent_but_still_encodes_once_per_run(tmp_path, image_dir, kl_dirs):
    cache = tmp_path / "cache"
    common = overrides(image_dir, cache, "cache.latents=false")
    out = run(compose_run([*common, *vae("a", kl_dirs["a"]), *vae("b", kl_dirs["b"])]), out_dir=tmp_path / "r").out_dir
    assert timings(out).loc["b", "images_encoded"] == 0
    assert not (cache / "latents").exists() and not (out / ".latents").exists()


def test_cache_results_false_keeps_the_chunks_in_the_run_directory(tmp_path, image_dir, kl_dirs):
    cache = tmp_path / "cache"
    out = run(
        compose_run([*overrides(image_dir, cache, "cache.results=false"), *vae("a", kl_dirs["a"])]),
        out_dir=tmp_path / "r",
    ).out_dir
    assert not (cache / "results").exists() and len(batch_chunks(out / "chunks")) == 2


def batch_chunks(root) -> list:
    """The result chunks that hold a batch's rows."""
    from safetensors import safe_open

    found = []
    for path in root.rglob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            if "rows" in (f.metadata() or {}):
                found.append(path)
    return found


def test_a_damaged_chunk_is_redone_not_read_and_the_vae_known_from_its_record_is_loaded_for_it(
    tmp_path, image_dir, kl_dirs, caplog
):
    cache = tmp_path / "cache"
    cfg = compose_run(overrides(image_dir, cache, *SET_LEVEL, *vae("a", kl_dirs["a"])))
    first = run(cfg, out_dir=tmp_path / "r1").out_dir
    damaged = batch_chunks(cache / "results")[0]
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    with caplog.at_level(logging.INFO):
        second = run(cfg, out_dir=tmp_path / "r2").out_dir
    assert "ignoring damaged chunk" in caplog.text and "batch(es) to compute after all; loading it" in caplog.text
    assert timings(second).loc["a", "batches_cached"] == 1
    assert_same_results(first, second)
    # a flipped bit and a truncated file: both chunks redone
    chunks = batch_chunks(cache / "results")
    damaged = chunks[-1]
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    truncated = chunks[0]
    truncated.write_bytes(truncated.read_bytes()[:100])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = run(cfg, out_dir=tmp_path / "r3").out_dir
    assert "ignoring damaged chunk" in caplog.text
    assert timings(third).loc["a", "batches_cached"] == 0
    assert_same_results(first, third)


def test_resume_dir_continues_in_that_directory(tmp_path, image_dir, kl_dirs):
    common = overrides(image_dir, tmp_path / "cache", *vae("a", kl_dirs["a"]))
    out = run(compose_run(common), out_dir=tmp_path / "r").out_dir
    expected = results(out)
    for f in ("summary.csv", "per_image.parquet", "per_image.csv", "timings.csv"):
        (out / f).unlink()
    again = run(compose_run([*common, f"resume={out}"]))
    assert again.out_dir == out and timings(out).loc["a", "batches_cached"] == 2
    pd.testing.assert_frame_equal(results(out)[0], expected[0])
    with pytest.raises(ConfigError, match="resume"):
        run(compose_run([*common, f"resume={tmp_path / 'nope'}"]))


def test_vaes_built_in_memory_are_never_cached(tmp_path, image_dir):
    cfg = compose_run([*overrides(image_dir, tmp_path / "cache"), "+vae.p._target_=tests.run_standins.Identity"])
    run(cfg, out_dir=tmp_path / "r1")
    t = timings(run(cfg, out_dir=tmp_path / "r2").out_dir).loc["p"]
    assert t.batches_cached == 0 and not (tmp_path / "cache" / "results").exists()


def test_chunk_store_detects_damage_and_keeps_exact_values(tmp_path):
    from evalvae.store import Store

    store = Store(tmp_path)
    values = torch.tensor([[1 / 3, np.inf], [np.nan, -0.0]], dtype=torch.float64)
    store.write("k1", {"x": values}, {"rows": json.dumps([{"psnr": float("inf")}])})
    tensors, meta = store.read("k1")
    assert (
        torch.equal(tensors["x"].nan_to_num(7), values.nan_to_num(7)) and json.loads(meta["rows"])[0]["psnr"] == np.inf
    )
    path = store.path("k1")
    path.write_bytes(path.read_bytes().replace(b"rows", b"rowz"))  # metadata edited: the checksum no longer holds
    assert store.read("k1") is None and not path.exists()
    assert store.read("never-written") is None


def test_cache_ls_and_prune(tmp_path, image_dir, kl_dirs, capsys):
    from evalvae.cache import main

    cache = tmp_path / "cache"
    cfg = compose_run(overrides(image_dir, cache, *vae("a", kl_dirs["a"])))
    run(cfg, out_dir=tmp_path / "r1")
    leftover = cache / "refstats" / ".x.npz.abc.tmp"  # what a write killed half-way leaves
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half")
    main(["--cache-dir", str(cache), "ls"])
    table = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert int(table["latents"][1]) == 2 and int(table["results"][1]) >= 2 and int(table["refstats"][1]) == 1

    main(["--cache-dir", str(cache), "prune", "latents", "--older-than", "1"])  # everything is newer than a day
    assert "removed 1 file(s)" in capsys.readouterr().out and not leftover.exists()
    assert len(list((cache / "latents").rglob("*.safetensors"))) == 2
    main(["--cache-dir", str(cache), "prune", "--dry-run"])
    assert "would remove" in capsys.readouterr().out and (cache / "latents").exists()
    main(["--cache-dir", str(cache), "prune"])  # latents and results
    assert not list((cache / "latents").rglob("*")) and not list((cache / "results").rglob("*"))
    t = timings(run(cfg, out_dir=tmp_path / "r2").out_dir).loc["a"]
    assert (t.batches_cached, t.images_encoded) == (0, N_IMAGES), "pruned work is done again"


def test_a_folder_rewritten_with_other_weights_is_another_vae(tmp_path, image_dir, kl_dirs):
    folder = tmp_path / "my-vae"
    shutil.copytree(kl_dirs["a"], folder)
    cfg = compose_run(overrides(image_dir, tmp_path / "cache", *vae("m", folder)))
    first = run(cfg, out_dir=tmp_path / "r1").out_dir
    shutil.rmtree(folder)
    shutil.copytree(kl_dirs["c"], folder)  # same path, same config, other weights
    second = run(cfg, out_dir=tmp_path / "r2").out_dir
    t = timings(second).loc["m"]
    assert (t.batches_cached, t.images_encoded) == (0, N_IMAGES), "nothing read from the other weights' chunks"
    assert not np.allclose(results(first)[0]["psnr"], results(second)[0]["psnr"])


def test_the_identity_follows_the_files_content_and_is_unknown_before_a_download(tmp_path, kl_dirs):
    from evalvae.jobs.store import vae_identity

    cache = tmp_path / "cache"
    spec = {"_target_": "evalvae.vae.kl.KLAdapter", "source": str(kl_dirs["a"]), "latent_space": "sd"}
    copy = tmp_path / "copy"
    shutil.copytree(kl_dirs["a"], copy)
    assert vae_identity(spec, cache) == vae_identity({**spec, "source": str(copy)}, cache), "content, not place"
    assert vae_identity(spec, cache) != vae_identity({**spec, "source": str(kl_dirs["c"])}, cache)
    assert vae_identity(spec, cache) != vae_identity({**spec, "posterior": "sample"}, cache)
    assert len(list((cache / "hashes").iterdir())) == 3 * len(list(copy.iterdir())), "each file of 3 folders, once"
    url = {"_target_": "x.Tiny", "source": "https://example.invalid/w", "sha256": {"encoder": "e", "decoder": None}}
    assert vae_identity(url, cache) is None, "a download not pinned by its hashes is known only once loaded"
    assert vae_identity({**url, "sha256": {"encoder": "e", "decoder": "d"}}, cache)["files"] == {
        "encoder": "e",
        "decoder": "d",
    }
    assert vae_identity({"source": "someone/not-in-the-cache"}, cache) is None
    assert vae_identity({"source": str(tmp_path / "missing")}, cache) is None


def test_hugging_face_blobs_are_known_by_their_names_and_other_files_by_path_and_stat(tmp_path):
    """A weights file rewritten in place with the same size and modification time is hashed again (its change
    time differs), so the VAE is another one; a run whose folder is rewritten: the test above."""
    from evalvae.checkpoints import file_sha256
    from evalvae.io import sha256_file

    blob = tmp_path / "hub" / "blobs" / ("ab" * 32)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"not what the name says")  # the cache's name is taken, never re-read
    link = tmp_path / "hub" / "snapshots" / "c0" / "model.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(blob)
    assert file_sha256(link, tmp_path / "cache") == "ab" * 32
    f = tmp_path / "w.bin"
    f.write_bytes(b"one")
    assert file_sha256(f, tmp_path / "cache") == sha256_file(f)
    st = f.stat()
    with open(f, "r+b") as out:  # same size and modification time, other content
        out.write(b"two")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_sha256(f, tmp_path / "cache") == sha256_file(f) != file_sha256(blob, tmp_path / "cache")


def test_a_copy_of_the_weights_elsewhere_reads_the_first_runs_results(tmp_path, image_dir, kl_dirs):
    """Results are keyed by the weights' content; vaes.json still names the copy (it is loaded once to say so)."""
    cache = tmp_path / "cache"
    first = run(compose_run(overrides(image_dir, cache, *NO_SAMPLES, *vae("a", kl_dirs["a"]))), out_dir=tmp_path / "r1")
    copy = tmp_path / "elsewhere"
    shutil.copytree(kl_dirs["a"], copy)
    second = run(compose_run(overrides(image_dir, cache, *NO_SAMPLES, *vae("a", copy))), out_dir=tmp_path / "r2")
    assert timings(second.out_dir).loc["a", ["batches_cached", "images_encoded"]].tolist() == [2, 0]
    assert_same_results(first.out_dir, second.out_dir)
    assert json.loads((second.out_dir / "vaes.json").read_text())[0]["source"] == str(copy.resolve())


def test_a_rerun_of_real_taef2_with_pinned_hashes_does_not_load_it(tmp_path, image_dir, taef2_dir, monkeypatch):
    cfg = compose_run(
        overrides(image_dir, tmp_path / "cache", *NO_SAMPLES, "+vae=taef2", f"vae.taef2.source={taef2_dir}")
    )
    first = run(cfg, out_dir=tmp_path / "r1").out_dir
    for where in ("evalvae.jobs.task.load", "evalvae.recon.samples.load"):
        monkeypatch.setattr(where, lambda *a, **k: pytest.fail("taef2 was loaded again"))
    second = run(cfg, out_dir=tmp_path / "r2").out_dir
    assert timings(second).loc["taef2", "batches_cached"] == 2
    assert_same_results(first, second)
