"""The metric contract, checked on every metric of the registry (``evalvae.metrics.info.METRICS``).

A registered metric declares the infos of its results, in the registry (read without importing it) and
on its class; returns a dict keyed by exactly those names; gives the perfect score on identical inputs;
gives an image the same values whatever batch it is in and in whatever order; is never shown the
reconstructions the run found non-finite (NaN in every column); computes on the inputs' device; and,
where it holds nothing bound to its process, gives the same values after pickling. Metrics that need
weights use the real ones (``$EVALVAE_TEST_WEIGHTS``; skipped without them, failed under CI=true);
CLIP score, whose weights cannot be had offline, runs on a tiny random CLIP. Agreement with reference
implementations (scikit-image, the lpips package, float64 formulas) is tested in each metric's own file.
"""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import evalvae.conf
from evalvae.metrics import Unavailable, build_metrics, declared, fact_columns, result_columns, unavailable
from evalvae.metrics.cmmd import CMMD
from evalvae.metrics.color import DeltaE
from evalvae.metrics.distribution import FIDKID
from evalvae.metrics.dists import DISTS
from evalvae.metrics.faces import FaceFidelity
from evalvae.metrics.fd_dinov2 import FDDINOv2
from evalvae.metrics.info import METRICS, registered, registered_info
from evalvae.metrics.lpips import LPIPS
from evalvae.metrics.msssim import MSSSIM
from evalvae.metrics.pixel import PSNR, SSIM
from evalvae.metrics.regions import REGIONS
from evalvae.metrics.text import TextFidelity
from evalvae.metrics.weights import MetricUnavailable
from evalvae.recon.loop import score
from evalvae.t2i.clipscore import CLIPScore
from tests.helpers import compose_run
from tests.metrics.test_fd_dinov2 import tiny_dinov2  # noqa: F401 (fixture)
from tests.metrics.test_pixel import pair
from tests.prerequisites import missing, require_module
from tests.t2i_helpers import tiny_clip_dir  # noqa: F401 (fixture)

CONF = Path(evalvae.conf.__file__).parent
# What identical inputs score, per result: a number (within its stated tolerance), or None where a
# result has no perfect score (a count, agreement with the ground truth, a score of an image against text).
PERFECT = {
    "psnr": (math.inf, 0.0),
    "ssim": (1.0, 1e-12),  # measured: exactly 1.0 with either backend
    "ms_ssim": (1.0, 1e-12),  # measured: exactly 1.0 with either backend
    "lpips": (0.0, 0.0),  # measured: exactly 0 (equal features, the distance of each layer is 0)
    "dists": (0.0, 1e-6),  # measured: -1.2e-7 (1 - a float32 sum of weights that is 1 up to rounding)
    "delta_e": (0.0, 0.0),
    "delta_e_p95": (0.0, 0.0),
    "text_ned": (0.0, 0.0),  # equal crops read alike
    "text_acc": (1.0, 0.0),
    "text_t_ned": None,
    "text_t_acc": None,
    "text_regions": None,
    "face_sim": (1.0, 1e-6),  # measured: exactly 1.0 (equal chips, equal descriptors)
    "face_below": (0.0, 0.0),
    "face_regions": None,
    "rfid": (0.0, 1e-9),  # measured: 1.4e-14 (Inception), -1e-15 (stand-in): round-off of equal statistics
    "kid": (0.0, 0.0),  # the paired estimator leaves each pair's own terms out: exactly 0
    "cmmd": (0.0, 0.0),  # the same: the paired estimator's sums cancel exactly
    "rfd_dinov2": (0.0, 1e-9),  # rFID's computation on other features: round-off of equal statistics
    "clip_score": None,
    "bpp": None,
    "latent_bits_psnr_drop": None,
    "bpp_target": None,
    "codec_quality": None,
}


