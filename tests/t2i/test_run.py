"""``task=t2i`` end to end on a tiny offline StableDiffusionPipeline: shared latents, refusals, results."""

from __future__ import annotations

import json
import logging
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from evalvae.config import compose
from evalvae.device import resolve_device
from evalvae.errors import ConfigError
from evalvae.run import run
from evalvae.t2i.decode import items_of
from evalvae.t2i.pipeline import DiffusersPipeline
from evalvae.t2i.run import LatentSpaceMismatch, generation_chunks
from evalvae.t2i.suites import Prompt
from evalvae.vae import load_vae
from tests.golden import golden
from tests.helpers import evalvae_main, save_tiny_autoencoder_tiny
from tests.t2i_helpers import save_tiny_sd_pipeline, save_tiny_vae, tiny_clip_dir, tiny_pipeline_dir, tiny_vae_dirs  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, SEEDS, PROMPTS, GEN_BATCH = 2, 2, 3, 4
N_IMAGES = PROMPTS * SEEDS
DEVICE = resolve_device("auto")
# Batched and single decodes may differ in the last float bits, which can flip a rounding; on CUDA,
# cuDNN's TF32 convolutions (PyTorch's default) differ by about 1e-3 relative.
PIXEL_TOL = 1 if DEVICE.type == "cpu" else 4


@contextmanager
def recording(cls, method: str, record):
    """Patch ``cls.<method>`` so that each call first appends ``record(*args, **kwargs)`` to the list yielded."""
    calls, original = [], getattr(cls, method)

    def patched(self, *args, **kwargs):
        calls.append(record(*args, **kwargs))
        return original(self, *args, **kwargs)

    setattr(cls, method, patched)
    try:
        yield calls
    finally:
        setattr(cls, method, original)


def counting_unet_calls():
    """Count every UNet forward (its batch size), whoever calls it."""
    from diffusers import UNet2DConditionModel

    return recording(UNet2DConditionModel, "forward", lambda *a, **kw: a[0].shape[0] if a else kw["sample"].shape[0])


def recording_generate_calls():
    """Record the (prompt, seed) pairs of every pipeline batch, in order."""
    return recording(DiffusersPipeline, "generate", lambda prompts, seeds: list(zip(prompts, seeds)))


def cached_latents(cache) -> dict[str, object]:
    """Each cached latent file by the image id in its metadata."""
    found = {}
    for path in (cache / "latents").glob("??/*.safetensors"):
        with safe_open(str(path), "pt") as f:
            found[f.metadata()["image"]] = path
    return found


def stored_latent(path) -> tuple[bytes, dict]:
    """A latent file's tensor bytes and metadata (safetensors writes its metadata keys in no fixed order)."""
    with safe_open(str(path), "pt") as f:
        return f.get_tensor("latent").numpy().tobytes(), f.metadata()


def overrides(pipe_dir, vaes: dict, *extra) -> list[str]:
    """The tiny pipeline (2 steps, 64 px), 3 builtin prompts x 2 seeds, and the given VAE sources."""
    out = [
        "task=t2i",
        "pipeline=local",
        f"pipeline.source={pipe_dir}",
        f"pipeline.steps={STEPS}",
        "pipeline.height=64",
        "pipeline.width=64",
        "pipeline.dtype=fp32",
        f"pipeline.seeds={SEEDS}",
        f"pipeline.batch_size={GEN_BATCH}",
        f"suite.limit={PROMPTS}",
        "suite.categories=[text,hands]",
        "t2i.clip_score=null",
        "workers=0",
        "report=false",
        f"+vae=[{','.join(vaes)}]",
    ]
    for name, source in vaes.items():
        out.append(f"vae.{name}.source={source}")
    return out + list(extra)


def run_t2i(out_dir, pipe_dir, vaes: dict, *extra):
    """The run of :func:`overrides` into ``out_dir``: its outcome."""
    return run(compose(overrides(pipe_dir, vaes, *extra)), out_dir=out_dir)


@pytest.fixture(scope="module")
def three_vaes(tiny_pipeline_dir, tiny_vae_dirs, tiny_ae_dir):  # noqa: F811
    # kl-f8 is the pipeline's own VAE (its vae/ subfolder); ft-mse another KL; taesd a tiny autoencoder.
    return {"kl-f8": tiny_pipeline_dir, "ft-mse": tiny_vae_dirs["a"], "taesd": tiny_ae_dir}


def build_t2i(root: Path) -> dict:
    """The three decoders on the tiny pipeline's shared latents, with the report; the UNet's batch sizes."""
    pipe = save_tiny_sd_pipeline(root / "pipeline")
    vaes = {
        "kl-f8": pipe,
        "ft-mse": save_tiny_vae(root / "a", seed=1),
        "taesd": save_tiny_autoencoder_tiny(root / "ae"),
    }
    with counting_unet_calls() as calls:
        run_t2i(root / "run", pipe, vaes, "report=true", f"cache_dir={root / 'cache'}")
    return {
        "out": str(root / "run"),
        "calls": calls,
        "pipeline": str(pipe),
        "vaes": {k: str(v) for k, v in vaes.items()},
    }


