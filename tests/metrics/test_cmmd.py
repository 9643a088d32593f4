"""CMMD against float64 formulas written here: the paper's estimator (google-research/cmmd's ``distance.py``, every
kernel value averaged) and the paired one; their bias on paired and independent sets; the CLIP embedding and its
unavailability (the contract, tests/metrics/test_contract.py, checks identical inputs, batch and order on a tiny
random CLIP: CLIP ViT-L/14@336 cannot be had offline)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from evalvae.metrics.cmmd import CMMD, SCALE, SIGMA, ClipEmbedding, _kernel_sum, cmmd
from evalvae.metrics.weights import MetricUnavailable
from tests.helpers import photo
from tests.t2i_helpers import tiny_clip_dir  # noqa: F401 (fixture)

# float64 sums in another order: measured 2e-16 relative
TOL = 1e-12


def unit(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def k(a: np.ndarray, b: np.ndarray) -> float:
    return math.exp(-float(((a - b) ** 2).sum()) / (2 * SIGMA**2))


def paper(x: np.ndarray, y: np.ndarray) -> float:
    """The paper's code: 1000 (mean of k over x×x + over y×y - 2 over x×y), every pair, the diagonals too."""
    kxx = np.mean([[k(a, b) for b in x] for a in x])
    kyy = np.mean([[k(a, b) for b in y] for a in y])
    kxy = np.mean([[k(a, b) for b in y] for a in x])
    return SCALE * (kxx + kyy - 2 * kxy)


def paired(x: np.ndarray, y: np.ndarray) -> float:
    """1000 / (n (n - 1)) sum over i != j of k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i)."""
    n = len(x)
    total = sum(
        k(x[i], x[j]) + k(y[i], y[j]) - k(x[i], y[j]) - k(x[j], y[i]) for i in range(n) for j in range(n) if i != j
    )
    return SCALE * total / (n * (n - 1))


def test_both_estimators_equal_their_formulas():
    x = unit(12)
    y = x + 0.3 * unit(12, seed=1)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    assert cmmd(x, y, "reference") == pytest.approx(paper(x, y), rel=TOL)
    assert cmmd(x, y, "paired") == pytest.approx(paired(x, y), rel=TOL)
    other = unit(7, seed=2)  # the paper's estimator takes sets of any two sizes
    assert cmmd(x, other, "reference") == pytest.approx(paper(x, other), rel=TOL)
    with pytest.raises(ValueError, match="as many originals as reconstructions"):
        cmmd(x, other, "paired")


def test_blocks_do_not_change_the_sums():
    x, y = unit(50), unit(50, seed=3)
    assert _kernel_sum(x, y, block=7) == pytest.approx(_kernel_sum(x, y), rel=TOL)


def test_a_perfect_reconstruction_scores_0_and_too_few_pairs_nothing():
    x = unit(9)
    assert cmmd(x, x, "paired") == 0 and cmmd(x, x, "reference") == pytest.approx(0, abs=1e-12)
    assert math.isnan(cmmd(x[:1], x[:1], "paired")) and math.isnan(cmmd(x[:0], x[:0], "reference"))


def test_the_paired_estimator_is_unbiased_where_the_papers_is_not():
    """Two samples of one distribution (MMD 0), drawn as pairs: over 300 draws the paired estimator averages 0
    within its standard error, the paper's stays above 0 by its diagonal terms, about (2 - 2 E k(x, y)) / n."""
    draws = [(unit(10, 8, seed=2 * s), unit(10, 8, seed=2 * s + 1)) for s in range(300)]
    ours = np.array([cmmd(x, y, "paired") for x, y in draws])
    theirs = np.array([cmmd(x, y, "reference") for x, y in draws])
    assert abs(ours.mean()) < 3 * ours.std(ddof=1) / np.sqrt(len(ours))
    assert theirs.mean() > 10 * theirs.std(ddof=1) / np.sqrt(len(theirs))
    expected_bias = SCALE * (2 - 2 * np.mean([k(x[0], y[0]) for x, y in draws])) / 10
    assert theirs.mean() - ours.mean() == pytest.approx(expected_bias, rel=0.2)


def reference_loader(image: np.ndarray, size: int) -> np.ndarray:
    """google-research/cmmd's ``io_util._read_image`` of an ``(H, W, 3)`` uint8 image: the centred square, PIL bicubic
    to ``size``, then its ``compute_embeddings_for_dir``'s division by 255."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    im = Image.fromarray(image).crop((left, top, left + side, top + side))
    return np.asarray(im.resize((size, size), resample=Image.BICUBIC)).astype(np.float32) / 255.0


def test_clip_embeddings_follow_the_reference_preprocessing(tiny_clip_dir):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    ours = ClipEmbedding(str(tiny_clip_dir))
    images = torch.from_numpy(np.stack([photo(40, 56, seed=1), photo(40, 56, seed=2), photo(40, 56, seed=3)]))
    images = images.permute(0, 3, 1, 2)
    got = ours(images)
    processor = CLIPImageProcessor.from_pretrained(tiny_clip_dir)
    model = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_dir).eval()
    size = processor.crop_size["height"]
    x = np.stack([reference_loader(i, size) for i in images.permute(0, 2, 3, 1).numpy()])
    inputs = processor(images=list(x), do_resize=False, do_center_crop=False, do_rescale=False, return_tensors="pt")
    with torch.no_grad():
        e = model(**inputs).image_embeds.double()
    want = (e / torch.linalg.norm(e, dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # float32 network, other normalisation order
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-12)
    assert ours.dim == got.shape[1] and ours.note.startswith("CLIP clip, not the paper's")


def test_without_its_clip_cmmd_is_unavailable_naming_the_argument():
    with pytest.raises(MetricUnavailable, match=r"openai/clip-vit-large-patch14-336.*metrics\.cmmd\.model=DIR"):
        CMMD()


def test_unpaired_sets_use_the_papers_estimator_and_say_so(tiny_clip_dir):
    metric = CMMD(model=str(tiny_clip_dir))
    assert metric.protocol()["cmmd"]["estimator"] == "paired"
    metric.unpaired("decodes against a reference image set")
    protocol = metric.protocol()["cmmd"]
    assert protocol["estimator"] == "reference" and protocol["why_reference"].startswith("decodes against")
    real, fake = metric.new_state(), metric.new_state()
    images = torch.randint(0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    metric.update(real, images)
    metric.update(fake, images.flip(-1))
    row = metric.compute(real, fake)["cmmd"]
    assert row["mean"] == pytest.approx(cmmd(real.features, fake.features, "reference"), rel=TOL)
    assert "the paper's estimator" in row["note"] and row["n"] == 4