def noisy(n=4, h=48, w=64, noise=12.0, seed=0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``n`` photo-like originals and noisy reconstructions, float64 pixels ``(n, 3, h, w)``."""
    return *pair(n, h, w, noise, seed), {}


def text_pages() -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Two text chart pages (16-64 px lines) and the blank one at 128 px, and blurred copies."""
    from evalvae.data.textchart import textchart

    ds = textchart(128)
    samples = [ds[i] for i, p in enumerate(ds.pages) if p.id in ("sans-16-24px", "sans-32-64px", "blank")]
    o = torch.stack([s.image for s in samples]).double()
    blurred = torch.nn.functional.avg_pool2d(o, 3, stride=1, padding=1, count_include_pad=False).round()
    return o, blurred, {"truth": [s.truth for s in samples]}


def face_squares(request) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Kodak's two portraits and a landscape without a face at 256², and blurred copies."""
    from tests.metrics.test_faces import blur, pixels, squares

    images = squares(request.getfixturevalue("assets"))
    return pixels(images), pixels(blur(images, 2)), {}


def prompts(request) -> tuple[torch.Tensor, list[str], dict]:
    images = torch.randint(0, 256, (4, 3, 48, 48), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return images, ["a red car", "line art of a cat", "neon sign at night", "a bowl of fruit"], {}


def five(request) -> tuple[torch.Tensor, torch.Tensor, dict]:
    return noisy(n=5, h=40, w=40)


def weights(request, path: str) -> str:
    return str(request.getfixturevalue("real_weights") / path)


def build_text(request):
    require_module("rapidocr_onnxruntime", 'pip install "evalvae[regions]"')
    return TextFidelity(cache=False)


def build_faces(request):
    try:
        return FaceFidelity(cache=False)
    except MetricUnavailable as e:
        missing(str(e))


@dataclass
class Case:
    """One metric of the registry as the contract checks it.

    ``kind``: ``pair`` (per image, full reference), ``set`` (of a set of images) or ``text`` (an image
    against its prompt). ``tol``: how far an image's values may move with its batch (the measurement beside it).
    ``pickles``: whether it holds nothing bound to its process; every run builds its metrics in each process
    that uses them (each torchrun rank, never a loader worker), so pickling is checked where it holds.
    """

    id: str
    key: str
    build: Callable
    inputs: Callable = lambda request: noisy()
    kind: str = "pair"
    tol: float = 0.0
    pickles: bool = True


INCEPTION = "fid/pt_inception-2015-12-05_torch-fidelity.pth"
CASES = [
    Case("psnr", "psnr", lambda r: PSNR(), tol=1e-12),
    Case("ssim-skimage", "ssim", lambda r: SSIM(backend="skimage"), tol=1e-12),  # measured: 0 (one image at a time)
    Case("ssim-torchmetrics", "ssim", lambda r: SSIM(backend="torchmetrics"), tol=1e-12),  # measured: 0
    Case("psnr-y", "psnr", lambda r: PSNR(channels="y"), tol=1e-12),
    Case("ssim-y", "ssim", lambda r: SSIM(channels="y"), tol=1e-12),
    # at 176 px, its smallest side; one image at a time with either backend: measured 0
    Case("ms_ssim-scipy", "ms_ssim", lambda r: MSSSIM(backend="scipy"), lambda r: noisy(n=3, h=176, w=176), tol=1e-12),
    Case(
        "ms_ssim-torchmetrics",
        "ms_ssim",
        lambda r: MSSSIM(backend="torchmetrics"),
        lambda r: noisy(n=2, h=176, w=176),
        tol=1e-12,
    ),
    # float32 convolutions over batches of other sizes: measured 1.3e-8 (alex), 7.5e-9 (vgg)
    Case("lpips-alex", "lpips", lambda r: LPIPS("alex", weights(r, "lpips/alexnet_features.pth")), tol=1e-6),
    Case("lpips-vgg", "lpips", lambda r: LPIPS("vgg", weights(r, "lpips/vgg16_features.pth")), tol=1e-6),
    # VGG16 in float32 over batches of other sizes, as LPIPS-vgg: measured 0
    Case("dists", "dists", lambda r: DISTS(weights(r, "lpips/vgg16_features.pth")), tol=1e-6),
    Case("color", "color", lambda r: DeltaE(), tol=1e-12),
    # readings are discrete: a crop is read alike in any batch (padded to its own width)
    Case("text", "text", build_text, lambda r: text_pages(), pickles=False),  # onnxruntime sessions
    Case("faces", "faces", build_faces, face_squares, tol=1e-6, pickles=False),  # measured 0; holds the dlib module
    # A set metric's values are of the set, from per-image features (batch independence is theirs): here
    # through a stand-in extractor (rFID's and KID's computation, 0.1 s), and through the real Inception under
    # slow (its 2048-d Fréchet distance takes 20-30 s on two cores). Features of an image alone vs in a batch
    # of 5: measured 1.8e-15 (stand-in, float64 products), 0 (Inception).
    Case("fid", "fid", lambda r: FIDKID(extractor="tests.helpers.TinyExtractor", kid_subsets=5), five, "set", 1e-12),
    Case("fid-inception", "fid", lambda r: FIDKID(weights=weights(r, INCEPTION), kid_subsets=5), five, "set", 1e-6),
    # on a tiny random DINOv2 (ViT-L/14 cannot be had offline); features of an image alone vs in a batch: measured 0
    Case("dinov2", "dinov2", lambda r: FDDINOv2(model=str(r.getfixturevalue("tiny_dinov2"))), five, "set", 1e-6),
    # on a tiny random CLIP (CLIP ViT-L/14@336 cannot be had offline); unit-norm float32 embeddings of an image
    # alone vs in a batch of 5: measured 6e-8
    Case("cmmd", "cmmd", lambda r: CMMD(model=str(r.getfixturevalue("tiny_clip_dir"))), five, "set", 1e-6),
    # scores on a 0..100 scale; float32 kernels of other batch sizes: measured 1.2e-5
    Case(
        "clip_score", "clip_score", lambda r: CLIPScore(str(r.getfixturevalue("tiny_clip_dir"))), prompts, "text", 1e-4
    ),
]


# a second LPIPS backbone; Inception's 2048-d statistics; torchmetrics' float64 convolutions on a CPU (1.3 s an image)
SLOW = ("lpips-vgg", "fid-inception", "ms_ssim-torchmetrics")
_BUILT: dict[str, object] = {}


@pytest.fixture(
    params=[pytest.param(c, marks=[pytest.mark.slow] * (c.id in SLOW)) for c in CASES],
    ids=[c.id for c in CASES],
)
def case(request) -> tuple[Case, object, tuple]:
    """A case, its metric (built once per process) and its inputs."""
    c = request.param
    if c.id not in _BUILT:
        _BUILT[c.id] = c.build(request)
    return c, _BUILT[c.id], c.inputs(request)


def values(c: Case, metric, x: tuple) -> dict[str, torch.Tensor]:
    """The metric's values of inputs ``x``: per image (a pair or text metric), or of the set (``(1,)`` each)."""
    a, b, kwargs = x
    if c.kind == "set":
        real, fake = metric.new_state(), metric.new_state()
        metric.update(real, a.to(torch.uint8), list(range(len(a))))
        metric.update(fake, b.to(torch.uint8), list(range(len(b))))
        out = metric.compute(real, fake)
        return {k: torch.tensor([v["mean"]], dtype=torch.float64) for k, v in out.items()}
    out = metric(a, b, **kwargs)
    return {k: v for k, v in out.items() if k != REGIONS}


def per_image(c: Case, metric, x: tuple, one_by_one: bool = False) -> dict[str, torch.Tensor]:
    """What the metric computes of each image: its values (a set metric: the reconstructions' features, from
    which its values follow); ``one_by_one``: each image in a batch of its own."""
    a, b, kwargs = x
    if one_by_one:
        parts = [per_image(c, metric, take(x, [i])) for i in range(len(a))]
        return {k: torch.cat([p[k].cpu() for p in parts]) for k in parts[0]}
    if c.kind == "set":
        return {"features": torch.as_tensor(metric.features(b.to(torch.uint8)), dtype=torch.float64)}
    return values(c, metric, x)


def take(x: tuple, index: list[int]) -> tuple:
    a, b, kwargs = x
    b = [b[i] for i in index] if isinstance(b, list) else b[index]
    return a[index], b, {k: [v[i] for i in index] for k, v in kwargs.items()}


def close(got: dict, want: dict, tol: float) -> None:
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k].cpu(), want[k].cpu(), rtol=0, atol=tol, equal_nan=True, msg=k)


