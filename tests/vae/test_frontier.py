"""The 2025-2026 families (FLUX.2, Qwen-Image, Wan, SD3.5, HunyuanImage, RAE, DC-AE f64/f128/lite) and the generic
``+vae=diffusers`` entry: each YAML composes and fails offline in one line naming its hub id; a tiny random-init
stand-in (tests/frontier_standins.py) loads through the YAML, round-trips images, and its diffusion-space latents
equal what the family's diffusers pipeline code computes (the pipeline's own helpers where they can be called,
else the quoted pipeline lines computed here independently).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from evalvae.errors import ConfigError, WeightsUnavailable
from evalvae.jobs.schema import validate
from evalvae.vae import load_vae
from evalvae.vae.base import UnsupportedMemoryMode
from tests.family_standins import save_tiny_dcae
from tests.frontier_standins import (
    save_tiny_dcae_f,
    save_tiny_flux2_bn,
    save_tiny_hunyuanimage,
    save_tiny_qwen_image,
    save_tiny_qwen_image21,
    save_tiny_rae,
    save_tiny_wan21,
    save_tiny_wan22,
)
from tests.helpers import compose_run, photo, save_tiny_kl

pytestmark = pytest.mark.usefixtures("one_thread")

# name: (hub id, subfolder, latent space, crop factor of the released model)
FAMILIES = {
    "flux2": ("black-forest-labs/FLUX.2-dev", "vae", "flux2", 16),
    "qwen-image": ("Qwen/Qwen-Image", "vae", "qwen-image", 8),
    "wan21": ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "vae", "wan21", 8),
    "wan22": ("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "vae", "wan22", 16),
    "qwen-image-21": ("Qwen/Qwen-Image-2.1", "vae", "qwen-image-21", 16),
    "hunyuanimage-21": ("hunyuanvideo-community/HunyuanImage-2.1-Diffusers", "vae", "hunyuanimage-21", 32),
    "rae-dinov2-b": ("nyu-visionx/RAE-dinov2-wReg-base-ViTXL-n08", None, "rae-dinov2-b", 16),
    "sd35": ("stabilityai/stable-diffusion-3.5-large", "vae", "sd3", 8),
    "dc-ae-f64c128": ("mit-han-lab/dc-ae-f64c128-mix-1.0-diffusers", None, "dc-ae-f64c128-mix", 64),
    "dc-ae-f128c512": ("mit-han-lab/dc-ae-f128c512-mix-1.0-diffusers", None, "dc-ae-f128c512-mix", 128),
    "dc-ae-lite-f32c32": ("dc-ai/dc-ae-lite-f32c32-diffusers", None, "sana", 32),
}


def loaded(name: str, source, *overrides):
    cfg = compose_run([f"+vae={name}", f"vae.{name}.source={source}", *overrides])
    return load_vae(name, cfg.vae[name], device="cpu")


def images(n: int, h: int, w: int) -> torch.Tensor:
    x = np.stack([photo(h, w, seed=i) for i in range(n)])
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1


def crop_line(f: int) -> str:
    return f"centre-cropped to a multiple of {f} px (the downsampling factor)"


def round_trip(vae, x: torch.Tensor, latent_shape: tuple) -> torch.Tensor:
    """Encode and decode ``x``; the latents have ``latent_shape``, the decode ``x``'s shape; returns the latents."""
    z = vae.encode(x)
    assert tuple(z.shape) == latent_shape
    y = vae.decode(z)
    assert y.shape == x.shape and y.dtype == torch.float32 and torch.isfinite(y).all()
    torch.testing.assert_close(vae.normalize(vae.denormalize(z)), z, rtol=0, atol=1e-5)  # denormalize inverts it
    raw = vae._moments(x.to(vae.dtype))[0]
    torch.testing.assert_close(vae.denormalize(z), raw, rtol=0, atol=1e-5)
    return z


