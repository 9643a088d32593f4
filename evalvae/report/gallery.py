"""Building a section's image grids: read the runs' saved reconstructions, cut tiles, write composite PNGs."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from evalvae.io import atomic_path
from evalvae.report import grids
from evalvae.report.format import num
from evalvae.report.saved import Reconstruction, Unavailable, reconstruct_images
from evalvae.report.sections import Section
from evalvae.vocab import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


@dataclass
class Row:
    label: str
    detail: str  # PSNR recomputed from the saved pixels, and a warning when it disagrees with the run's
    image: bytes  # PNG of each tile
    error: bytes | None
    zoom: bytes
    zoom_error: bytes | None
    mismatch: bool = False


@dataclass
class Grid:
    image: str
    reasons: list[str]
    crop: tuple[int, int, int]  # top, left, size in image pixels
    factor: int
    vmax: int
    rows: list[Row]
    png: Path  # the composite figure
    focus: str | None = None  # entry whose error map placed the crop; None: the mean over entries
    full: int = 1  # whole images are enlarged this many times (small images only)
    missing: dict[str, str] = field(default_factory=dict)  # entry label -> why it is not shown


def png(rgb: np.ndarray) -> bytes:
    """Lossless PNG; images of at most 256 colours (heatmaps) are stored paletted, about 3x smaller."""
    im = Image.fromarray(rgb)
    if im.getcolors(256) is not None:
        paletted = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        if np.array_equal(np.asarray(paletted.convert("RGB")), rgb):
            im = paletted
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _file_name(slug: str, i: int, image: str) -> str:
    stem = Path(image).with_suffix("").as_posix() if Path(image).suffix.lower() in IMAGE_EXTENSIONS else image
    return f"{slug}-{i:02d}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_")[:80] + ".png"


def build_grid(section: Section, spec: grids.GridSpec, recons: dict[str, Reconstruction], path: Path) -> Grid:
    """One grid from the reconstructions of ``spec.image`` by the entries in ``recons`` (in section order)."""
    labels = [lab for lab in section.labels if lab in recons]
    originals = grids.common_crop([recons[lab].original for lab in labels])
    outputs = grids.common_crop([recons[lab].recon for lab in labels])
    errors = [grids.error_map(o, r) for o, r in zip(originals, outputs)]
    original = grids.to_uint8(originals[0])
    size = grids.crop_size(original.shape[:2])
    focus = errors[labels.index(spec.focus)] if spec.focus in labels else np.mean(errors, axis=0)
    top, left = grids.worst_window(focus, size)
    factor = max(1, grids.CROP_DISPLAY // size)
    vmax = grids.error_scale(errors)

    full = max(1, grids.FULL_MIN // max(original.shape[:2]))

    def zoom(a):
        return grids.zoom(a, top, left, size, factor)

    def whole(a, box=False):
        return grids.enlarge(grids.with_box(a, top, left, size) if box else a, full)

    h, w = original.shape[:2]
    first = str(section.dataset.get("original_label") or "original")  # t2i: the reference decoder's image
    size_text = f"{w}×{h} px" + (f", shown ×{full}" if full > 1 else "")
    rows = [Row(first, size_text, png(whole(original, True)), None, png(zoom(original)), None)]
    figure_rows = [(first, [whole(original, True), None, zoom(original), None])]
    for lab, out, err in zip(labels, outputs, errors):
        rec = recons[lab]
        out8, heat = grids.to_uint8(out), grids.heatmap(err, vmax)
        detail = f"PSNR {num('psnr', rec.psnr)} dB"
        if not rec.matches:
            detail += (
                f" (the run recorded {num('psnr', rec.recorded_psnr)} dB: this picture differs from the one scored)"
            )
        boxed = whole(heat, True)
        tiles = (png(whole(out8)), png(boxed), png(zoom(out8)), png(zoom(heat)))
        rows.append(Row(lab, detail, *tiles, mismatch=not rec.matches))
        figure_rows.append((f"{lab}\n{detail}", [whole(out8), boxed, zoom(out8), zoom(heat)]))
    columns = ["image", f"|error|, scale 0–{vmax}", f"×{factor} zoom: {size}×{size} px at ({left}, {top})"]
    columns.append("error, same region")
    title = f"{spec.image}  ·  {section.title}  ·  " + "; ".join(spec.reasons)
    figure = grids.compose(title, columns, figure_rows, vmax)
    with atomic_path(path) as tmp:
        figure.save(tmp, format="PNG")
    focus = spec.focus if spec.focus in labels else None
    return Grid(spec.image, spec.reasons, (top, left, size), factor, vmax, rows, path, focus, full)


def build_gallery(section: Section, specs: list[grids.GridSpec], out_dir: Path) -> tuple[list[Grid], list[str]]:
    """Read every entry's saved reconstructions of the specs' images and build their grids.

    Returns the grids and notes on what could not be shown (the rest of the report never depends on them).
    """
    if not specs:
        return [], []
    ids = [s.image for s in specs]
    recons: dict[str, dict[str, Reconstruction]] = {}
    missing: dict[str, dict[str, str]] = {i: {} for i in ids}
    notes = []
    for e in section.entries:
        scored = set(section.per_image.loc[section.per_image["entry"] == e.label, "image"])
        wanted = [i for i in ids if i in scored]
        if not wanted:
            continue
        log.info("reading %d saved reconstruction(s) of %s for the image grids", len(wanted), e.label)
        try:
            got, reasons = reconstruct_images(e.run, e.vae, wanted)
        except Unavailable as err:
            notes.append(f"image grids: no reconstructions of {e.label}: {err}")
            for i in wanted:
                missing[i][e.label] = str(err)
            continue
        for image, rec in got.items():
            recons.setdefault(image, {})[e.label] = rec
        for image, why in reasons.items():
            missing[image][e.label] = why
            notes.append(f"image grids: {e.label} on {image}: {why}")
    out = []
    for i, spec in enumerate(specs, start=1):
        if not recons.get(spec.image):
            notes.append(f"image grids: {spec.image} could not be shown (no run saved a reconstruction of it)")
            continue
        grid = build_grid(section, spec, recons[spec.image], out_dir / _file_name(section.slug, i, spec.image))
        grid.missing = missing[spec.image]
        out.append(grid)
    return out, notes