# --- the registry ----------------------------------------------------------------------------------


def test_every_registered_metric_has_a_case_and_every_result_a_perfect_score():
    assert {c.key for c in CASES} | {"rate"} == set(METRICS)
    assert {i.name for m in METRICS.values() for i in m.infos} == set(PERFECT)


@pytest.mark.parametrize("key", sorted(METRICS))
def test_the_registry_states_what_each_class_declares(key):
    entry = METRICS[key]
    cls = entry.load()
    assert tuple(cls.infos) == entry.infos and all(registered_info(i.name) is i for i in entry.infos)
    assert registered(entry.dotted) is entry and registered(entry.target) is entry
    if key != "rate":
        assert cls.set_level is entry.set_level


def test_every_yaml_names_the_registered_class_under_its_key():
    seen = set()
    for path in sorted((CONF / "metrics").glob("*.yaml")):
        for key, spec in OmegaConf.load(path).items():
            if OmegaConf.is_dict(spec) and "_target_" in spec:
                assert registered(spec._target_) is METRICS[key], f"{path.name}: metrics.{key}"
                seen.add(key)
    clip = OmegaConf.load(CONF / "task" / "t2i.yaml").t2i.clip_score
    assert registered(clip._target_) is METRICS["clip_score"]
    assert seen == set(METRICS) - {"clip_score", "rate"}


