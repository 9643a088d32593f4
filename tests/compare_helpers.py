"""Synthetic run and bench directories for the compare and report tests, written as evalvae run/bench
write them, and an identity stand-in autoencoder (exact reconstructions: PSNR +inf)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from evalvae.metrics.info import metric_entry, registered_info
from evalvae.results import summarize
from evalvae.vae.base import LatentSpace, LoadedWeights, VAEAdapter

PROTOCOL = {
    "dataset": {
        "name": "kodak",
        "root": "/data/kodak",
        "n_files": 12,
        "resolution": 256,
        "resize": "torchvision Resize(shorter side = R, PIL bicubic, long side truncated)",
        "crop": "torchvision CenterCrop(R), offsets int(round((size - R) / 2))",
        "small": "upscale",
    },
    "pixels": "8-bit originals vs reconstructions clamped and rounded to 8 bits",
    "quantize": True,
    "metrics": {
        name: metric_entry(registered_info(name), protocol)
        for name, protocol in {
            "psnr": {"implementation": "torchmetrics (float64)", "data_range": 255.0},
            "ssim": {"implementation": "skimage", "window": "gaussian, sigma=1.5, 11x11"},
            "lpips": {"implementation": "lpips 0.1.4", "net": "alex"},
        }.items()
    },
}


def base_values(n: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible per-image values of a decent VAE."""
    rng = np.random.default_rng(seed)
    return {"psnr": rng.normal(29.0, 2.0, n), "ssim": rng.uniform(0.80, 0.95, n), "lpips": rng.uniform(0.05, 0.2, n)}


def write_run(
    path: Path,
    values: dict[str, dict[str, np.ndarray]],
    protocol: dict | None = None,
    images: list[str] | None = None,
    extra_summary: list[dict] | None = None,
    vaes: list[dict] | None = None,
) -> Path:
    """A run directory with metrics.json, per_image.csv, summary.csv and vaes.json.

    ``values``: vae -> metric -> per-image values. ``extra_summary``: summary-only rows (set-level metrics).
    """
    path.mkdir(parents=True, exist_ok=True)
    protocol = copy.deepcopy(PROTOCOL if protocol is None else protocol)
    metrics = sorted({m for per_vae in values.values() for m in per_vae})
    measured = set(metrics) | {r["metric"] for r in extra_summary or []}
    protocol["metrics"] = {m: s for m, s in protocol["metrics"].items() if m in measured}
    rows = []
    for vae, per_metric in values.items():
        n = len(next(iter(per_metric.values())))
        ids = images or [f"img{i:02d}.png" for i in range(n)]
        for i, image in enumerate(ids):
            values_i = {m: float(v[i]) for m, v in per_metric.items()}
            rows.append({"vae": vae, "image": image, **values_i, "height": 256, "width": 256, "upscaled": False})
    per_image = pd.DataFrame(rows)
    per_image.to_csv(path / "per_image.csv", index=False)
    with np.errstate(invalid="ignore"):  # the std of values holding +inf is NaN
        summary = summarize(per_image, metrics)
    summary = summary.dropna(subset=["mean"])
    if extra_summary:
        summary = pd.concat([summary, pd.DataFrame(extra_summary)], ignore_index=True)
    summary.to_csv(path / "summary.csv", index=False)
    (path / "metrics.json").write_text(json.dumps(protocol))
    info = (
        vaes
        if vaes is not None
        else [{"vae": v, "status": "ok", "dtype": "fp32", "device": "cpu", "source": f"/models/{v}"} for v in values]
    )
    (path / "vaes.json").write_text(json.dumps(info))
    return path


def set_level_row(vae: str, metric: str, mean: float, n: int = 12, std: float = np.nan, note: str = "") -> dict:
    """A summary-only row of a set-level metric (rFID, KID), for :func:`write_run`'s ``extra_summary``."""
    return {"vae": vae, "metric": metric, "mean": mean, "std": std, "n": n, "note": note}


def bench_row(vae: str = "tiny", op: str = "decode", median: float = 10.0, iqr: float = 0.5, **overrides) -> dict:
    row = {
        "vae": vae,
        "op": op,
        "resolution": 512,
        "batch": 1,
        "dtype": "fp16",
        "mode": "eager",
        "device": "NVIDIA H100",
        "ms_per_image_median": median,
        "ms_per_image_iqr": iqr,
        "images_per_s": 1000.0 / median,
        "peak_mem_mb": 900.0,
        "nonfinite": 0,
        "lowp_psnr_vs_fp32": 45.0,
        "status": "ok",
    }
    row.update(overrides)
    return row


def write_bench(path: Path, rows: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(bench_row())).to_csv(path / "bench.csv", index=False)
    return path


class IdentityVAE(VAEAdapter):
    """The latent is the image itself, so decoding gives the image back exactly (PSNR +inf, SSIM 1).

    ``noise`` > 0 adds a fixed pattern of that amplitude (in [-1, 1] units) that depends only on
    each pixel's value, so results never depend on the batch an image was in.
    """

    family = "identity"

    def __init__(self, name: str, device="cpu", dtype: str = "fp32", cache_dir=None, noise: float = 0.0):
        module = nn.Module()
        module.gain = nn.Parameter(torch.ones(()))
        self.noise = float(noise)
        super().__init__(
            name,
            module,
            latent_space=LatentSpace("identity", 3, 1),
            dtype=dtype,
            device=device,
            weights=LoadedWeights("module", "in-memory"),
        )

    def _moments(self, images):
        return images * self.module.gain, None

    def _decode_raw(self, z):
        return z + self.noise * torch.sin(997.0 * z) if self.noise else z

    def encoder_state_dict(self):
        return self.module.state_dict()


def identity_vae(name: str = "identity", noise: float = 0.0) -> list[str]:
    """Overrides that select an :class:`IdentityVAE` named ``name``."""
    return [f"+vae.{name}._target_=tests.compare_helpers.IdentityVAE", f"+vae.{name}.noise={noise}"]