@pytest.fixture(scope="session")
def t2i_run(tmp_path_factory):
    """The golden t2i run (read, never written): its folder and the UNet calls that made its latents."""
    for facts in golden(tmp_path_factory, "t2i", build_t2i):
        yield Path(facts["out"]), facts["calls"], facts


def test_latents_are_generated_once_not_once_per_vae(t2i_run):
    out, calls, _ = t2i_run
    batches = math.ceil(N_IMAGES / GEN_BATCH)
    assert len(calls) == STEPS * batches, "one UNet call per step per pipeline batch, for all three VAEs together"
    assert sum(calls) == 2 * STEPS * N_IMAGES  # classifier-free guidance: conditional and unconditional halves
    assert len(list((out / "latents").glob("*.safetensors"))) == N_IMAGES
    gen = pd.read_csv(out / "generation.csv").iloc[0]
    assert gen.n_generated == N_IMAGES and gen.n_cached == 0 and gen.denoiser_calls == len(calls)
    assert gen.text_encode_s > 0 and gen.denoise_s > 0 and gen.generate_s >= gen.text_encode_s + gen.denoise_s - 1e-9


def test_results_schema(t2i_run):
    out, _, _ = t2i_run
    for name in [
        "config.yaml",
        "per_image.parquet",
        "per_image.csv",
        "summary.csv",
        "summary_by_category.csv",
        "timings.csv",
        "generation.csv",
        "prompts.csv",
        "vaes.json",
        "metrics.json",
    ]:
        assert (out / name).is_file(), name
    per = pd.read_parquet(out / "per_image.parquet")
    assert list(per.columns) == [
        "vae",
        "image",
        "prompt_id",
        "prompt",
        "category",
        "seed",
        "psnr",
        "ssim",
        "lpips",
        "height",
        "width",
    ]
    assert len(per) == 3 * N_IMAGES and list(dict.fromkeys(per.vae)) == ["kl-f8", "ft-mse", "taesd"]
    assert (per.height == 64).all() and (per.width == 64).all() and set(per.category) <= {"text", "hands"}
    assert (per.image == per.prompt_id + "_s" + per.seed.astype(str)).all()
    prompts = pd.read_csv(out / "prompts.csv")
    assert list(prompts.columns) == ["image", "prompt_id", "prompt", "category", "seed"] and len(prompts) == N_IMAGES
    assert set(per.image) == set(prompts.image) and sorted(prompts.seed.unique()) == [0, 1]
    for vae in ["kl-f8", "ft-mse", "taesd"]:
        pngs = sorted(p.stem for p in (out / "images" / vae).glob("*.png"))
        assert pngs == sorted(prompts.image), vae

    summary = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    assert list(summary.columns) == ["vae", "metric", "mean", "std", "n", "note"]
    ref = summary[summary.vae == "kl-f8"].set_index("metric")
    assert ref.loc["psnr", "n"] == 0 and ref.loc["psnr", "note"].startswith("reference decoder")
    other = summary[summary.vae == "ft-mse"].set_index("metric")
    assert other.loc["psnr", "n"] == N_IMAGES and np.isfinite(other.loc["psnr", "mean"])
    assert (
        other.loc["lpips", "n"] == 0 and "LPIPS" in other.loc["lpips", "note"]
    )  # no backbone weights offline: unavailable
    cats = pd.read_csv(out / "summary_by_category.csv")
    assert list(cats.columns) == ["vae", "category", "metric", "mean", "std", "n"]
    psnr = per[per.vae == "ft-mse"].groupby("category").psnr.mean()
    got = cats[(cats.vae == "ft-mse") & (cats.metric == "psnr")].set_index("category")["mean"]
    pd.testing.assert_series_equal(got.sort_index(), psnr.sort_index(), check_names=False)

    timings = pd.read_csv(out / "timings.csv")
    assert list(timings.vae) == ["kl-f8", "ft-mse", "taesd"] and (timings.n_images == N_IMAGES).all()
    assert (timings[["decode_s", "decode_ms_per_image", "load_s"]] > 0).all().all()
    protocol = json.loads((out / "metrics.json").read_text())
    assert protocol["task"] == "t2i" and protocol["reference_vae"] == "kl-f8" and protocol["n_images"] == N_IMAGES
    assert protocol["pipeline"]["steps"] == STEPS and protocol["pipeline"]["seeds"] == [0, 1]
    assert protocol["pipeline"]["identity"].startswith("dir:") and protocol["pipeline"]["latent_channels"] == 4
    assert protocol["suite"]["n_prompts"] == PROMPTS and protocol["latents"]["generated"] == N_IMAGES
    assert protocol["metrics"]["psnr"]["compared_with"].startswith("each VAE's decode")
    vaes = json.loads((out / "vaes.json").read_text())
    assert [(v["vae"], v["status"], v["reference"]) for v in vaes] == [
        ("kl-f8", "ok", True),
        ("ft-mse", "ok", False),
        ("taesd", "ok", False),
    ]


