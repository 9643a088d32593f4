"""Reconstructions for the image grids, re-created on demand from a run's own configuration.

Run directories store numbers, not images. For the few images a report shows, the report reloads
each image through the run's ``config.yaml`` (same dataset, geometry and index, hence the same
posterior seed) and passes it through the same VAE spec, in the dtype the run used, with
:func:`evalvae.recon.reconstruct` itself. The recomputed PSNR is compared with the recorded one, so a
picture that does not match the run's numbers (other weights, another device's rounding) is
flagged rather than shown silently.
"""

from __future__ import annotations

import gc
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from evalvae.config import instantiate
from evalvae.data.loader import collate
from evalvae.data.transforms import crop_to_multiple
from evalvae.device import resolve_device
from evalvae.errors import EvalvaeError
from evalvae.metrics.pixel import PSNR
from evalvae.recon import reconstruct
from evalvae.report.load import Run
from evalvae.vae import load_vae

log = logging.getLogger(__name__)

PSNR_TOLERANCE_DB = 0.05  # recomputed vs recorded; float reductions on another device stay far below


class Unavailable(EvalvaeError):
    """Reconstructions of a run's VAE cannot be re-created; the message says why."""


@dataclass
class Reconstruction:
    original: np.ndarray  # (H, W, 3) uint8, as scored
    recon: np.ndarray  # (H, W, 3) uint8, rounded to 8 bits (as set-level metrics and image files see it)
    psnr: float  # recomputed here, as the run scored it
    recorded_psnr: float | None  # from per_image, when the run scored PSNR

    @property
    def matches(self) -> bool:
        return self.recorded_psnr is None or math.isclose(self.psnr, self.recorded_psnr, abs_tol=PSNR_TOLERANCE_DB)


def _cause(e: Exception) -> str:
    """The user-facing message, unwrapping Hydra's instantiation wrapper."""
    while isinstance(e, InstantiationException) and e.__cause__ is not None:
        e = e.__cause__
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _dataset(run: Run, cfg):
    spec = cfg.dataset
    root = (run.protocol.get("dataset") or {}).get("root")
    if "path" in spec and root and Path(str(root)).is_dir():
        spec = OmegaConf.merge(spec, {"path": str(root)})  # the resolved path, in case the run's was relative
    return instantiate(spec)


def reconstruct_images(
    run: Run, vae_name: str, image_ids: list[str], device: str = "auto"
) -> tuple[dict[str, Reconstruction], dict[str, str]]:
    """Re-create ``vae_name``'s reconstructions of ``image_ids`` from ``run``, through :func:`evalvae.recon.reconstruct`.

    The VAE runs in the dtype the run scored it in (``vaes.json``), so one the run upcast is
    upcast here too. Returns the reconstructions and, for images that could not be shown, the
    reason. Raises :class:`Unavailable` when nothing can be re-created (no config, dataset gone,
    weights missing).
    """
    if run.protocol.get("task") == "t2i":
        return stored_decodes(run, vae_name, image_ids)
    config = run.path / "config.yaml"
    if not config.is_file():
        raise Unavailable(f"run {run.label} has no config.yaml to re-create reconstructions from")
    scored = next((v for v in run.vaes if v.get("vae") == vae_name and v.get("status") == "ok"), {})
    try:
        cfg = OmegaConf.load(config)
        dataset = _dataset(run, cfg)
        spec = cfg.vae[vae_name]
        if scored.get("dtype"):
            spec = OmegaConf.merge(spec, {"dtype": scored["dtype"]})
        vae = load_vae(vae_name, spec, device=resolve_device(device), cache_dir=cfg.get("cache_dir"))
    except (EvalvaeError, InstantiationException, OmegaConfBaseException, OSError, KeyError) as e:
        raise Unavailable(f"cannot re-create {vae_name} of run {run.label}: {_cause(e)}") from None

    index = {rec.id: i for i, rec in enumerate(dataset.records)}
    recorded = {}
    if "psnr" in run.per_image:
        mine = run.per_image[run.per_image["vae"] == vae_name]
        recorded = {k: None if math.isnan(v) else v for k, v in zip(mine["image"], mine["psnr"].astype(float))}
    if cfg.get("channels_last"):
        vae.module.to(memory_format=torch.channels_last)
    out, reasons, samples = {}, {}, []
    for image_id in image_ids:
        if image_id not in index:
            reasons[image_id] = f"not in the dataset at {dataset.root} any more"
            continue
        sample = dataset[index[image_id]]
        if sample.image is None:
            reasons[image_id] = sample.reason
        else:
            samples.append(sample)
    batch_size = max(1, int(cfg.get("batch_size") or 1))
    batches = [collate(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
    quantize = bool(run.protocol.get("quantize", cfg.metrics.get("quantize", True)))
    try:
        results = reconstruct(
            vae,
            batches,
            [PSNR()],
            quantize=quantize,
            channels_last=bool(cfg.get("channels_last")),
            seed=int(cfg.get("seed") or 0),
            keep_pixels=True,
        )
        for result in results:
            rows = iter(result.rows)
            for originals, recons in zip(result.originals, result.reconstructions):
                for original, recon in zip(crop_to_multiple(originals, vae.downsample), recons):
                    row = next(rows)
                    out[row["image"]] = Reconstruction(
                        _hwc(original), _hwc(recon), row["psnr"], recorded.get(row["image"])
                    )
    finally:
        del vae
        gc.collect()
    return out, reasons


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).cpu().numpy()


def stored_decodes(run: Run, vae_name: str, image_ids: list[str]) -> tuple[dict[str, Reconstruction], dict[str, str]]:
    """A text-to-image run's saved PNGs: each VAE's decode, with the reference decoder's decode as the original."""
    reference = run.protocol.get("reference_vae")
    folder = run.path / "images"
    if not reference or not (folder / vae_name).is_dir():
        raise Unavailable(f"run {run.label} has no decoded images of {vae_name} (t2i.save_images=false?)")
    mine = run.per_image[run.per_image["vae"] == vae_name]
    recorded = dict(zip(mine["image"], mine["psnr"].astype(float))) if "psnr" in mine else {}
    out, reasons = {}, {}
    for image_id in image_ids:
        files = folder / reference / f"{image_id}.png", folder / vae_name / f"{image_id}.png"
        if not all(f.is_file() for f in files):
            reasons[image_id] = f"{' or '.join(str(f) for f in files if not f.is_file())} is missing"
            continue
        original, recon = (np.asarray(Image.open(f).convert("RGB")) for f in files)
        rec = recorded.get(image_id)
        value = PSNR()(*(torch.from_numpy(a).permute(2, 0, 1)[None] for a in (original, recon))).item()
        out[image_id] = Reconstruction(original, recon, value, None if rec is None or math.isnan(rec) else rec)
    return out, reasons
