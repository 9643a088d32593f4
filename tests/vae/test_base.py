"""VAE adapters: every config composes and loads against a local stand-in; scaling, posterior, hashes, errors."""

from __future__ import annotations

import hashlib
import http.server
import threading
from importlib.resources import files

import numpy as np
import pytest
import torch
import yaml

from evalvae import checkpoints
from evalvae.checkpoints import state_dict_sha256
from evalvae.errors import ConfigError, WeightsUnavailable
from evalvae.jobs.vaes import available_vaes
from evalvae.vae import load_vae
from evalvae.vae.kl import KLAdapter
from evalvae.vae.taesd import TinyAutoencoder
from evalvae.vae.tiny import TinyAdapter
from tests.helpers import compose_run, save_pth_pair, save_tiny_kl

ZOO = [
    "kl-f8",
    "ft-ema",
    "ft-mse",
    "sdxl",
    "sdxl-fp16-fix",
    "sd3",
    "flux",
    "taesd",
    "taesdxl",
    "taesd3",
    "taef1",
    "taef2",
]


def test_zoo_is_complete_and_each_file_names_itself():
    assert set(ZOO) <= set(available_vaes())
    for name in available_vaes():
        doc = yaml.safe_load(files("evalvae.conf").joinpath("vae", f"{name}.yaml").read_text())
        assert list(doc) == [name], f"conf/vae/{name}.yaml must hold exactly one top-level key, {name!r}"
        assert "_target_" in doc[name]
        if name in ZOO:  # the models; codecs and files (reconstructions read from a folder) have neither
            assert "source" in doc[name] and "latent_space" in doc[name]
        if "dtype" in doc[name]:  # every model says when it runs in fp32 instead (evalvae.jobs.policy)
            assert doc[name]["upcast"] == "auto", name


@pytest.mark.parametrize("name", ZOO)
def test_every_vae_config_composes_and_loads_a_local_stand_in(name, tiny_kl_dir, tiny_ae_dir, tiny_pth_dir):
    cfg = compose_run([f"+vae={name}"])
    spec = cfg.vae[name]
    if spec._target_.endswith("KLAdapter"):
        spec.source = str(tiny_kl_dir)
    elif name == "taef2":
        spec.source, spec.weights_prefix, spec.sha256 = str(tiny_pth_dir), "tiny", None
    else:
        spec.source = str(tiny_ae_dir)
    vae = load_vae(name, spec, device="cpu")
    assert vae.name == name and vae.latent_space.family == spec.latent_space
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, vae.latent_channels, 32 // vae.downsample, 32 // vae.downsample)
    y = vae.decode(z)
    assert y.shape == x.shape and y.dtype == torch.float32 and torch.isfinite(y).all()


def test_multiple_selection_and_field_override():
    cfg = compose_run(["+vae=[kl-f8,ft-ema,ft-mse]", "vae.ft-mse.source=/some/dir", "vae.kl-f8.dtype=bf16"])
    assert list(cfg.vae) == ["kl-f8", "ft-ema", "ft-mse"]
    assert cfg.vae["ft-mse"].source == "/some/dir"
    assert cfg.vae["kl-f8"].dtype == "bf16" and cfg.vae["ft-ema"].dtype == "fp32"


def test_kl_applies_scaling_and_shift(tiny_kl_dir):
    vae = KLAdapter("k", str(tiny_kl_dir), latent_space="test")
    assert (vae.scaling_factor, vae.shift_factor) == (0.5, 0.1)  # from the model config
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        mean = vae.module.encode(x).latent_dist.mean
        expected_img = vae.module.decode(mean).sample
    z = vae.encode(x)
    torch.testing.assert_close(z, (mean - 0.1) * 0.5)
    torch.testing.assert_close(vae.decode(z), expected_img, rtol=1e-5, atol=1e-5)
    over = KLAdapter("k", str(tiny_kl_dir), latent_space="test", scaling_factor=2.0, shift_factor=0.0)
    torch.testing.assert_close(over.encode(x), mean * 2.0)


