"""CMMD (Jayasumana et al. 2024): the MMD between CLIP image embeddings of the originals and the reconstructions.

The paper's reference code (google-research/cmmd) embeds images with CLIP ViT-L/14 at 336 px
(``openai/clip-vit-large-patch14-336``, here transformers' ``CLIPVisionModelWithProjection``): each 8-bit
image centre-cropped to a square and resized by PIL to 336x336, bicubic (antialiased, 8-bit again: its
``io_util``), then in [0, 1], normalised with CLIP's mean and std; the projected embedding divided by its
norm. The distance is the MMD with the Gaussian RBF
kernel ``k(a, b) = exp(-|a - b|² / (2 σ²))``, σ = 10, times 1000.

The paper's estimator averages every kernel value, the diagonals included (``estimator=reference``):
``1000 (mean K_xx + mean K_yy - 2 mean K_xy)``. On a VAE's reconstructions the two sets are pairs, not
independent samples, and the lesson of evalvae's paired KID applies: by default (``estimator=paired``)
each reconstruction is paired with its own original and the paired terms are left out,
``1000 / (n (n - 1)) Σ_{i≠j} [k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i)]``, unbiased for paired
sets and exactly 0 for a perfect reconstruction. Where the sets are not pairs (``task=t2i``), the
reference estimator is used, and the protocol says so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evalvae.checkpoints import local_then_hub, state_dict_sha256
from evalvae.errors import check_choice
from evalvae.metrics import info as shipped
from evalvae.metrics.distribution import FeatureSetMetric
from evalvae.metrics.features import FeatureExtractor, quiet_transformers
from evalvae.metrics.frechet import FeatureStats
from evalvae.metrics.weights import MetricUnavailable

CLIP_L14_336 = "openai/clip-vit-large-patch14-336"
SIGMA = 10.0
SCALE = 1000.0
ESTIMATORS = ("paired", "reference")
FORMULAS = {
    "paired": "1000 / (n (n - 1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i)]",
    "reference": "1000 (mean K_xx + mean K_yy - 2 mean K_xy), every pair (the diagonals too), as the paper's code",
}


def _kernel_sum(a: np.ndarray, b: np.ndarray, block: int = 1024) -> tuple[float, float]:
    """The sum of ``k(a_i, b_j)`` over all ``i, j`` and over ``i = j`` (when the shapes match), in float64 blocks."""
    gamma = 1.0 / (2.0 * SIGMA**2)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a2, b2 = (a * a).sum(1), (b * b).sum(1)
    total = 0.0
    for s in range(0, len(a), block):
        d = a2[s : s + block, None] + b2[None, :] - 2.0 * (a[s : s + block] @ b.T)
        total += float(np.exp(-gamma * np.maximum(d, 0.0)).sum())
    diagonal = float(np.exp(-gamma * np.maximum(((a - b) ** 2).sum(1), 0.0)).sum()) if a.shape == b.shape else math.nan
    return total, diagonal


def cmmd(x: np.ndarray, y: np.ndarray, estimator: str = "paired") -> float:
    """CMMD of ``(n, d)`` embeddings ``x`` (originals) and ``y`` (reconstructions; row ``i`` pairs with ``x[i]``
    under ``paired``). NaN where the estimator has no value (``paired`` below 2 pairs, or no images)."""
    n, m = len(x), len(y)
    if estimator == "paired":
        if n != m:
            raise ValueError(f"paired CMMD needs as many originals as reconstructions, got {n} and {m}")
        if n < 2:
            return math.nan
        (sxx, dxx), (syy, dyy), (sxy, dxy) = _kernel_sum(x, x), _kernel_sum(y, y), _kernel_sum(x, y)
        off = (
            (sxx - dxx) + (syy - dyy) - 2.0 * (sxy - dxy)
        )  # sum over i != j of k(x_i,y_j) + k(x_j,y_i) is 2 (sxy - dxy)
        return SCALE * off / (n * (n - 1))
    if not n or not m:
        return math.nan
    (sxx, _), (syy, _), (sxy, _) = _kernel_sum(x, x), _kernel_sum(y, y), _kernel_sum(x, y)
    return SCALE * (sxx / (n * n) + syy / (m * m) - 2.0 * sxy / (n * m))


class ClipEmbedding(FeatureExtractor):
    """CLIP image embeddings as the CMMD reference code computes them (see the module docstring): ``(N, d)``
    float64, unit norm. ``model``: a hub id or a local folder of a CLIP checkpoint."""

    libraries = ("torch", "transformers")

    def __init__(self, model: str = CLIP_L14_336, batch_size: int = 32):
        try:
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection
        except ImportError as e:
            raise MetricUnavailable(f"transformers is needed for CMMD ({e})") from None

        def load(local_files_only: bool):
            with quiet_transformers():
                return (
                    CLIPImageProcessor.from_pretrained(model, local_files_only=local_files_only),
                    CLIPVisionModelWithProjection.from_pretrained(model, local_files_only=local_files_only).eval(),
                )

        try:
            processor, self.model = local_then_hub(load, may_download=not Path(model).expanduser().is_dir())
        except Exception as e:  # offline, missing or gated: unavailable, with the reason
            raise MetricUnavailable(
                f"CMMD's CLIP {model!r} could not be loaded ({type(e).__name__}); download it where the hub is "
                "reachable, or set metrics.cmmd.model=DIR (a local CLIP checkpoint)"
            ) from None
        self.module, self.model_id, self.batch_size = self.model, model, batch_size
        self.name = model.rstrip("/").split("/")[-1]
        self.size = int(processor.crop_size["height"])
        self.mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.dim = int(self.model.config.projection_dim)
        self.weights_sha256 = state_dict_sha256(self.model.state_dict())
        self.standard = model == CLIP_L14_336
        self.note = "" if self.standard else f"CLIP {self.name}, not the paper's {CLIP_L14_336}"

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, size, size)`` float32 in [0, 1] of ``(N, 3, H, W)`` uint8 images, as the reference loader: the
        centred square of each, resized by PIL (bicubic, 8-bit)."""
        out = np.empty((len(images), self.size, self.size, 3), np.float32)
        for i, img in enumerate(images.cpu().permute(0, 2, 3, 1).numpy()):
            h, w = img.shape[:2]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            square = Image.fromarray(img[top : top + side, left : left + side], mode="RGB")
            out[i] = np.asarray(square.resize((self.size, self.size), Image.Resampling.BICUBIC), np.float32) / 255.0
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        out = []
        for chunk in images.split(self.batch_size):
            x = self.pixels(chunk).to(self.device)
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
            e = self.model(pixel_values=x).image_embeds.double()
            out.append((e / torch.linalg.norm(e, dim=-1, keepdim=True)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim))

    def identity(self) -> dict:
        return {
            "name": self.name,
            "model": self.model_id,
            "weights_sha256": self.weights_sha256,
            "resize": f"centred square, PIL bicubic to {self.size}x{self.size} (8-bit), then [0, 1] (the paper's loader)",
            "implementation": f"transformers {type(self.model).__name__}, image_embeds / their norm",
        }


