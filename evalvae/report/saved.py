"""Reconstructions for the image grids, read from the files a run saved: never re-created.

A reconstruction run saves, for the images its grids will show (the typical one, each VAE's worst
and best), the 8-bit originals and every VAE's reconstruction as PNGs under ``samples/`` with
``samples/index.json`` (:mod:`evalvae.recon.samples`); a text-to-image run saves every decode under
``images/<vae>/``. The report reads those files only, so it builds where the weights and the
dataset are gone. An image the run did not save is shown as missing, with the reason.

The PSNR of each picture is recomputed from its PNGs and compared with the recorded one, so a
picture that does not match the run's numbers (a file replaced, a result table edited) is flagged
rather than shown silently. With ``metrics.quantize=false`` the run scored unrounded pixels that
no PNG can hold; the picture is then compared with the PSNR the run recorded for the saved 8-bit
pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evalvae.errors import EvalvaeError
from evalvae.metrics.pixel import psnr
from evalvae.report.load import Run

PSNR_TOLERANCE_DB = 0.05  # recomputed vs recorded: the saved pixels are the scored ones (a re-decode flips a few)
SAMPLES = "samples"


class Unavailable(EvalvaeError):
    """A run saved no reconstructions of a VAE; the message says why."""


@dataclass
class Reconstruction:
    original: np.ndarray  # (H, W, 3) uint8, as scored
    recon: np.ndarray  # (H, W, 3) uint8, rounded to 8 bits (as set-level metrics and image files see it)
    psnr: float  # recomputed from the saved pixels
    recorded_psnr: float | None  # what the run recorded for these pixels, when it scored PSNR

    @property
    def matches(self) -> bool:
        return self.recorded_psnr is None or math.isclose(self.psnr, self.recorded_psnr, abs_tol=PSNR_TOLERANCE_DB)


def _float(value) -> float | None:
    """A number of index.json ("inf" for infinity, null for NaN)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _rgb(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))  # writable, for torch.from_numpy


def _psnr(original: np.ndarray, recon: np.ndarray) -> float:
    return psnr(*(torch.from_numpy(a).permute(2, 0, 1)[None] for a in (original, recon))).item()


def read_index(run: Run) -> dict:
    """``samples/index.json`` of ``run``; raises :class:`Unavailable` when it has none or it is unreadable."""
    path = run.path / SAMPLES / "index.json"
    if not path.is_file():
        raise Unavailable(
            f"run {run.label} saved no samples ({path} is missing: a run from before samples were saved, "
            "or samples.typical=false samples.worst=0 samples.best=0)"
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(index.get("images"), dict):
            raise ValueError("no 'images' mapping")
    except (OSError, ValueError, AttributeError) as e:
        raise Unavailable(f"run {run.label}: {path} is unreadable ({e})") from None
    return index


def saved_settings(run: Run) -> dict | None:
    """How many images per VAE ``run`` saved (``samples`` settings), or None if it saved none."""
    try:
        return dict(read_index(run).get("settings") or {})
    except Unavailable:
        return None


def _inside(root: Path, rel) -> Path | None:
    """``root / rel``, or None if ``rel`` is not a relative path inside ``root``."""
    if not isinstance(rel, str) or not rel:
        return None
    path = (root / rel).resolve()
    return path if path.is_relative_to(root.resolve()) else None


def reconstruct_images(
    run: Run, vae_name: str, image_ids: list[str]
) -> tuple[dict[str, Reconstruction], dict[str, str]]:
    """``vae_name``'s reconstructions of ``image_ids`` in ``run``, read from the files the run saved.

    Returns the reconstructions and, for images that cannot be shown, the reason. Raises
    :class:`Unavailable` when the run saved none (no ``samples/index.json``, or a text-to-image run
    without saved images).
    """
    if run.protocol.get("task") == "t2i":
        return stored_decodes(run, vae_name, image_ids)
    index = read_index(run)
    root = run.path / SAMPLES
    quantize = bool(index.get("quantize", run.protocol.get("quantize", True)))
    recorded = {}
    if quantize and "psnr" in run.per_image:
        mine = run.per_image[run.per_image["vae"] == vae_name]
        recorded = dict(zip(mine["image"].astype(str), mine["psnr"].astype(float)))
    out, reasons = {}, {}
    for image_id in image_ids:
        entry = index["images"].get(image_id) or {}
        saved = (entry.get("vaes") or {}).get(vae_name)
        if not isinstance(saved, dict):
            why = (entry.get("not_saved") or {}).get(vae_name)
            reasons[image_id] = f"not saved by run {run.label}" + (
                f": {why}" if why else " (samples/ holds the images the run picked: samples.typical, .worst, .best)"
            )
            continue
        files = [_inside(root, saved.get(k)) for k in ("original", "reconstruction")]
        if not all(f is not None and f.is_file() for f in files):
            named = [
                str(saved.get(k)) for k, f in zip(("original", "reconstruction"), files) if f is None or not f.is_file()
            ]
            reasons[image_id] = f"{' and '.join(named)} missing from {root}"
            continue
        original, recon = (_rgb(f) for f in files)
        if original.shape != recon.shape:
            reasons[image_id] = (
                f"saved original {original.shape[:2]} and reconstruction {recon.shape[:2]} differ in size"
            )
            continue
        reference = _float(recorded.get(image_id)) if quantize else _float(saved.get("psnr_saved"))
        if quantize and image_id not in recorded:
            reference = _float(saved.get("psnr"))
        out[image_id] = Reconstruction(original, recon, _psnr(original, recon), reference)
    return out, reasons


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
        original, recon = (_rgb(f) for f in files)
        rec = recorded.get(image_id)
        out[image_id] = Reconstruction(original, recon, _psnr(original, recon), _float(rec))
    return out, reasons