def test_the_registry_tells_a_specs_results_and_compare_reads_infos_without_importing_torch():
    code = (
        "import sys, evalvae.compare.cli; from omegaconf import OmegaConf; from evalvae.metrics import declared\n"
        "spec = OmegaConf.create({'_target_': 'evalvae.metrics.distribution.FIDKID', 'kid': False})\n"
        "infos, set_level = declared(spec)\n"
        "text, _ = declared(OmegaConf.create({'_target_': 'evalvae.metrics.text.TextFidelity'}))\n"
        "print([i.name for i in infos], set_level, [i.name for i in text if not i.summarised], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['rfid']", "True", "['text_regions']", "False"]


def test_an_unavailable_metric_has_the_columns_and_rows_of_the_metric():
    spec = OmegaConf.create({"_target_": "evalvae.metrics.faces.FaceFidelity"})
    faces = unavailable("faces", spec, "no dlib")
    x = noisy(n=2)[0]
    out = faces(x, x)
    assert list(out) == ["face_sim", "face_below", "face_regions"] and all(v.isnan().all() for v in out.values())
    assert (faces.key, faces.set_level, faces.note) == ("faces", False, "no dlib")
    fid = unavailable("fid", OmegaConf.create({"_target_": "evalvae.metrics.distribution.FIDKID", "kid": False}), "x")
    assert fid.set_level and [r["metric"] for r in fid.nan_rows()] == ["rfid"]
    both = unavailable("fid", OmegaConf.create({"_target_": METRICS["fid"].dotted}), "x")
    assert [r["metric"] for r in both.nan_rows()] == ["rfid", "kid"]
    assert declared(spec) == (METRICS["faces"].infos, False)


def test_build_metrics_builds_every_metric_of_a_config_with_the_registered_infos(tmp_path):
    absent = [f"metrics.lpips.backbone_weights={tmp_path / 'a.pth'}", f"metrics.fid.weights={tmp_path / 'b.pth'}"]
    built = build_metrics(compose_run(["+vae=taesd", "metrics=[all,color]", *absent]).metrics)
    assert [type(m).__name__ for m in built] == ["PSNR", "SSIM", "Unavailable", "Unavailable", "DeltaE"]
    for m, key in zip(built, ("psnr", "ssim", "lpips", "fid", "color")):
        assert m.infos == METRICS[key].infos, key
    assert "color" not in compose_run(["+vae=taesd", "metrics=all"]).metrics  # metrics=all: compare baselines' columns
    assert [(m.key, m.set_level) for m in built if isinstance(m, Unavailable)] == [("lpips", False), ("fid", True)]


# --- the contract, per metric ----------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_values_are_keyed_by_the_declared_infos_on_the_inputs_device(case, device):
    c, metric, x = case
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    names = [i.name for i in metric.infos]
    assert names == [i.name for i in METRICS[c.key].infos_for({})]
    on_cpu = values(c, metric, x)
    if device == "cuda":
        if c.kind == "set":
            metric.extractor.to(device)
        elif c.kind == "text":
            metric.to(torch.device(device))
        a, b, kwargs = x
        got = values(c, metric, (a.to(device), b if c.kind == "text" else b.to(device), kwargs))
        # float32 kernels on another device: a stated tolerance, not bit equality
        close(got, on_cpu, max(c.tol, 1e-4))
    else:
        got = on_cpu
    assert list(got) == names
    n = 1 if c.kind == "set" else len(x[0])
    for name, v in got.items():
        assert v.dtype == torch.float64 and tuple(v.shape) == (n,), name
        if c.kind == "pair":
            assert v.device.type == device, name
    if c.kind == "pair":
        out = metric(x[0], x[1], **x[2])
        assert set(out) == {*names, *([REGIONS] if c.key in ("text", "faces") else [])}


