"""The consistency decoder, DC-AE and a class named only in a spec: tiny diffusers stand-ins loaded through
conf/vae and the sources code.

Stand-ins are random-init ``ConsistencyDecoderVAE`` / ``AutoencoderDC`` / ``AutoencoderKLFlux2`` /
``AsymmetricAutoencoderKL`` folders (tests/family_standins.py);
their numbers mean nothing, only shapes, seeding, crops, encoder hashes and the run's plumbing are checked.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.errors import ConfigError
from evalvae.run import run
from evalvae.vae import load_vae
from evalvae.vae.base import UnsupportedMemoryMode
from evalvae.vae.diffusers import DiffusersAdapter
from evalvae.vae.kl import KLAdapter
from tests.family_standins import save_tiny_asymmetric, save_tiny_consistency, save_tiny_dcae, save_tiny_flux2
from tests.helpers import compose_run, photo, save_tiny_kl

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def kl0_dir(tmp_path_factory):
    """The tiny KL stand-in with no shift (as SD 1.x's VAE), whose encoder the consistency stand-in carries."""
    return save_tiny_kl(tmp_path_factory.mktemp("kl0") / "kl", scaling=0.5, shift=0.0)


@pytest.fixture(scope="module")
def cd_dir(tmp_path_factory, kl0_dir):
    return save_tiny_consistency(tmp_path_factory.mktemp("cd") / "cd", kl_dir=kl0_dir)


@pytest.fixture(scope="module")
def dc_dir(tmp_path_factory):
    return save_tiny_dcae(tmp_path_factory.mktemp("dc") / "dc")


def loaded(name: str, source, *overrides):
    cfg = compose_run([f"+vae={name}", f"vae.{name}.source={source}", *overrides])
    return load_vae(name, cfg.vae[name], device="cpu")


def images(n: int, h: int, w: int) -> torch.Tensor:
    x = np.stack([photo(h, w, seed=i) for i in range(n)])
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1


# -- consistency ------------------------------------------------------------------------------------
def test_consistency_encodes_as_the_kl_encoder_it_carries(cd_dir, kl0_dir):
    vae = loaded("consistency", cd_dir)
    kl = KLAdapter("kl", str(kl0_dir), latent_space="sd")
    assert (vae.family, vae.latent_channels, vae.downsample, vae.scaling_factor) == ("consistency-decoder", 4, 2, 0.5)
    x = images(3, 32, 48)
    z = vae.encode(x)
    assert z.shape == (3, 4, 16, 24)
    torch.testing.assert_close(z, kl.encode(x), rtol=0, atol=1e-6)  # same network, same scale, no shift
    assert vae.encoder_hash == kl.encoder_hash and vae.encoder_kind == kl.encoder_kind
    y = vae.decode(z)
    assert y.shape == (3, 3, 32, 48) and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert 0.05 < float(y.std()) < 10  # not a constant, not blown up (random weights: no range promise)
    info = vae.describe()
    assert (info["decoder_steps"], info["decoder_seed"], info["latent_space"]) == (2, 0, "sd")


def test_consistency_decode_is_seeded_per_image_whatever_the_batch(cd_dir):
    vae = loaded("consistency", cd_dir)
    z = vae.encode(images(4, 32, 32))
    whole = vae.decode(z, seeds=[10, 11, 12, 13])
    parts = torch.cat([vae.decode(z[:1], seeds=[10]), vae.decode(z[1:], seeds=[11, 12, 13])])
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-5)
    reordered = vae.decode(z[[2, 0]], seeds=[12, 10])
    torch.testing.assert_close(reordered, whole[[2, 0]], rtol=0, atol=1e-5)
    vae.set_memory_mode("sliced")
    torch.testing.assert_close(vae.decode(z, seeds=[10, 11, 12, 13]), whole, rtol=0, atol=1e-5)
    vae.set_memory_mode("plain")
    # the noise matters: another seed, or the VAE's own seed, changes the decode
    assert (vae.decode(z[:1], seeds=[99]) - whole[:1]).abs().max() > 1e-3
    reseeded = loaded("consistency", cd_dir, "vae.consistency.seed=5")
    assert (reseeded.decode(z[:1], seeds=[10]) - whole[:1]).abs().max() > 1e-3
    torch.testing.assert_close(reseeded.decode(z[:1], seeds=[5]), vae.decode(z[:1], seeds=[10]), rtol=0, atol=1e-5)