def test_every_vae_decoded_the_same_stored_latents(t2i_run):
    out, _, facts = t2i_run
    cfg = compose(overrides("unused", facts["vaes"]))
    for name in facts["vaes"]:
        vae = load_vae(name, cfg.vae[name], device=DEVICE)
        for image in pd.read_csv(out / "prompts.csv").image:
            z = load_file(out / "latents" / f"{image}.safetensors")["latent"]
            mine = ((vae.decode(z[None]).clamp(-1, 1) + 1) * 127.5).round()[0].permute(1, 2, 0).cpu().numpy()
            saved = np.asarray(Image.open(out / "images" / name / f"{image}.png"), dtype=np.float64)
            assert np.abs(mine - saved).max() <= PIXEL_TOL, (name, image)


def test_decode_follows_the_pipelines_own_latent_convention(t2i_run):
    """The pipeline's own VAE through evalvae equals diffusers decoding the pipeline's output itself."""
    from diffusers import StableDiffusionPipeline

    out, _, facts = t2i_run
    pipe = StableDiffusionPipeline.from_pretrained(facts["pipeline"], safety_checker=None, feature_extractor=None).to(
        DEVICE
    )
    pipe.set_progress_bar_config(disable=True)
    prompts = pd.read_csv(out / "prompts.csv").head(2)
    images = pipe(
        list(prompts.prompt),
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=64,
        width=64,
        output_type="pil",
        generator=[torch.Generator().manual_seed(int(s)) for s in prompts.seed],
    ).images
    for image, reference in zip(prompts.image, images):
        saved = np.asarray(Image.open(out / "images" / "kl-f8" / f"{image}.png"), dtype=np.int16)
        assert np.abs(saved - np.asarray(reference, dtype=np.int16)).max() <= PIXEL_TOL


def test_agreement_equals_an_independent_computation(t2i_run):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    out, _, _ = t2i_run
    per = pd.read_csv(out / "per_image.csv").set_index(["vae", "image"])
    for image in per.loc["ft-mse"].index:
        ref = np.asarray(Image.open(out / "images" / "kl-f8" / f"{image}.png"))
        other = np.asarray(Image.open(out / "images" / "ft-mse" / f"{image}.png"))
        assert per.loc[("ft-mse", image), "psnr"] == pytest.approx(
            peak_signal_noise_ratio(ref, other, data_range=255), abs=1e-6
        )
        ssim = structural_similarity(
            ref, other, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255
        )
        assert per.loc[("ft-mse", image), "ssim"] == pytest.approx(ssim, abs=1e-6)
    assert per.loc["kl-f8", "psnr"].isna().all()


def test_latents_do_not_depend_on_the_generation_batch(tmp_path, tiny_pipeline_dir, three_vaes):  # noqa: F811
    # On the CPU, where float32 is exact enough to see the seeding rather than TF32's rounding.
    one = {"kl-f8": three_vaes["kl-f8"]}
    a = run_t2i(tmp_path / "a", tiny_pipeline_dir, one, "pipeline.batch_size=1", "device=cpu").out_dir
    b = run_t2i(tmp_path / "b", tiny_pipeline_dir, one, "pipeline.batch_size=5", "device=cpu").out_dir
    for f in sorted((a / "latents").glob("*.safetensors")):
        torch.testing.assert_close(
            load_file(f)["latent"], load_file(b / "latents" / f.name)["latent"], atol=1e-4, rtol=1e-4
        )


@pytest.mark.parametrize(
    "name, other, expected",
    [
        ("taesdxl", "taesd", r"VAE 'taesdxl' \(latent space sdxl\).*pipeline 'local' \(latent space sd\).*kl-f8"),
        ("ft-mse", "c16", r"VAE 'ft-mse' \(latent space sd \(16ch, f8\)\).*sd \(4ch, f8\)"),
    ],
    ids=["family", "channels"],
)
def test_a_vae_of_another_latent_space_is_refused_before_any_work(
    tmp_path,
    tiny_pipeline_dir,
    three_vaes,
    tiny_vae_dirs,
    name,
    other,
    expected,  # noqa: F811
):
    source = three_vaes[other] if other in three_vaes else tiny_vae_dirs[other]
    cfg = compose(overrides(tiny_pipeline_dir, {"kl-f8": three_vaes["kl-f8"], name: source}))
    with counting_unet_calls() as calls, pytest.raises(LatentSpaceMismatch, match=expected) as e:
        run(cfg, out_dir=tmp_path)
    assert "\n" not in str(e.value)  # one line, with the VAEs that would fit
    assert calls == [] and not (tmp_path / "latents").exists()