class CMMD(FeatureSetMetric):
    """CMMD, lower is better; 0 for a perfect reconstruction under the paired estimator (see the module docstring)."""

    infos = (shipped.CMMD,)
    version = 1
    UNPAIRED = "reference"  # the paper's estimator: every pair, the diagonals too

    def __init__(self, model: str = CLIP_L14_336, estimator: str = "paired", batch_size: int = 32):
        estimator = check_choice("metrics.cmmd.estimator", estimator, ESTIMATORS)
        super().__init__(ClipEmbedding(model, batch_size), estimator)

    def compute(self, real: FeatureStats, fake: FeatureStats) -> dict[str, dict]:
        estimator, x, y, caveats = self.pairs(real, fake, "CMMD")
        described = f"paired estimator over {len(y)} image pairs" if estimator == "paired" else "the paper's estimator"
        clip = self.extractor.note or f"CLIP {self.extractor.name}"
        note = "; ".join(filter(None, [clip, described, *caveats]))
        return {"cmmd": {"mean": cmmd(x, y, estimator), "std": math.nan, "n": fake.n, "note": note}}

    def protocol(self) -> dict:
        out = {
            "implementation": "evalvae float64 MMD of CLIP embeddings (evalvae.metrics.cmmd.cmmd)",
            "kernel": f"exp(-|a - b|^2 / (2 sigma^2)), sigma = {SIGMA:g}",
            "scale": SCALE,
            "estimator": self.estimator,
            "formula": FORMULAS[self.estimator],
            "extractor": self.extractor.identity(),
            "weights": {"standard": self.extractor.standard, "tensors_sha256": self.extractor.weights_sha256},
        }
        if self.estimator == "paired":
            out["pairing"] = "each reconstruction with its own original, by dataset position"
        if self.unpaired_reason:
            out["why_reference"] = self.unpaired_reason
        if self.fallbacks:
            out["unpaired_fallback"] = sorted(self.fallbacks)
        return {"cmmd": out}