def test_consistency_has_no_tiled_mode_and_only_diffusers_step_count(cd_dir):
    vae = loaded("consistency", cd_dir)
    with pytest.raises(UnsupportedMemoryMode, match=r"'consistency' \(consistency-decoder\) has no tiled mode"):
        vae.set_memory_mode("tiled")
    with pytest.raises(ConfigError, match=r"vae\.consistency\.steps=4.*2.*exactly 2 steps"):
        loaded("consistency", cd_dir, "vae.consistency.steps=4")
    single = cd_dir / "diffusion_pytorch_model.safetensors"
    with pytest.raises(ConfigError, match=r"vae\.consistency\.source=.*no single-file loader"):
        loaded("consistency", single)


def folder_run(tmp_path, image_dir, *vaes_overrides, extra=()):
    cfg = compose_run(
        [
            *vaes_overrides,
            "dataset=folder",
            f"dataset.path={image_dir}",
            "device=cpu",
            "workers=0",
            f"cache_dir={tmp_path / 'cache'}",
            *extra,
        ]
    )
    return run(cfg, out_dir=tmp_path / "out").out_dir


def test_a_run_with_kl_f8_encodes_once_for_the_consistency_decoder(tmp_path, image_dir, kl0_dir, cd_dir, caplog):
    with caplog.at_level(logging.INFO):
        out = folder_run(
            tmp_path,
            image_dir,
            "+vae=[kl-f8,consistency]",
            f"vae.kl-f8.source={kl0_dir}",
            f"vae.consistency.source={cd_dir}",
            extra=["dataset.resolution=32", "batch_size=4"],
        )
    t = pd.read_csv(out / "timings.csv").set_index("vae")
    assert t.loc["kl-f8", "images_encoded"] == 6
    assert (t.loc["consistency", "images_encoded"], t.loc["consistency", "latents_cached"]) == (0, 6)
    assert "VAE 'consistency' has the same encoder as 'kl-f8'" in caplog.text
    vaes = {v["vae"]: v for v in json.loads((out / "vaes.json").read_text())}
    assert vaes["consistency"]["encoder_sha256"] == vaes["kl-f8"]["encoder_sha256"]
    assert (vaes["consistency"]["decoder_steps"], vaes["consistency"]["decoder_seed"]) == (2, 0)
    per = pd.read_parquet(out / "per_image.parquet")
    mine = per[per.vae == "consistency"].set_index("image")
    assert len(mine) == 6 and np.isfinite(mine.psnr).all() and (mine.height == 32).all()
    # a batch of 1 gives the same reconstructions: image i is seeded with seed + i, not by its place in a batch
    alone = folder_run(
        tmp_path / "b1",
        image_dir,
        "+vae=consistency",
        f"vae.consistency.source={cd_dir}",
        extra=["dataset.resolution=32", "batch_size=1"],
    )
    other = pd.read_parquet(alone / "per_image.parquet").set_index("image").loc[mine.index]
    np.testing.assert_allclose(other.psnr, mine.psnr, rtol=1e-6)


# -- DC-AE ------------------------------------------------------------------------------------------
def test_dcae_downsamples_32x_scales_by_its_config_and_has_diffusers_memory_modes(dc_dir):
    vae = loaded("dc-ae-f32c32", dc_dir)
    assert (vae.family, vae.latent_channels, vae.downsample, vae.scaling_factor) == ("dc-ae", 4, 32, 0.4)
    x = images(2, 64, 96)
    z = vae.encode(x)
    assert z.shape == (2, 4, 2, 3)
    raw, std = vae._moments(x)
    assert std is None  # deterministic latents: posterior=sample changes nothing
    torch.testing.assert_close(z, raw * 0.4)
    y = vae.decode(z)
    assert y.shape == (2, 3, 64, 96) and torch.isfinite(y).all()
    assert set(vae.encoder_state_dict()) and all(k.startswith("encoder.") for k in vae.encoder_state_dict())
    assert vae.describe()["crop"] == "centre-cropped to a multiple of 32 px (the downsampling factor)"
    # its memory modes are diffusers' own
    vae.set_memory_mode("sliced")
    torch.testing.assert_close(vae.decode(vae.encode(x)), y, rtol=0, atol=1e-5)
    vae.set_memory_mode("tiled", 64)  # 96 px wide: two tiles of 64 overlapping by 32
    m = vae.module
    assert m.use_tiling and (m.tile_sample_min_width, m.tile_sample_stride_width) == (64, 32)
    tiled = vae.decode(vae.encode(x[:1]))
    assert tiled.shape == (1, 3, 64, 96) and torch.isfinite(tiled).all()
    with pytest.raises(Exception, match="a multiple of 32"):
        vae.set_memory_mode("tiled", 48)