def test_a_family_normalization_hook_sets_the_diffusion_space(tiny_kl_dir):
    """Per-channel means and stds (as later families have) replace the scaling and shift, in encode and decode."""
    mean = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, -1, 1, 1)
    std = torch.tensor([0.5, 1.0, 2.0, 4.0]).view(1, -1, 1, 1)

    class PerChannel(KLAdapter):
        def normalize(self, z):
            return (z - mean) / std

        def denormalize(self, latents):
            return latents * std + mean

    vae = PerChannel("p", str(tiny_kl_dir), latent_space="sd")
    raw = KLAdapter("k", str(tiny_kl_dir), latent_space="sd", scaling_factor=1.0, shift_factor=0.0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = raw.encode(x)
    torch.testing.assert_close(vae.encode(x), (z - mean) / std)
    torch.testing.assert_close(vae.decode(vae.encode(x)), raw.decode(z))


def test_posterior_sample_is_seeded_per_image_not_per_batch_and_the_choice_is_validated(tiny_kl_dir):
    vae = KLAdapter("k", str(tiny_kl_dir), latent_space="test", posterior="sample", seed=7)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    together = vae.encode(x, seeds=[10, 11, 12])
    alone = vae.encode(x[1:2], seeds=[11])
    torch.testing.assert_close(together[1:2], alone)
    assert not torch.allclose(together, vae.encode(x, seeds=[20, 21, 22]))
    mode = KLAdapter("k", str(tiny_kl_dir), latent_space="test").encode(x)
    assert not torch.allclose(together, mode)
    with pytest.raises(ConfigError, match=r"vae\.k\.posterior='median'; choose one of mode, sample"):
        KLAdapter("k", str(tiny_kl_dir), latent_space="test", posterior="median")


def test_encoder_hash_identifies_shared_encoders(tmp_path, tiny_kl_dir):
    a = KLAdapter("a", str(tiny_kl_dir), latent_space="sd")
    b = KLAdapter("b", str(tiny_kl_dir), latent_space="sd")
    with torch.no_grad():
        b.module.decoder.conv_out.weight.add_(1.0)  # a fine-tuned decoder, same encoder
    assert a.encoder_hash == b.encoder_hash
    c = KLAdapter("c", str(save_tiny_kl(tmp_path / "other", seed=1)), latent_space="sd")
    assert c.encoder_hash != a.encoder_hash
    cl = KLAdapter("a", str(tiny_kl_dir), latent_space="sd")
    cl.module.to(memory_format=torch.channels_last)
    assert cl.encoder_hash == a.encoder_hash  # memory format does not change the hash


def test_state_dict_hash_is_order_independent():
    s = {"a": torch.arange(4.0), "b": torch.ones(2, 2)}
    assert state_dict_sha256(s) == state_dict_sha256(dict(reversed(s.items())))
    assert state_dict_sha256(s) != state_dict_sha256({"a": torch.arange(4.0), "b": torch.zeros(2, 2)})


def test_pth_layout_is_inferred_from_state_dicts(tmp_path):
    plain = save_pth_pair(tmp_path / "p", prefix="m", latent_channels=4, pool=False)
    vae = TinyAdapter("m", str(plain), latent_space="sd")
    assert vae.latent_channels == 4 and all(getattr(b, "pool", None) is None for b in vae.module.encoder)
    pooled = TinyAdapter("m", str(save_pth_pair(tmp_path / "q", prefix="m", latent_channels=32)), latent_space="flux2")
    assert vae.latent_channels == 4 and pooled.latent_channels == 32
    assert sum(getattr(b, "pool", None) is not None for b in pooled.module.encoder) == 3
    assert sum(getattr(b, "pool", None) is not None for b in pooled.module.decoder) == 3


def test_pth_sha256_is_checked(tiny_pth_dir):
    with pytest.raises(WeightsUnavailable, match=r"sha256 .* expected 0+; .*vae\.t\.sha256=null"):
        TinyAdapter("t", str(tiny_pth_dir), latent_space="x", weights_prefix="tiny", sha256={"encoder": "0" * 64})


def test_missing_local_source_is_a_config_error():
    with pytest.raises(ConfigError, match=r"vae\.x\.source='/no/such/dir'.*does not exist"):
        TinyAdapter("x", "/no/such/dir", latent_space="sd")


@pytest.mark.parametrize(
    ("name", "hub_id"),
    [
        ("ft-mse", "stabilityai/sd-vae-ft-mse"),
        ("consistency", "openai/consistency-decoder"),
        ("dc-ae-f32c32", "mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers"),
    ],
)
def test_offline_hub_miss_is_one_actionable_line(name, hub_id):
    cfg = compose_run([f"+vae={name}"])
    with pytest.raises(WeightsUnavailable) as err:
        load_vae(name, cfg.vae[name], device="cpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"VAE '{name}'" in msg and f"'{hub_id}'" in msg and f"vae.{name}.source=" in msg


def test_single_file_checkpoint_with_local_config(tmp_path, tiny_kl_dir):
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    model = AutoencoderKL.from_pretrained(tiny_kl_dir)
    ckpt = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, ckpt)
    vae = KLAdapter("s", str(ckpt), latent_space="sd", config=str(tiny_kl_dir))
    ref = KLAdapter("r", str(tiny_kl_dir), latent_space="sd")
    assert vae.weights.kind == "single-file" and vae.encoder_hash == ref.encoder_hash
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(vae.decode(vae.encode(x)), ref.decode(ref.encode(x)))


def test_pth_pair_downloads_once_into_cache_with_checksum(tmp_path, tiny_pth_dir):
    digests = {
        p: hashlib.sha256((tiny_pth_dir / f"tiny_{p}.pth").read_bytes()).hexdigest() for p in ("encoder", "decoder")
    }
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tiny_pth_dir), **kw)

        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/weights"
        (tiny_pth_dir / "weights").mkdir(exist_ok=True)
        for p in ("encoder", "decoder"):
            (tiny_pth_dir / "weights" / f"tiny_{p}.pth").write_bytes((tiny_pth_dir / f"tiny_{p}.pth").read_bytes())
        kw = dict(latent_space="flux2", weights_prefix="tiny", sha256=digests, cache_dir=str(tmp_path / "cache"))
        vae = TinyAdapter("t", url, **kw)
        assert (tmp_path / "cache" / "weights" / "tiny" / "tiny_encoder.pth").is_file()
        assert vae.weights.kind == "pth-url" and len(hits) == 2
        TinyAdapter("t", url, **kw)
        assert len(hits) == 2, "a second load must come from the cache"
        bad = dict(kw, sha256={"encoder": "f" * 64}, cache_dir=str(tmp_path / "cache2"))
        with pytest.raises(WeightsUnavailable, match="expected f+"):
            TinyAdapter("t", url, **bad)
        assert not list((tmp_path / "cache2").rglob("*.pth")), "a file failing its checksum must not stay in the cache"
    finally:
        server.shutdown()