def test_identical_inputs_give_the_perfect_score(case):
    c, metric, x = case
    a, _, kwargs = x
    if c.kind == "text":
        pytest.skip("an image scored against its prompt: there are no identical inputs")
    if c.id == "fid-inception":
        pytest.skip("the values of identical statistics do not depend on the extractor (case fid)")
    got = values(c, metric, (a, a.clone(), {k: v for k, v in kwargs.items() if k != "truth"}))
    scored = 0
    for name, v in got.items():
        if PERFECT[name] is None:
            continue
        target, tol = PERFECT[name]
        defined = v[~v.isnan()]  # an image without text or faces has no value
        assert len(defined) > 0, name
        scored += 1
        if math.isinf(target):
            assert (defined == target).all(), (name, defined)
        else:
            assert (defined - target).abs().max() <= tol, (name, defined)
    assert scored


def test_an_image_scores_the_same_in_any_batch_and_in_any_order(case):
    c, metric, x = case
    whole = per_image(c, metric, x)
    assert any(torch.isfinite(v).any() for v in whole.values())
    close(per_image(c, metric, x, one_by_one=True), whole, c.tol)
    order = list(range(len(x[0])))[::-1]
    close(per_image(c, metric, take(x, order)), {k: v[order] for k, v in whole.items()}, c.tol)


def test_the_run_never_shows_a_metric_a_non_finite_reconstruction(case):
    c, metric, x = case
    if c.kind != "pair":
        pytest.skip("set metrics see only the finite reconstructions (ReconTask.fake_features)")
    a, b, kwargs = x
    finite = torch.tensor([True, False] + [True] * (len(a) - 2))
    got = score([metric], a, b, finite, kwargs.get("truth"))
    keep = [0, *range(2, len(a))]
    alone = values(c, metric, take(x, keep))
    names = [i.name for i in metric.infos]
    assert set(got) == {*names, *([REGIONS] if REGIONS in got else [])}
    for name in names:
        assert math.isnan(got[name][1]), name
        torch.testing.assert_close(
            torch.tensor([got[name][i] for i in keep], dtype=torch.float64), alone[name].cpu(), equal_nan=True
        )
    if REGIONS in got:
        assert got[REGIONS][1] == []


def test_a_metric_that_holds_nothing_process_bound_pickles(case):
    c, metric, x = case
    if not c.pickles:
        pytest.skip(f"{c.id} holds objects bound to its process; each process builds its own")
    close(per_image(c, pickle.loads(pickle.dumps(metric)), x), per_image(c, metric, x), 0.0)


# --- the rate columns ------------------------------------------------------------------------------


@pytest.mark.parametrize("latent_bits", [None, 6])
def test_the_rate_columns_are_its_declared_infos_and_do_not_depend_on_the_batch(latent_bits):
    from evalvae.recon.rate import Rate
    from tests.compare_helpers import IdentityVAE

    rate, vae = Rate(latent_bits=latent_bits), IdentityVAE("v", noise=0.01)
    images = noisy(n=3, h=16, w=16)[0].to(torch.uint8)
    z = vae.encode(images.float() / 127.5 - 1)
    _, whole = rate.decode(vae, z, images, ["a", "b", "c"])
    assert set(whole) == {i.name for i in rate.infos}
    assert rate.infos == METRICS["rate"].infos_for({"latent_bits": latent_bits})
    assert result_columns(rate) == ["bpp", *(["latent_bits_psnr_drop"] if latent_bits else [])]
    assert fact_columns(rate) == ["bpp_target", "codec_quality"]
    parts = [rate.decode(vae, z[i : i + 1], images[i : i + 1], ["abc"[i]])[1] for i in range(3)]
    for name, column in whole.items():
        np.testing.assert_allclose([p[name][0] for p in parts], column, rtol=0, atol=1e-9)  # measured: 0
    # a float32 latent of 3 channels per pixel; quantized, 6 bits each and each channel's min and max per image
    assert whole["bpp"] == [3 * (latent_bits + 64 / 16**2) if latent_bits else 32 * 3.0] * 3
    if latent_bits:
        assert all(d > 0 for d in whole["latent_bits_psnr_drop"])  # quantizing the latents loses PSNR