def test_dcae_run_crops_native_images_to_a_multiple_of_32(tmp_path, dc_dir):
    folder = tmp_path / "native"
    folder.mkdir()
    Image.fromarray(photo(70, 100, seed=1)).save(folder / "wide.png")  # 100 x 70 px
    Image.fromarray(photo(64, 64, seed=2)).save(folder / "square.png")
    out = folder_run(
        tmp_path, folder, "+vae=dc-ae-f32c32", f"vae.dc-ae-f32c32.source={dc_dir}", extra=["dataset.crop=none"]
    )
    per = pd.read_parquet(out / "per_image.parquet").set_index("image")
    assert (per.loc["wide.png", ["width", "height"]] == [96, 64]).all()
    assert (per.loc["square.png", ["width", "height"]] == [64, 64]).all()
    assert np.isfinite(per.psnr).all()
    (record,) = json.loads((out / "vaes.json").read_text())
    assert record["downsample"] == 32 and "multiple of 32" in record["crop"]
    protocol = json.loads((out / "metrics.json").read_text())
    assert "multiple of each VAE's downsampling factor" in protocol["dataset"]["note"]


# -- a diffusers class named in a spec, no code -------------------------------------------------------
def named(cls: str, source, **extra) -> dict:
    """What a YAML of conf/vae/ holds for a diffusers class no adapter module names."""
    target = f"{DiffusersAdapter.__module__}.DiffusersAdapter"
    return {"_target_": target, "cls": cls, "source": str(source), "latent_space": "x", **extra}


def test_a_diffusers_class_named_in_a_spec_runs_with_diffusers_own_modes(tmp_path, image_dir):
    from diffusers import AutoencoderKLFlux2

    folder = save_tiny_flux2(tmp_path / "flux2")
    vae = load_vae("f2", named("AutoencoderKLFlux2", folder), device="cpu")
    assert (vae.family, vae.latent_channels, vae.downsample, vae.scaling_factor, vae.shift_factor) == (
        "AutoencoderKLFlux2",
        4,
        2,
        1.0,  # its config has no factors
        0.0,
    )
    assert vae.encoder_kind.endswith("DiffusersAdapter:AutoencoderKLFlux2") and vae.default_tile_size == 32
    model = AutoencoderKLFlux2.from_pretrained(folder).eval()
    x = images(2, 32, 32)
    with torch.no_grad():
        mean = model.encode(x).latent_dist.mean
        torch.testing.assert_close(vae.encode(x), mean)  # the posterior's mode
        torch.testing.assert_close(vae.decode(mean), model.decode(mean).sample)
    scaled = load_vae("f2", named("AutoencoderKLFlux2", folder, scaling_factor=0.5, shift_factor=0.1), device="cpu")
    torch.testing.assert_close(scaled.encode(x), (mean - 0.1) * 0.5)
    vae.set_memory_mode("tiled", 16)  # diffusers' own tiling, as AutoencoderKL's
    m = vae.module
    assert m.use_tiling and (m.tile_sample_min_size, m.tile_latent_min_size) == (16, 8)
    assert vae.decode(mean).shape == x.shape and vae.decode_seams(16, 16) != ([], [])
    vae.set_memory_mode("sliced")
    assert m.use_slicing and not m.use_tiling

    spec = f"{{_target_: evalvae.vae.diffusers.DiffusersAdapter, cls: AutoencoderKLFlux2, latent_space: x, source: {folder}}}"
    out = folder_run(tmp_path, image_dir, f"+vae.f2={spec}", extra=["dataset.resolution=32"])
    (record,) = json.loads((out / "vaes.json").read_text())
    assert (record["status"], record["family"], record["latent_channels"]) == ("ok", "AutoencoderKLFlux2", 4)
    assert np.isfinite(pd.read_parquet(out / "per_image.parquet").psnr).all()