def test_the_shipped_taef2_reconstructs_astronaut_at_31_2_db():
    """The published check for a correct TAEF2: about 31.2 dB on skimage's astronaut at 512x512, offline, from
    the weights inside the package (the shared assets' taef2: tests/integration/test_default_run.py)."""
    from skimage import data
    from skimage.metrics import peak_signal_noise_ratio

    vae = load_vae("taef2", compose_run(["+vae=taef2"]).vae.taef2, device="cpu")
    assert vae.latent_channels == 32 and vae.downsample == 8
    img = data.astronaut()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    y = vae.decode(vae.encode(x))
    rec = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert peak_signal_noise_ratio(img, rec, data_range=255) == pytest.approx(31.18, abs=0.05)


def test_taesd_module_rejects_mismatched_state_dict():
    enc = TinyAutoencoder(4).encoder.state_dict()
    dec = TinyAutoencoder(4).decoder.state_dict()
    enc.pop("0.bias")
    with pytest.raises(RuntimeError, match="Missing key"):
        TinyAutoencoder.from_state_dicts(enc, dec)


def test_local_then_hub_downloads_only_where_allowed_and_reachable(monkeypatch):
    calls = []

    def load(local: bool):
        calls.append(local)
        if local:
            raise OSError("not in the local cache")
        return "downloaded"

    monkeypatch.setattr(checkpoints, "hub_reachable", lambda: False)
    with pytest.raises(OSError, match="not in the local cache"):
        checkpoints.local_then_hub(load)
    monkeypatch.setattr(checkpoints, "hub_reachable", lambda: True)
    with pytest.raises(OSError, match="not in the local cache"):
        checkpoints.local_then_hub(load, may_download=False)
    assert checkpoints.local_then_hub(load) == "downloaded"
    assert calls == [True, True, True, False]
    assert checkpoints.local_then_hub(lambda local: ("cached", local)) == ("cached", True)