def test_flux_pipeline_with_sd_vaes_is_refused_without_weights(tmp_path):
    cfg = compose(["task=t2i", "pipeline=flux-schnell", "+vae=[flux,ft-mse]"])
    with pytest.raises(
        LatentSpaceMismatch,
        match=r"VAE 'ft-mse' \(latent space sd\).*pipeline 'flux-schnell' \(latent space flux\).*flux, taef1",
    ):
        run(cfg, out_dir=tmp_path)


def test_cached_latents_are_reused_across_runs(tmp_path, tiny_pipeline_dir, three_vaes):  # noqa: F811
    cached = ["t2i.latents=cache", f"cache_dir={tmp_path / 'cache'}"]
    first_vaes = {k: three_vaes[k] for k in ("kl-f8", "ft-mse")}
    with counting_unet_calls() as calls:
        a = run_t2i(tmp_path / "a", tiny_pipeline_dir, first_vaes, *cached).out_dir
    assert len(calls) == STEPS * math.ceil(N_IMAGES / GEN_BATCH)
    assert len(list((tmp_path / "cache" / "latents").glob("??/*.safetensors"))) == N_IMAGES
    # A later run adds a VAE: the denoiser does not run, and the shared VAE's images are identical.
    second_vaes = {k: three_vaes[k] for k in ("kl-f8", "taesd")}
    with counting_unet_calls() as calls:
        b = run_t2i(tmp_path / "b", tiny_pipeline_dir, second_vaes, *cached).out_dir
    assert calls == []
    gen = pd.read_csv(b / "generation.csv").iloc[0]
    assert gen.n_generated == 0 and gen.n_cached == N_IMAGES
    for png in (a / "images" / "kl-f8").glob("*.png"):
        assert png.read_bytes() == (b / "images" / "kl-f8" / png.name).read_bytes()
    # A damaged cached latent (a byte of its values flipped: the file's size and header still hold) counts as
    # missing and is generated again, with its chunk-mates: the same bytes.
    victim = sorted((tmp_path / "cache" / "latents").glob("??/*.safetensors"))[0]
    original = stored_latent(victim)
    damaged = bytearray(victim.read_bytes())
    damaged[-1] ^= 0x40
    victim.write_bytes(bytes(damaged))
    with counting_unet_calls() as calls:
        d = run_t2i(tmp_path / "d", tiny_pipeline_dir, second_vaes, *cached).out_dir
    gen = pd.read_csv(d / "generation.csv").iloc[0]
    assert len(calls) == STEPS and gen.n_generated == 1 and gen.n_cached == N_IMAGES - 1
    assert stored_latent(victim) == original
    for png in (b / "images" / "kl-f8").glob("*.png"):
        assert png.read_bytes() == (d / "images" / "kl-f8" / png.name).read_bytes()
    # Other settings are other latents.
    with counting_unet_calls() as calls:
        run_t2i(tmp_path / "c", tiny_pipeline_dir, second_vaes, *cached, "pipeline.guidance=3.0")
    assert len(calls) == STEPS * math.ceil(N_IMAGES / GEN_BATCH)


def test_generation_chunks_are_fixed_by_position():
    items = items_of([Prompt(f"p{i}", f"prompt {i}", "all") for i in range(4)], [0, 1])  # 8 items
    chunk = lambda *idx: [items[i] for i in idx]  # noqa: E731
    assert generation_chunks(items, items, 3) == [chunk(0, 1, 2), chunk(3, 4, 5), chunk(6, 7)]
    assert generation_chunks(items, chunk(4), 3) == [chunk(3, 4, 5)]  # not [4] alone
    assert generation_chunks(items, chunk(7, 0), 3) == [chunk(0, 1, 2), chunk(6, 7)]
    assert generation_chunks(items, chunk(2, 3), 3) == [chunk(0, 1, 2), chunk(3, 4, 5)]
    assert generation_chunks(items, [], 3) == []
    assert generation_chunks(items, chunk(5), 1) == [chunk(5)]