# -- every family: the YAML ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_yaml_composes_and_validates(name):
    hub_id, subfolder, space, _ = FAMILIES[name]
    cfg = validate(compose_run([f"+vae={name}", f"vae.{name}.dtype=bf16"]), "run")  # a name Hydra keys can address
    spec = cfg.vae[name]
    assert (spec.source, spec.subfolder, spec.latent_space, spec.dtype) == (hub_id, subfolder, space, "bf16")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_offline_the_load_fails_in_one_line_naming_the_hub_id(name):
    hub_id = FAMILIES[name][0]
    cfg = compose_run([f"+vae={name}"])
    with pytest.raises(WeightsUnavailable) as err:
        load_vae(name, cfg.vae[name], device="cpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"VAE '{name}'" in msg and f"'{hub_id}'" in msg and f"vae.{name}.source=" in msg


# -- FLUX.2 -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flux2_dir(tmp_path_factory):
    return save_tiny_flux2_bn(tmp_path_factory.mktemp("flux2") / "vae")


def test_flux2_latents_are_flux2_pipelines(flux2_dir):
    from diffusers import AutoencoderKLFlux2
    from diffusers.pipelines.flux2.pipeline_flux2 import Flux2Pipeline

    vae = loaded("flux2", flux2_dir)
    assert (vae.family, vae.latent_channels, vae.downsample) == ("flux2", 16, 4)  # 4 raw channels at f2, patchified
    assert (vae.scaling_factor, vae.shift_factor) == (1.0, 0.0)
    x = images(2, 32, 48)
    z = round_trip(vae, x, (2, 16, 8, 12))

    model = AutoencoderKLFlux2.from_pretrained(flux2_dir).eval()
    assert not torch.allclose(model.bn.running_mean, torch.zeros(16))  # the stand-in's statistics are not identity
    with torch.no_grad():
        # the pipeline's own encoding: Flux2Pipeline._encode_vae_image (argmax, _patchify_latents, batch norm)
        pipe = SimpleNamespace(vae=model, _patchify_latents=Flux2Pipeline._patchify_latents)
        expected = Flux2Pipeline._encode_vae_image(pipe, x, generator=None)
        torch.testing.assert_close(z, expected, rtol=0, atol=1e-6)
        # its decoding (Flux2Pipeline.__call__, after _unpack_latents_with_ids):
        #   latents_bn_mean = self.vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        #   latents_bn_std = torch.sqrt(self.vae.bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps)
        #   latents = latents * latents_bn_std + latents_bn_mean
        #   latents = self._unpatchify_latents(latents)
        #   image = self.vae.decode(latents, return_dict=False)[0]
        mean = model.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(model.bn.running_var.view(1, -1, 1, 1) + model.config.batch_norm_eps)
        raw = Flux2Pipeline._unpatchify_latents(expected * std + mean)
        torch.testing.assert_close(vae.denormalize(z), raw, rtol=0, atol=1e-6)
        torch.testing.assert_close(vae.decode(z), model.decode(raw, return_dict=False)[0], rtol=0, atol=1e-5)


def test_flux2_states_its_crop_and_keys_its_cache_by_the_statistics(tmp_path, flux2_dir):
    vae = loaded("flux2", flux2_dir)
    info = vae.describe()
    assert info["crop"] == crop_line(4) and "batch_norm_eps" in info["latent_normalization"]
    assert {"bn.running_mean", "bn.running_var"} <= set(vae.encoder_state_dict())
    other = save_tiny_flux2_bn(tmp_path / "other", seed=0)  # same weights
    from diffusers import AutoencoderKLFlux2

    m = AutoencoderKLFlux2.from_pretrained(other)
    m.bn.running_mean.add_(1.0)  # other statistics: other latents, so another cache key
    m.save_pretrained(other)
    assert loaded("flux2", other).encoder_hash != vae.encoder_hash
    with pytest.raises(Exception, match=r"vae\.flux2\.scaling_factor=.*batch-norm"):
        loaded("flux2", flux2_dir, "+vae.flux2.scaling_factor=0.5")


def test_flux2_tiles_on_raw_latents(flux2_dir):
    vae = loaded("flux2", flux2_dir)
    x = images(1, 32, 48)
    plain = vae.decode(vae.encode(x))
    vae.set_memory_mode("tiled", 16)  # 16 px tiles: 8 raw latent pixels at f2
    m = vae.module
    assert m.use_tiling and (m.tile_sample_min_size, m.tile_latent_min_size) == (16, 8)
    z = vae.encode(x)
    assert z.shape == (1, 16, 8, 12)
    assert vae.decode(z).shape == plain.shape and vae.decode_seams(8, 12) != ([], [])
    with pytest.raises(Exception, match="a multiple of 4"):
        vae.set_memory_mode("tiled", 18)


# -- the Wan-derived video autoencoders: one frame, per-channel statistics ---------------------------------
def pipeline_decode_input(model, latents: torch.Tensor) -> torch.Tensor:
    """What QwenImagePipeline.__call__ and WanPipeline.__call__ hand vae.decode (diffusers 0.42), for 4-D latents:

    latents_mean = torch.tensor(self.vae.config.latents_mean).view(1, self.vae.config.z_dim, 1, 1, 1).to(...)
    latents_std = 1.0 / torch.tensor(self.vae.config.latents_std).view(1, self.vae.config.z_dim, 1, 1, 1).to(...)
    latents = latents / latents_std + latents_mean
    """
    cfg = model.config
    mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1)
    latents_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1)
    return latents.unsqueeze(2) / latents_std + mean