# PSNR (dB) of the round trip of skimage's astronaut at 256 px (PIL bicubic), measured with the bf16 copies
TAESD_FAMILY = {
    "taesd": ("sd", 4, 22.28),
    "taesdxl": ("sdxl", 4, 22.65),
    "taesd3": ("sd3", 16, 28.52),
    "taef1": ("flux", 16, 26.65),
}


@pytest.mark.parametrize("name", sorted(TAESD_FAMILY))
def test_taesd_family_from_safetensors_pairs(taesd_family_dir, name):
    from PIL import Image
    from skimage import data
    from skimage.metrics import peak_signal_noise_ratio

    family, channels, db = TAESD_FAMILY[name]
    cfg = compose_run([f"+vae={name}", f"vae.{name}.source={taesd_family_dir}"])
    vae = load_vae(name, cfg.vae[name], device="cpu")
    assert (vae.latent_space.family, vae.latent_channels, vae.downsample) == (family, channels, 8)
    assert vae.weights.kind == "safetensors-dir" and set(vae.weights.files) == {
        f"{name}_encoder.safetensors",
        f"{name}_decoder.safetensors",
    }
    assert vae.describe()["weights_dtype"] == "bf16" and vae.dtype_name == "fp32"  # bf16 copies, evaluated in fp32
    img = np.array(Image.fromarray(data.astronaut()).resize((256, 256), Image.Resampling.BICUBIC))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        y = vae.decode(vae.encode(x))
    rec = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert peak_signal_noise_ratio(img, rec, data_range=255) == pytest.approx(db, abs=0.05)


def test_a_safetensors_pair_equals_the_same_tensors_as_pth(tmp_path):
    from safetensors.torch import save_file

    pth = save_pth_pair(tmp_path / "pth", prefix="tiny", latent_channels=4, pool=False)
    st = tmp_path / "st"
    st.mkdir()
    for part in ("encoder", "decoder"):
        save_file(torch.load(pth / f"tiny_{part}.pth", weights_only=True), st / f"tiny_{part}.safetensors")
    spec = {"_target_": "evalvae.vae.tiny.TinyAdapter", "latent_space": "sd", "weights_prefix": "tiny"}
    a = load_vae("a", {**spec, "source": str(pth)}, device="cpu")
    b = load_vae("b", {**spec, "source": str(st)}, device="cpu")
    assert (a.weights.kind, b.weights.kind) == ("pth-dir", "safetensors-dir")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(a.decode(a.encode(x)), b.decode(b.encode(x)), rtol=0, atol=0)
    (st / "tiny_decoder.safetensors").unlink()  # half a pair is no pair
    with pytest.raises(WeightsUnavailable, match=r"tiny_decoder\.safetensors not found"):
        load_vae("b", {**spec, "source": str(st)}, device="cpu")
