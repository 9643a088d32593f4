"""CLIP score against torchmetrics' computation, its unavailability, and pipeline pieces without weights."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.config import compose
from evalvae.device import resolve_device
from evalvae.errors import ConfigError
from evalvae.metrics.features import MetricUnavailable
from evalvae.run import run
from evalvae.t2i.clipscore import CLIPScore
from evalvae.t2i.pipeline import DiffusersPipeline, folder_fingerprint, parse_seeds
from tests.t2i_helpers import tiny_clip_dir, tiny_pipeline_dir  # noqa: F401 (fixtures)

PROMPTS = ["a red car", "line art of a cat", "neon sign at night", "a bowl of fruit", "hands on a piano"]


def images(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


class TensorOutputs(torch.nn.Module):
    """A CLIPModel whose feature methods return tensors, as torchmetrics 1.9 expects (transformers 4 style)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    def get_text_features(self, input_ids, attention_mask):
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def test_clip_score_equals_torchmetrics_and_truncates_a_long_prompt(tiny_clip_dir):  # noqa: F811
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    metric = CLIPScore(str(tiny_clip_dir))
    x = images(len(PROMPTS))
    ours = metric(x, PROMPTS)["clip_score"]
    theirs, n = _clip_score_update(list(x), PROMPTS, TensorOutputs(metric.model), metric.processor)
    assert n == len(PROMPTS) and ours.dtype == torch.float64
    # torchmetrics reports 100 * cos per pair and clamps only the mean; evalvae clamps each pair at 0.
    np.testing.assert_allclose(ours.numpy(), theirs.detach().double().clamp(min=0).numpy(), atol=1e-4)
    assert (theirs > 0).any() and (theirs < 0).any(), "random weights: both signs, so the clamp is exercised"
    long = metric(images(1), ["word " * 200])["clip_score"]  # a prompt past 77 tokens is truncated, not an error
    assert long.shape == (1,) and torch.isfinite(long).all()


def test_missing_clip_weights_make_it_unavailable():
    with pytest.raises(
        MetricUnavailable,
        match=r"CLIP model 'openai/clip-vit-large-patch14' could not be loaded.*t2i.clip_score.model=",
    ):
        CLIPScore("openai/clip-vit-large-patch14")


def t2i(pipe_dir, *extra) -> list[str]:
    pipeline = ["pipeline=local", f"pipeline.source={pipe_dir}", "pipeline.steps=1", "pipeline.height=64"]
    rest = [
        "pipeline.width=64",
        "suite.limit=3",
        "workers=0",
        "report=false",
        "+vae=kl-f8",
        f"vae.kl-f8.source={pipe_dir}",
    ]
    return ["task=t2i", *pipeline, *rest, "metrics=default", *extra]


def test_clip_score_in_a_run(tmp_path, tiny_pipeline_dir, tiny_clip_dir):  # noqa: F811
    out = run(compose(t2i(tiny_pipeline_dir, f"t2i.clip_score.model={tiny_clip_dir}")), out_dir=tmp_path / "a").out_dir
    per = pd.read_csv(out / "per_image.csv")
    files = [out / "images" / "kl-f8" / f"{i}.png" for i in per.image]
    pixels = torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files])
    expected = CLIPScore(str(tiny_clip_dir))(pixels, list(per.prompt))["clip_score"]
    # On CUDA the run's CLIP runs with TF32 convolutions (PyTorch's cuDNN default); the reference is on the CPU.
    atol = 1e-5 if resolve_device("auto").type == "cpu" else 0.05
    np.testing.assert_allclose(per.clip_score, expected.numpy(), atol=atol)
    # Weights that cannot be had: NaN and the reason, and the rest of the run unaffected.
    out = run(compose(t2i(tiny_pipeline_dir, "t2i.clip_score.model=nobody/no-clip")), out_dir=tmp_path / "b").out_dir
    per_b = pd.read_csv(out / "per_image.csv")
    assert per_b.clip_score.isna().all() and len(per_b) == 3
    note = pd.read_csv(out / "summary.csv").set_index("metric").loc["clip_score", "note"]
    assert "nobody/no-clip" in note
    assert [(out / "images" / "kl-f8" / f.name).read_bytes() for f in files] == [f.read_bytes() for f in files]


def test_seeds():
    assert parse_seeds(3) == [0, 1, 2] and parse_seeds([5, 7]) == [5, 7]
    for bad in (0, -1, [], [1, 1], [-2], "3", True):
        with pytest.raises(ConfigError, match="pipeline.seeds"):
            parse_seeds(bad)


def test_folder_fingerprint_follows_configs_and_weights(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet" / "config.json").write_text('{"a": 1}')
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"x" * 10)
    first = folder_fingerprint(tmp_path)
    assert folder_fingerprint(tmp_path) == first
    (tmp_path / "unet" / "config.json").write_text('{"a": 2}')
    second = folder_fingerprint(tmp_path)
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"y" * 11)
    assert len({first, second, folder_fingerprint(tmp_path)}) == 3


def test_packed_latents_are_unpacked_with_the_pipeline_class(tiny_pipeline_dir):  # noqa: F811
    """FLUX-style output (B, tokens, 64) comes back as the 16-channel latent grid that was packed."""
    from diffusers import FluxPipeline

    z = torch.randn(2, 16, 8, 12)
    packed = FluxPipeline._pack_latents(z, 2, 16, 8, 12)

    class FakeFlux:
        _unpack_latents = staticmethod(FluxPipeline._unpack_latents)
        vae_scale_factor = 8
        transformer = types.SimpleNamespace(config=types.SimpleNamespace(in_channels=64))

        def __call__(self, **kwargs):
            self.seen = kwargs
            return types.SimpleNamespace(images=packed)

    flux = {"height": 64, "width": 96, "packed": True, "extra": {"max_sequence_length": 256}}
    p = DiffusersPipeline("fake", str(tiny_pipeline_dir), "flux", steps=4, guidance=0.0, **flux)
    p.pipe = FakeFlux()
    out = p.generate(["a", "b"], [0, 1])
    torch.testing.assert_close(out, z)
    assert p.latent_space().channels == 16
    assert (p.pipe.seen["output_type"], p.pipe.seen["max_sequence_length"]) == ("latent", 256)
    with pytest.raises(ConfigError, match=r"pipeline.height=72.*multiple of 16"):
        DiffusersPipeline("fake", str(tiny_pipeline_dir), "flux", height=72, width=96, packed=True)