def test_a_missing_latent_is_regenerated_in_its_own_chunk_with_identical_bytes(tmp_path, tiny_pipeline_dir, three_vaes):  # noqa: F811
    """Chunks of pipeline.batch_size follow the suite's order, so a cache miss in the middle of a chunk
    regenerates that chunk with the same batch composition, and the latent comes back bit for bit."""
    cache = tmp_path / "cache"
    cfg = compose(
        overrides(
            tiny_pipeline_dir,
            {"kl-f8": three_vaes["kl-f8"]},
            "t2i.latents=cache",
            f"cache_dir={cache}",
            "device=cpu",
            "t2i.save_images=false",
        )
    )
    with recording_generate_calls() as first:
        a = run(cfg, out_dir=tmp_path / "a").out_dir
    prompts = pd.read_csv(a / "prompts.csv")
    images, pairs = list(prompts.image), [(p, int(s)) for p, s in zip(prompts.prompt, prompts.seed)]
    assert first == [pairs[:GEN_BATCH], pairs[GEN_BATCH:]]  # 6 images in batches of 4: [0..3], [4, 5]
    stored = cached_latents(cache)
    before = {image: stored_latent(stored[image]) for image in images}
    mtimes = {image: stored[image].stat().st_mtime_ns for image in images}

    victim = images[1]  # inside the first chunk, neither end
    stored[victim].unlink()
    with recording_generate_calls() as second:
        b = run(cfg, out_dir=tmp_path / "b").out_dir
    assert second == [first[0]], "the whole first chunk, in the same order, and nothing else"
    gen = pd.read_csv(b / "generation.csv").iloc[0]
    assert (gen.n_generated, gen.n_cached, gen.n_pipeline_images) == (1, N_IMAGES - 1, GEN_BATCH)
    stored = cached_latents(cache)
    assert stored_latent(stored[victim]) == before[victim]
    assert {image: stored[image].stat().st_mtime_ns for image in images if image != victim} == {
        k: v for k, v in mtimes.items() if k != victim
    }

    # A missing latent of the short last chunk regenerates that chunk only.
    stored[images[-1]].unlink()
    with recording_generate_calls() as third:
        run(cfg, out_dir=tmp_path / "c")
    assert third == [first[1]] and stored_latent(cached_latents(cache)[images[-1]]) == before[images[-1]]


def test_an_upcast_vae_is_decoded_in_fp32(tmp_path, tiny_pipeline_dir, three_vaes, caplog):  # noqa: F811
    """task=t2i loads VAEs with recon's policy: vae.<name>.upcast=always (what the bench prints for a VAE it
    found non-finite in bf16) makes the run decode that VAE in fp32."""
    cache = tmp_path / "cache"
    two = {k: three_vaes[k] for k in ("kl-f8", "ft-mse")}

    def cfg(*extra):
        common = ["device=cpu", "vae.ft-mse.dtype=bf16", f"cache_dir={cache}", "t2i.save_images=false"]
        return compose(overrides(tiny_pipeline_dir, two, *common, *extra))

    plain = run(cfg(), out_dir=tmp_path / "plain").out_dir  # upcast=auto: bf16 as asked
    assert pd.read_csv(plain / "timings.csv")["dtype"].tolist() == ["fp32", "bf16"]

    with caplog.at_level(logging.INFO):
        out = run(cfg("vae.ft-mse.upcast=always"), out_dir=tmp_path / "upcast").out_dir
    assert "VAE 'ft-mse': vae.ft-mse.upcast=always; evaluating it in fp32 instead of bf16." in caplog.text
    assert pd.read_csv(out / "timings.csv")["dtype"].tolist() == ["fp32", "fp32"]
    vaes = {v["vae"]: v for v in json.loads((out / "vaes.json").read_text())}
    assert (vaes["ft-mse"]["upcast"], vaes["ft-mse"]["dtype"], vaes["ft-mse"]["dtype_requested"]) == (
        "always",
        "fp32",
        "bf16",
    )
    assert (vaes["kl-f8"]["upcast"], vaes["kl-f8"]["dtype"], vaes["kl-f8"]["dtype_requested"]) == (
        "auto",
        "fp32",
        "fp32",
    )
    per = pd.read_csv(out / "per_image.csv")
    assert per.loc[per.vae == "ft-mse", "psnr"].notna().all()