def test_a_class_without_diffusers_tiling_has_no_tiled_mode_and_slices_generically(tmp_path):
    vae = load_vae("a", named("AsymmetricAutoencoderKL", save_tiny_asymmetric(tmp_path / "a")), device="cpu")
    assert vae.memory_modes == ("plain", "sliced") and vae.family == "AsymmetricAutoencoderKL"
    x = images(2, 32, 32)
    plain = vae.decode(vae.encode(x))
    vae.set_memory_mode("sliced")  # one image at a time, by evalvae (the class has no enable_slicing)
    torch.testing.assert_close(vae.decode(vae.encode(x)), plain, rtol=0, atol=1e-5)  # measured 8e-6
    with pytest.raises(UnsupportedMemoryMode, match="'a' .AsymmetricAutoencoderKL. has no tiled mode"):
        vae.set_memory_mode("tiled", 16)


def test_a_class_diffusers_lacks_is_one_line_naming_the_field(tmp_path, kl0_dir):
    for cls in ("AutoencoderKLNope", "not a name"):
        with pytest.raises(ConfigError, match=rf"invalid vae\.x\.cls='{cls}'; a diffusers autoencoder class") as e:
            load_vae("x", named(cls, kl0_dir), device="cpu")
        assert "\n" not in str(e.value)
    file = kl0_dir / "diffusion_pytorch_model.safetensors"
    with pytest.raises(ConfigError, match="no single-file loader for AsymmetricAutoencoderKL"):
        load_vae("x", named("AsymmetricAutoencoderKL", file), device="cpu")


# -- both -------------------------------------------------------------------------------------------
def test_bench_measures_both_and_states_what_it_cannot_run(tmp_path, image_dir, cd_dir, dc_dir):
    from evalvae.bench.runner import bench

    fast = ["device=cpu", "bench.isolate=none", "bench.warmup=0", "bench.repeats=1", "bench.min_repeats=1"]
    common = [*fast, "dataset=folder", f"dataset.path={image_dir}", f"cache_dir={tmp_path / 'cache'}"]
    grid = ["bench.dtypes=[fp32,bf16]", "bench.modes=[plain,tiled]", "bench.ops=[decode]", "bench.plots=false"]
    cfg = compose_run(
        [
            *common,
            *grid,
            "+vae=[consistency,dc-ae-f32c32]",
            f"vae.consistency.source={cd_dir}",
            f"vae.dc-ae-f32c32.source={dc_dir}",
            "bench.resolutions=[64]",
            "bench.tile_size=64",
        ],
        "bench",
    )
    df = bench(cfg, out_dir=tmp_path / "out").results.set_index(["vae", "mode", "dtype"])
    assert (df.loc[("consistency", "plain"), "status"] == "ok").all()
    assert (df.loc[("consistency", "tiled"), "status"] == "unsupported").all()
    assert str(df.loc[("consistency", "tiled", "fp32"), "error"]).endswith("it runs plain, sliced")
    assert (df.loc["dc-ae-f32c32", "status"] == "ok").all(), df.loc["dc-ae-f32c32", "error"].tolist()
    # bf16 against fp32 on the same latents (and, for the consistency decoder, the same noise seeds)
    assert 15 < df.loc[("consistency", "plain", "bf16"), "lowp_psnr_vs_fp32"] < 120
    bad = compose_run(
        [*common, *grid, "+vae=dc-ae-f32c32", f"vae.dc-ae-f32c32.source={dc_dir}", "bench.resolutions=[48]"], "bench"
    )
    outcome = bench(bad, out_dir=tmp_path / "bad")
    assert "multiples of its downsampling factor 32" in outcome.failed["dc-ae-f32c32"]