def check_one_frame_decode(vae, model, z: torch.Tensor) -> None:
    """The adapter decodes ``z`` as the pipelines do: ``vae.decode(latents, return_dict=False)[0][:, :, 0]``."""
    raw = pipeline_decode_input(model, z)
    assert not torch.allclose(raw, z.unsqueeze(2))  # the stand-in's statistics are not identity
    torch.testing.assert_close(vae.denormalize(z), raw[:, :, 0], rtol=0, atol=1e-6)
    with torch.no_grad():
        expected = model.decode(raw, return_dict=False)[0][:, :, 0]
    torch.testing.assert_close(vae.decode(z), expected, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return save_tiny_qwen_image(tmp_path_factory.mktemp("qwen") / "vae")


def test_qwen_image_latents_are_the_qwen_image_pipelines(qwen_dir):
    from diffusers import AutoencoderKLQwenImage
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import QwenImageEditPipeline
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_img2img import QwenImageImg2ImgPipeline

    vae = loaded("qwen-image", qwen_dir)
    assert (vae.family, vae.latent_channels, vae.downsample) == ("qwen-image", 4, 2)
    x = images(2, 32, 48)
    z = round_trip(vae, x, (2, 4, 16, 24))
    model = AutoencoderKLQwenImage.from_pretrained(qwen_dir).eval()
    with torch.no_grad():
        # the edit pipeline's own encoding (argmax; it divides by the std where img2img multiplies by its inverse)
        pipe = SimpleNamespace(vae=model, latent_channels=4)
        expected = QwenImageEditPipeline._encode_vae_image(pipe, x.unsqueeze(2), generator=None)
        torch.testing.assert_close(z, expected[:, :, 0], rtol=1e-6, atol=1e-6)
        # img2img's, which samples: posterior=sample draws image i's noise as it does from a generator seeded seed + i
        sampled = loaded("qwen-image", qwen_dir, "vae.qwen-image.posterior=sample", "+vae.qwen-image.seed=7")
        zs = sampled.encode(x)
        for i in range(2):
            g = torch.Generator().manual_seed(7 + i)
            ref = QwenImageImg2ImgPipeline._encode_vae_image(SimpleNamespace(vae=model), x[i : i + 1, :, None], g)
            torch.testing.assert_close(zs[i : i + 1], ref[:, :, 0], rtol=0, atol=1e-6)
    assert (zs - z).abs().max() > 1e-3
    check_one_frame_decode(vae, model, z)
    info = vae.describe()
    assert info["crop"] == crop_line(2) and "latents_std" in info["latent_normalization"] and "frames" in info
    assert {"latents_mean", "latents_std"} <= set(vae.encoder_state_dict())


@pytest.mark.parametrize(
    ("name", "save", "factor", "channels"), [("wan21", save_tiny_wan21, 2, 4), ("wan22", save_tiny_wan22, 4, 6)]
)
def test_wan_latents_are_the_wan_pipelines(tmp_path, name, save, factor, channels):
    from diffusers import AutoencoderKLWan
    from diffusers.pipelines.wan.pipeline_wan_video2video import WanVideoToVideoPipeline

    folder = save(tmp_path / "vae")
    vae = loaded(name, folder)
    assert (vae.family, vae.latent_channels, vae.downsample) == ("wan", channels, factor)
    x = images(2, 32, 48)
    z = round_trip(vae, x, (2, channels, 32 // factor, 48 // factor))
    model = AutoencoderKLWan.from_pretrained(folder).eval()
    with torch.no_grad():
        # the video-to-video pipeline's own encoding (argmax, then (z - mean) * (1 / std)), its noising switched off
        pipe = SimpleNamespace(
            vae=model,
            vae_scale_factor_temporal=model.config.scale_factor_temporal,
            vae_scale_factor_spatial=model.config.scale_factor_spatial,
            scheduler=SimpleNamespace(scale_noise=lambda latents, timestep, noise: latents),
        )
        expected = WanVideoToVideoPipeline.prepare_latents(
            pipe, x.unsqueeze(2), 2, channels, 32, 48, torch.float32, torch.device("cpu"), timestep=0
        )
    torch.testing.assert_close(z, expected[:, :, 0], rtol=0, atol=1e-6)
    check_one_frame_decode(vae, model, z)
    assert vae.describe()["crop"] == crop_line(factor)


def test_wan_tiles_and_slices_with_diffusers_own_modes(tmp_path):
    vae = loaded("wan21", save_tiny_wan21(tmp_path / "vae"))
    x = images(2, 32, 48)
    plain = vae.decode(vae.encode(x))
    vae.set_memory_mode("sliced")
    assert vae.module.use_slicing
    torch.testing.assert_close(vae.decode(vae.encode(x)), plain, rtol=0, atol=1e-5)
    vae.set_memory_mode("tiled", 16)  # 48 px wide: tiles of 16 overlapping by 4
    m = vae.module
    assert m.use_tiling and (m.tile_sample_min_width, m.tile_sample_stride_width) == (16, 12)
    assert vae.decode(vae.encode(x[:1])).shape == (1, 3, 32, 48)


def test_qwen_image_21_latents_are_its_pipelines_with_an_opaque_alpha(tmp_path):
    from diffusers import AutoencoderKLQwenImage21
    from diffusers.pipelines.qwenimage21.pipeline_qwenimage21 import QwenImage21Pipeline

    folder = save_tiny_qwen_image21(tmp_path / "vae")
    vae = loaded("qwen-image-21", folder)
    assert (vae.family, vae.latent_channels, vae.downsample) == ("qwen-image-2.1", 8, 2)
    x = images(2, 32, 48)
    z = round_trip(vae, x, (2, 8, 16, 24))
    model = AutoencoderKLQwenImage21.from_pretrained(folder).eval()
    rgba = torch.cat([x, torch.ones_like(x[:, :1])], 1)  # the pipeline's RGBA conversion: alpha 255, 1 in [-1, 1]
    with torch.no_grad():
        pipe = SimpleNamespace(vae=model, latent_channels=8)
        expected = QwenImage21Pipeline._encode_vae_image(pipe, rgba.unsqueeze(2), generator=None)
        torch.testing.assert_close(z, expected[:, :, 0], rtol=0, atol=1e-6)
        # QwenImage21Pipeline.__call__:
        #   latents = latents * latents_std + latents_mean
        #   image = self.vae.decode(latents, return_dict=False)[0][:, :, 0]
        cfg = model.config
        mean = torch.tensor(cfg.latents_mean).view(1, 8, 1, 1, 1)
        std = torch.tensor(cfg.latents_std).view(1, 8, 1, 1, 1)
        image = model.decode(z.unsqueeze(2) * std + mean, return_dict=False)[0][:, :, 0]
    assert image.shape[1] == 4
    torch.testing.assert_close(vae.decode(z), image[:, :3], rtol=0, atol=1e-5)  # the alpha dropped
    info = vae.describe()
    assert info["crop"] == crop_line(2) and "alpha" in info and "/ latents_std" in info["latent_normalization"]


# -- SD3.5 ----------------------------------------------------------------------------------------------
def test_sd35_latents_are_the_sd3_pipelines(tmp_path):
    from diffusers import AutoencoderKL

    folder = save_tiny_kl(tmp_path / "vae", latent_channels=16, scaling=1.5305, shift=0.0609)
    vae = loaded("sd35", folder)
    assert (vae.family, vae.latent_channels, vae.downsample) == ("autoencoder-kl", 16, 2)
    x = images(2, 32, 48)
    z = round_trip(vae, x, (2, 16, 16, 24))
    model = AutoencoderKL.from_pretrained(folder).eval()
    with torch.no_grad():
        # StableDiffusion3Img2ImgPipeline.prepare_latents (diffusers 0.42), after retrieve_latents (argmax here):
        #   init_latents = (init_latents - self.vae.config.shift_factor) * self.vae.config.scaling_factor
        mean = model.encode(x).latent_dist.mode()
        torch.testing.assert_close(z, (mean - 0.0609) * 1.5305, rtol=0, atol=1e-6)
        # StableDiffusion3Pipeline.__call__:
        #   latents = (latents / self.vae.config.scaling_factor) + self.vae.config.shift_factor
        #   image = self.vae.decode(latents, return_dict=False)[0]
        expected = model.decode((z / 1.5305) + 0.0609, return_dict=False)[0]
        torch.testing.assert_close(vae.decode(z), expected, rtol=0, atol=1e-5)


# -- DC-AE f64, f128, lite ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "factor"), [("dc-ae-f64c128", 64), ("dc-ae-f128c512", 128), ("dc-ae-lite-f32c32", 32)]
)
def test_dcae_variants_crop_to_their_factor_with_the_sana_scaling(tmp_path, name, factor):
    from diffusers import AutoencoderDC

    folder = save_tiny_dcae(tmp_path / "vae") if factor == 32 else save_tiny_dcae_f(tmp_path / "vae", factor)
    vae = loaded(name, folder)
    assert (vae.family, vae.downsample) == ("dc-ae", factor)
    assert vae.describe()["crop"] == crop_line(factor)
    x = images(1, factor, 2 * factor)
    z = round_trip(vae, x, (1, 4, 1, 2))
    model = AutoencoderDC.from_pretrained(folder).eval()
    scale = model.config.scaling_factor
    with torch.no_grad():
        # the SANA pipelines decode (SanaPipeline.__call__):
        #   image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        # and encode with the inverse, latent * scaling_factor (SanaSprintImg2ImgPipeline, before sigma_data)
        torch.testing.assert_close(z, model.encode(x).latent * scale, rtol=0, atol=1e-6)
        expected = model.decode(z / scale, return_dict=False)[0]
        torch.testing.assert_close(vae.decode(z), expected, rtol=0, atol=1e-5)


# -- HunyuanImage 2.1 ------------------------------------------------------------------------------------
def test_hunyuanimage_latents_are_the_hunyuanimage_pipelines(tmp_path):
    from diffusers import AutoencoderKLHunyuanImage

    folder = save_tiny_hunyuanimage(tmp_path / "vae")
    vae = loaded("hunyuanimage-21", folder)
    assert (vae.family, vae.latent_channels, vae.downsample, vae.scaling_factor) == ("hunyuanimage", 4, 4, 0.75)
    x = images(2, 32, 48)
    z = round_trip(vae, x, (2, 4, 8, 12))
    model = AutoencoderKLHunyuanImage.from_pretrained(folder).eval()
    with torch.no_grad():
        # HunyuanImagePipeline.__call__ (diffusers 0.42; it encodes no images, so encoding is the inverse):
        #   latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        #   image = self.vae.decode(latents, return_dict=False)[0]
        torch.testing.assert_close(z, model.encode(x).latent_dist.mode() * 0.75, rtol=0, atol=1e-6)
        expected = model.decode(z / 0.75, return_dict=False)[0]
    torch.testing.assert_close(vae.decode(z), expected, rtol=0, atol=1e-5)
    assert vae.describe()["crop"] == crop_line(4)
    with pytest.raises(UnsupportedMemoryMode, match="has no tiled mode"):
        vae.set_memory_mode("tiled", 16)
    plain = vae.decode(z)
    vae.set_memory_mode("sliced")
    assert vae.module.use_slicing
    torch.testing.assert_close(vae.decode(vae.encode(x)), plain, rtol=0, atol=1e-5)


# -- RAE ------------------------------------------------------------------------------------------------
def test_rae_latents_are_the_models_own_normalized_tokens(tmp_path):
    from diffusers import AutoencoderRAE

    folder = save_tiny_rae(tmp_path / "vae")
    vae = loaded("rae-dinov2-b", folder)
    assert (vae.family, vae.latent_channels, vae.downsample, vae.image_size) == ("rae", 64, 16, 32)
    x = images(2, 32, 32)
    z = round_trip(vae, x, (2, 64, 2, 2))
    model = AutoencoderRAE.from_pretrained(folder).eval()
    with torch.no_grad():
        # no RAE pipeline in diffusers 0.42: the diffusion space is the class's own encode (images in [0, 1], as its
        # tests feed to_tensor(image)), which normalizes the tokens itself:
        #   z = (z - latents_mean) / (latents_std + 1e-5);  z = z * scaling_factor
        tokens = model.encoder(model._resize_and_normalize((x + 1) / 2), output_hidden_states=True)
        grid = tokens.last_hidden_state[:, 5:].transpose(1, 2).reshape(2, 64, 2, 2)  # 1 CLS + 4 registers dropped
        mean, std = model._latents_mean, model._latents_std
        assert not torch.allclose(mean, torch.zeros_like(mean))  # the stand-in's statistics are not identity
        torch.testing.assert_close(z, (grid - mean) / (std + 1e-5) * 0.8, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vae.decode(z), model.decode(z).sample * 2 - 1, rtol=0, atol=1e-5)
    assert {"_latents_mean", "_latents_std", "encoder_mean"} <= set(vae.encoder_state_dict())
    info = vae.describe()
    assert info["crop"].startswith(crop_line(16) + "; only 32x32 images are reconstructed")
    # an image the decoder cannot write at its size is left out with the reason, before the encoder sees it
    small = torch.zeros(1, 3, 48, 40, dtype=torch.uint8)
    assert vae.prepare_group(["a"], small) == {
        "a": "an RAE decodes 32x32 px images only, not 32x48 (set dataset.resolution=32)"
    }
    assert vae.prepare_group(["b"], torch.zeros(1, 3, 40, 47, dtype=torch.uint8)) == {}  # cropped to 32x32
    with pytest.raises(UnsupportedMemoryMode, match="has no tiled mode"):
        vae.set_memory_mode("tiled", 32)


# -- the generic entry: +vae=diffusers --------------------------------------------------------------------
def generic(source, cls: str, *overrides):
    return loaded("diffusers", source, f"vae.diffusers.cls={cls}", *overrides)


def test_the_generic_entry_needs_a_class_and_a_source():
    with pytest.raises(ConfigError) as err:
        validate(compose_run(["+vae=diffusers"]), "run")
    named = [p.argument for p in getattr(err.value, "problems", [err.value])]
    assert named == ["vae.diffusers.cls", "vae.diffusers.source"]
    cfg = compose_run(["+vae=diffusers", "vae.diffusers.cls=AutoencoderKLWan", "vae.diffusers.source=Org/Some-Model"])
    with pytest.raises(WeightsUnavailable) as err:  # offline
        load_vae("diffusers", cfg.vae.diffusers, device="cpu")
    assert "\n" not in str(err.value) and "VAE 'diffusers'" in str(err.value) and "'Org/Some-Model'" in str(err.value)


def test_the_generic_entry_takes_a_video_class_one_frame_at_a_time(tmp_path):
    from diffusers import AutoencoderKLWan

    folder = save_tiny_wan21(tmp_path / "vae")
    vae = generic(folder, "AutoencoderKLWan")
    assert vae.video and (vae.family, vae.latent_space.family, vae.latent_channels, vae.downsample) == (
        "AutoencoderKLWan",
        "AutoencoderKLWan",
        4,
        2,
    )
    x = images(2, 32, 48)
    z = vae.encode(x)
    model = AutoencoderKLWan.from_pretrained(folder).eval()
    with torch.no_grad():  # raw latents: the config has no factors (and the generic entry reads no latents_mean)
        torch.testing.assert_close(z, model.encode(x.unsqueeze(2)).latent_dist.mode()[:, :, 0], rtol=0, atol=1e-6)
        expected = model.decode(z.unsqueeze(2), return_dict=False)[0][:, :, 0]
    torch.testing.assert_close(vae.decode(z), expected, rtol=0, atol=1e-5)
    info = vae.describe()
    assert info["crop"] == crop_line(2) and info["frames"].startswith("one")
    assert not generic(folder, "AutoencoderKLWan", "vae.diffusers.video=false").video  # told, not guessed
    # a named variant of the entry, as docs/vaes.md shows it
    from evalvae.jobs.vaes import selected_vaes

    cfg = compose_run([f"+vae.wan={{base: diffusers, cls: AutoencoderKLWan, source: {folder}}}"])
    variant = load_vae("wan", selected_vaes(validate(cfg, "run"))["wan"], device="cpu")
    torch.testing.assert_close(variant.encode(x), z, rtol=0, atol=0)
    # Qwen-Image 2.1's 3-D convolutions hold 4-D weights: its config's temporal factor tells it is a video class
    assert generic(save_tiny_qwen_image21(tmp_path / "q21"), "AutoencoderKLQwenImage21").video


def test_the_generic_entry_takes_an_image_class_whole(tmp_path):
    from diffusers import AutoencoderKLHunyuanImage

    folder = save_tiny_hunyuanimage(tmp_path / "vae")
    vae = generic(folder, "AutoencoderKLHunyuanImage", "vae.diffusers.latent_space=hy")
    assert not vae.video and (vae.latent_space.family, vae.downsample, vae.scaling_factor) == ("hy", 4, 0.75)
    x = images(1, 32, 32)
    model = AutoencoderKLHunyuanImage.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(x), model.encode(x).latent_dist.mode() * 0.75, rtol=0, atol=1e-6)
    assert "frames" not in vae.describe()


# -- a run -------------------------------------------------------------------------------------------------
def test_a_run_scores_the_new_families_and_records_their_crops(tmp_path, image_dir):
    import json

    import pandas as pd

    from evalvae.run import run

    stand_ins = {
        "flux2": save_tiny_flux2_bn,
        "qwen-image-21": save_tiny_qwen_image21,
        "qwen-image": save_tiny_qwen_image,
        "wan21": save_tiny_wan21,
        "wan22": save_tiny_wan22,
        "hunyuanimage-21": save_tiny_hunyuanimage,
        "rae-dinov2-b": save_tiny_rae,
    }  # run's channels_last=true leaves the 3-D convolutions' 5-D weights as they are
    sources = [f"vae.{name}.source={save(tmp_path / name)}" for name, save in stand_ins.items()]
    cfg = compose_run(
        [
            f"+vae=[{','.join(stand_ins)}]",
            *sources,
            "dataset=folder",
            f"dataset.path={image_dir}",
            "dataset.resolution=32",
            "device=cpu",
            "workers=0",
            f"cache_dir={tmp_path / 'cache'}",
        ]
    )
    out = run(cfg, out_dir=tmp_path / "out").out_dir
    records = {r["vae"]: r for r in json.loads((out / "vaes.json").read_text())}
    assert {name: r["status"] for name, r in records.items()} == dict.fromkeys(stand_ins, "ok")
    crops = {name: r["crop"].split(" (")[0] for name, r in records.items()}
    assert crops == {
        "flux2": "centre-cropped to a multiple of 4 px",
        "qwen-image-21": "centre-cropped to a multiple of 2 px",
        "qwen-image": "centre-cropped to a multiple of 2 px",
        "wan21": "centre-cropped to a multiple of 2 px",
        "wan22": "centre-cropped to a multiple of 4 px",
        "hunyuanimage-21": "centre-cropped to a multiple of 4 px",
        "rae-dinov2-b": "centre-cropped to a multiple of 16 px",
    }
    per = pd.read_parquet(out / "per_image.parquet")
    assert (per.groupby("vae").size() == 6).all() and np.isfinite(per.psnr).all()
    assert set(per.vae) == set(stand_ins) and (per.height == 32).all()
    # the report and compare read them as any other VAE's results
    from evalvae.compare import Verdict, compare, load_snapshot
    from evalvae.report import write_report

    md = (write_report([out], tmp_path / "rep", grids=False).parent / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and "dB" not in line]
    assert all(any(f" {name} " in line or f"**{name}**" in line for line in table) for name in stand_ins)
    rows = compare(load_snapshot(out), load_snapshot(out)).rows
    assert {r.vae for r in rows} == set(stand_ins) and {r.verdict for r in rows} == {Verdict.PASS}