def test_scheduler_choice_and_bad_options_name_the_argument(tmp_path, tiny_pipeline_dir, three_vaes):  # noqa: F811
    one = {"kl-f8": three_vaes["kl-f8"]}
    out = run_t2i(tmp_path / "e", tiny_pipeline_dir, one, "pipeline.scheduler=EulerDiscreteScheduler").out_dir
    assert json.loads((out / "metrics.json").read_text())["pipeline"]["scheduler_class"] == "EulerDiscreteScheduler"
    for extra, pattern in [
        ("pipeline.scheduler=NotAScheduler", r"pipeline.scheduler='NotAScheduler'"),
        ("t2i.reference_vae=ft-ema", r"t2i.reference_vae='ft-ema'; choose one of kl-f8"),
        ("pipeline.height=60", r"pipeline.height=60.*multiple of 8"),
        ("pipeline.seeds=[1,1]", r"pipeline.seeds"),
        ("pipeline.steps=0", r"pipeline.steps=0"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            run_t2i(tmp_path / "x", tiny_pipeline_dir, one, extra)


def test_fid_and_kid_against_a_reference_set(tmp_path, tiny_pipeline_dir, three_vaes, image_dir):  # noqa: F811
    from tests.helpers import TinyExtractor

    two = {k: three_vaes[k] for k in ("kl-f8", "ft-mse")}
    fid = ["metrics=all", "metrics.fid.extractor=tests.helpers.TinyExtractor"]
    extra = [
        *fid,
        "metrics.fid.kid_subsets=5",
        f"cache_dir={tmp_path / 'c'}",
        "dataset@t2i.reference=folder",
        f"t2i.reference.path={image_dir}",
        "t2i.reference.resolution=32",
    ]
    TinyExtractor.calls = 0
    out = run_t2i(tmp_path / "a", tiny_pipeline_dir, two, *extra).out_dir
    assert TinyExtractor.calls == 6 + 2 * N_IMAGES  # 6 reference images once, then each VAE's decodes
    summary = pd.read_csv(out / "summary.csv").set_index(["vae", "metric"])
    for vae in two:
        assert summary.loc[(vae, "fid"), "n"] == N_IMAGES and np.isfinite(summary.loc[(vae, "fid"), "mean"])
        assert np.isfinite(summary.loc[(vae, "kid"), "mean"])
    protocol = json.loads((out / "metrics.json").read_text())["metrics"]["fid"]
    assert (
        protocol["reference"]["dataset"]["n_files"] == 6 and protocol["reference"]["statistics"]["source"] == "computed"
    )
    assert len(list((tmp_path / "c" / "refstats").glob("??/*.safetensors"))) == 1
    # decodes against a reference set are two independent samples: KID's estimator is the independent one
    kid = json.loads((out / "metrics.json").read_text())["metrics"]["kid"]
    assert kid["estimator"] == "independent" and "two independent samples" in kid["why_independent"]
    assert "independent-samples estimator" in summary.loc[("ft-mse", "kid"), "note"]
    # Without a reference set FID/KID are unavailable, with the way to add one.
    out = run_t2i(tmp_path / "b", tiny_pipeline_dir, two, *fid).out_dir
    summary = pd.read_csv(out / "summary.csv").set_index(["vae", "metric"])
    assert (
        summary.loc[("ft-mse", "fid"), "n"] == 0 and "dataset@t2i.reference" in summary.loc[("ft-mse", "fid"), "note"]
    )


def test_cli_runs_the_tiny_pipeline(tmp_path, tiny_pipeline_dir, three_vaes):  # noqa: F811
    r = evalvae_main(
        [
            "run",
            *overrides(tiny_pipeline_dir, {"kl-f8": three_vaes["kl-f8"], "ft-mse": three_vaes["ft-mse"]}),
            "metrics=default",  # LPIPS (task=t2i's default) without its weights would make the run incomplete
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "out" / "per_image.csv")) == 2 * N_IMAGES
    assert "(reference)" in r.stderr  # the console table marks the reference decoder


def test_cli_offline_sd15_fails_in_one_line(tmp_path):
    r = evalvae_main(
        [
            "run",
            "task=t2i",
            "pipeline=sd15",
            "suite=builtin",
            "+vae=[kl-f8,ft-ema,ft-mse]",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("evalvae:")]
    assert (
        len(errors) == 1
        and "pipeline 'sd15'" in errors[0]
        and "stable-diffusion-v1-5/stable-diffusion-v1-5" in errors[0]
    )
    assert "unavailable" in errors[0] and "pipeline.source=" in errors[0]


def test_the_report_shows_the_decoders_side_by_side(t2i_run):
    """The run's report (report=true) groups the VAEs in one section and builds its grids from the saved PNGs."""
    out, _, _ = t2i_run
    md = (out / "report" / "report.md").read_text()
    assert "## builtin prompts · local · 64×64" in md
    header = next(line for line in md.splitlines() if line.startswith("| VAE |"))
    assert "seed" not in header and "PSNR" in header  # prompt columns are not metrics
    assert all(f"| {v} |" in md for v in ("kl-f8", "ft-mse", "taesd"))
    grids = sorted((out / "report" / "grids").glob("*.png"))
    assert grids and "could not be shown" not in md
    assert "reference decoder kl-f8" in (out / "report" / "report.html").read_text()


# -- a VAE failing ---------------------------------------------------------------------------------
def failing(name: str, fail_at: int, failure: str = "error") -> list[str]:
    """``vae.<name>`` through :class:`tests.t2i_helpers.FailingKL`: its decode calls from ``fail_at`` on raise ``failure``."""
    return [
        f"vae.{name}._target_=tests.t2i_helpers.FailingKL",
        f"+vae.{name}.fail_at={fail_at}",
        f"+vae.{name}.failure={failure}",
    ]


def shared_latents(tmp_path) -> list[str]:
    """Latents from one cache (so runs decode the same bytes), three decode batches of 2, on the CPU."""
    return ["t2i.latents=cache", f"cache_dir={tmp_path / 'cache'}", "t2i.batch_size=2", "device=cpu"]


def vae_records(out) -> list[dict]:
    return json.loads((out / "vaes.json").read_text())


@pytest.mark.parametrize("failure", ["oom", "error"])
def test_a_vae_failing_mid_decode_is_recorded_and_the_others_run(
    tmp_path, tiny_pipeline_dir, three_vaes, caplog, failure
):  # noqa: F811
    """ft-mse decodes its first batch of latents, then fails; kl-f8 (the reference) and taesd are complete."""
    common = shared_latents(tmp_path)
    with caplog.at_level(logging.ERROR):
        outcome = run_t2i(tmp_path / "run", tiny_pipeline_dir, three_vaes, *common, *failing("ft-mse", 1, failure))
    out = outcome.out_dir
    assert set(outcome.failed) == {"ft-mse"}
    records = vae_records(out)
    assert [(v["vae"], v["status"], v["reference"]) for v in records] == [
        ("kl-f8", "ok", True),
        ("ft-mse", "failed", False),
        ("taesd", "ok", False),
    ]
    assert records[1]["failure"] == failure
    if failure == "oom":
        assert "out of memory" in outcome.failed["ft-mse"] and records[1]["error"].startswith(
            "OutOfMemoryError: CUDA out of memory"
        )
    else:
        assert records[1]["error"] == "RuntimeError: stand-in decoder failure"
    assert "VAE 'ft-mse'" in caplog.text and "2 partial row(s) dropped" in caplog.text

    per = pd.read_csv(out / "per_image.csv")
    assert per.groupby("vae").size().to_dict() == {"kl-f8": N_IMAGES, "taesd": N_IMAGES}
    summary = pd.read_csv(out / "summary.csv")
    assert list(dict.fromkeys(summary.vae)) == ["kl-f8", "taesd"]
    assert set(pd.read_csv(out / "summary_by_category.csv").vae) == {"kl-f8", "taesd"}
    assert pd.read_csv(out / "timings.csv")["vae"].tolist() == ["kl-f8", "taesd"]
    assert not (out / "per_image.partial.csv").exists() and not (out / "images" / "ft-mse").exists()
    assert len(list((out / "images" / "taesd").glob("*.png"))) == N_IMAGES

    two = {k: three_vaes[k] for k in ("kl-f8", "taesd")}
    solo = run_t2i(tmp_path / "solo", tiny_pipeline_dir, two, *common).out_dir
    pd.testing.assert_frame_equal(summary, pd.read_csv(solo / "summary.csv"), check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(per, pd.read_csv(solo / "per_image.csv"), check_exact=False, rtol=1e-9)


def test_a_reference_decoder_failing_leaves_agreement_empty_and_scores_the_rest(
    tmp_path, tiny_pipeline_dir, three_vaes, tiny_clip_dir, image_dir
):  # noqa: F811
    """kl-f8, the reference, fails on its second batch: the others have no agreement numbers at all (a
    prefix of the images would not be comparable), and their CLIP score and FID/KID are complete."""
    common = [
        *shared_latents(tmp_path),
        f"t2i.clip_score={{_target_:evalvae.t2i.clipscore.CLIPScore,model:'{tiny_clip_dir}'}}",
        "metrics=all",
        "metrics.fid.extractor=tests.helpers.TinyExtractor",
        "metrics.fid.kid_subsets=5",
        "dataset@t2i.reference=folder",
        f"t2i.reference.path={image_dir}",
        "t2i.reference.resolution=32",
    ]
    outcome = run_t2i(tmp_path / "run", tiny_pipeline_dir, three_vaes, *common, *failing("kl-f8", 1))
    out = outcome.out_dir
    assert set(outcome.failed) == {"kl-f8"}
    records = vae_records(out)
    assert [(v["vae"], v["status"], v["reference"]) for v in records] == [
        ("kl-f8", "failed", True),
        ("ft-mse", "ok", False),
        ("taesd", "ok", False),
    ]

    per = pd.read_csv(out / "per_image.csv")
    assert per.groupby("vae").size().to_dict() == {"ft-mse": N_IMAGES, "taesd": N_IMAGES}
    assert per[["psnr", "ssim", "lpips"]].isna().all().all(), (
        "no agreement for any image, not only those after the failure"
    )
    assert per["clip_score"].notna().all()
    summary = pd.read_csv(out / "summary.csv").fillna({"note": ""}).set_index(["vae", "metric"])
    for vae in ("ft-mse", "taesd"):
        for metric in ("psnr", "ssim", "lpips"):
            assert (
                summary.loc[(vae, metric), "n"] == 0
                and "reference decoder 'kl-f8' failed" in summary.loc[(vae, metric), "note"]
            )
        for metric in ("clip_score", "fid", "kid"):
            assert summary.loc[(vae, metric), "n"] == N_IMAGES and np.isfinite(summary.loc[(vae, metric), "mean"])
            assert "failed" not in summary.loc[(vae, metric), "note"]

    # The same two decoders with ft-mse as the reference: the same CLIP scores and FID/KID.
    two = {k: three_vaes[k] for k in ("ft-mse", "taesd")}
    other = run_t2i(tmp_path / "other", tiny_pipeline_dir, two, *common).out_dir
    theirs = pd.read_csv(other / "per_image.csv").set_index(["vae", "image"])
    np.testing.assert_allclose(
        per.set_index(["vae", "image"]).loc[theirs.index, "clip_score"], theirs["clip_score"], rtol=1e-6
    )
    theirs_summary = pd.read_csv(other / "summary.csv").set_index(["vae", "metric"])
    for key in [(v, m) for v in two for m in ("clip_score", "fid", "kid")]:
        assert summary.loc[key, "mean"] == pytest.approx(theirs_summary.loc[key, "mean"], rel=1e-6, abs=1e-12), key
    assert theirs_summary.loc[("taesd", "psnr"), "n"] == N_IMAGES


def test_a_reference_decoder_failing_to_load_exits_with_the_failure(tmp_path, tiny_pipeline_dir, three_vaes):  # noqa: F811
    two = {"kl-f8": tmp_path / "no-such-vae", "ft-mse": three_vaes["ft-mse"]}
    r = evalvae_main(["run", *overrides(tiny_pipeline_dir, two), f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr[-3000:]  # incomplete: a VAE failed
    assert "1 of 2 VAE(s) failed" in r.stderr
    records = {v["vae"]: v for v in vae_records(tmp_path / "run")}
    assert (records["kl-f8"]["status"], records["kl-f8"]["failure"], records["kl-f8"]["reference"]) == (
        "failed",
        "load",
        True,
    )
    assert "no-such-vae" in records["kl-f8"]["error"] and records["ft-mse"]["status"] == "ok"
    summary = pd.read_csv(tmp_path / "run" / "summary.csv").set_index("metric")
    assert set(summary.vae) == {"ft-mse"} and "reference decoder 'kl-f8' failed" in summary.loc["psnr", "note"]
    assert len(pd.read_csv(tmp_path / "run" / "per_image.csv")) == N_IMAGES


def test_no_vae_loaded_generates_nothing(tmp_path, tiny_pipeline_dir):  # noqa: F811
    with counting_unet_calls() as calls:
        outcome = run_t2i(tmp_path / "run", tiny_pipeline_dir, {"kl-f8": tmp_path / "no-such-vae"})
    assert set(outcome.failed) == {"kl-f8"} and outcome.summary.empty
    assert calls == [] and not (tmp_path / "run" / "latents").exists()


def test_cmmd_and_fd_dinov2_against_a_reference_set(tmp_path, tiny_pipeline_dir, three_vaes, image_dir, tiny_clip_dir):  # noqa: F811
    """The set metrics beside FID take the decodes against the reference set too, under their t2i names, with the
    estimators of two independent samples (on a tiny random CLIP and DINOv2: the real ones cannot be had offline)."""
    from tests.metrics.test_fd_dinov2 import save_tiny_dinov2

    one = {"ft-mse": three_vaes["ft-mse"]}
    extra = [
        "metrics=[cmmd,fd_dinov2]",
        f"metrics.cmmd.model={tiny_clip_dir}",
        f"metrics.dinov2.model={save_tiny_dinov2(tmp_path / 'dinov2')}",
        f"cache_dir={tmp_path / 'c'}",
        "dataset@t2i.reference=folder",
        f"t2i.reference.path={image_dir}",
        "t2i.reference.resolution=32",
    ]
    out = run_t2i(tmp_path / "a", tiny_pipeline_dir, one, *extra).out_dir
    summary = pd.read_csv(out / "summary.csv").set_index(["vae", "metric"])
    for name in ("cmmd", "fd_dinov2"):
        assert summary.loc[("ft-mse", name), "n"] == N_IMAGES and np.isfinite(summary.loc[("ft-mse", name), "mean"])
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["cmmd"]["estimator"] == "reference" and "why_reference" in metrics["cmmd"]
    assert metrics["fd_dinov2"]["info"]["title"] == "FD-DINOv2" and "rfd_dinov2" not in metrics
