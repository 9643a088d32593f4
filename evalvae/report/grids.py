"""Image grids: which images to show, error heatmaps, highest-error crops, composite PNGs.

Every picture is built from exact pixels: crops are cut at 1:1 and enlarged by an integer factor
with nearest-neighbour repetition, never resampled, so a blurred edge in a crop is the decoder's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from evalvae.metrics.selection import pick_images, score_table
from evalvae.report.sections import Section

CROP = 64  # side of the zoomed region in image pixels (smaller images use a quarter of their side)
CROP_DISPLAY = 256  # the zoomed crop's side on screen; the zoom factor is CROP_DISPLAY // crop
FULL_MIN = 192  # whole images smaller than this are enlarged by an integer factor to be seen at all
BOX_COLOUR = (0, 229, 255)
COLORMAP = "inferno"
GREY = (90, 90, 90)


@dataclass
class GridSpec:
    """An image to show, why it was chosen, and whose error map places the zoomed crop (None: all)."""

    image: str
    reasons: list[str] = field(default_factory=list)
    focus: str | None = None


def select_images(section: Section, chosen: list[str], worst: int, best: int = 0) -> tuple[list[GridSpec], list[str]]:
    """The ``chosen`` images (default: the one of median score), then each entry's ``worst`` worst and
    ``best`` best images, by :func:`evalvae.metrics.selection.pick_images` (the rule a run saves its
    samples by, so a run's own report asks for exactly what it saved).

    Returns the grid specs (an image picked for several reasons appears once) and notes about
    chosen images this section does not have.
    """
    metric = section.primary_metric
    if metric is None or section.per_image.empty:
        return [], []
    higher = bool(section.direction(metric))
    wide = score_table(section.per_image, metric, entry="entry")
    specs: dict[str, GridSpec] = {}
    notes = []
    for image in chosen:
        if image in wide.index:
            specs.setdefault(image, GridSpec(image)).reasons.append("chosen")
        else:
            notes.append(f"image {image!r} is not among this section's images")
    picks = pick_images(wide, higher, typical=not chosen, worst=worst, best=best, entries=section.labels)
    for p in picks:
        if p.kind == "typical":
            specs.setdefault(p.image, GridSpec(p.image)).reasons.append(f"typical: median mean {metric.upper()}")
        else:
            spec = specs.setdefault(p.image, GridSpec(p.image, focus=p.entry))
            spec.reasons.append(f"{p.kind} {metric.upper()} #{p.rank} for {p.entry}")
    return list(specs.values()), notes


def error_map(original: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Absolute error in 8-bit levels, mean over RGB: ``(H, W, 3)`` pixels -> ``(H, W)``."""
    return np.abs(original.astype(np.float32) - recon.astype(np.float32)).mean(axis=2)


def crop_size(shape: tuple[int, int]) -> int:
    return max(1, min(CROP, min(shape) // 4))


def worst_window(error: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the largest summed error (first on ties)."""
    s = np.zeros((error.shape[0] + 1, error.shape[1] + 1))
    s[1:, 1:] = error.cumsum(0).cumsum(1)
    windows = s[size:, size:] - s[:-size, size:] - s[size:, :-size] + s[:-size, :-size]
    top, left = np.unravel_index(int(np.argmax(windows)), windows.shape)
    return int(top), int(left)


def error_scale(errors: list[np.ndarray]) -> int:
    """One colour scale for a grid: the largest 99.5th percentile over its error maps, in levels."""
    return max(1, math.ceil(max(float(np.percentile(e, 99.5)) for e in errors)))


def heatmap(error: np.ndarray, vmax: float) -> np.ndarray:
    """``(H, W)`` error -> ``(H, W, 3)`` uint8 colours; values above ``vmax`` saturate."""
    cmap = matplotlib.colormaps[COLORMAP]
    return (cmap(np.clip(error / vmax, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def enlarge(rgb: np.ndarray, factor: int) -> np.ndarray:
    """``rgb`` enlarged ``factor`` times by pixel repetition (nearest neighbour, no interpolation)."""
    return rgb if factor == 1 else rgb.repeat(factor, axis=0).repeat(factor, axis=1)


def zoom(rgb: np.ndarray, top: int, left: int, size: int, factor: int) -> np.ndarray:
    """The ``size`` x ``size`` crop at ``(top, left)``, enlarged ``factor`` times by pixel repetition."""
    return enlarge(rgb[top : top + size, left : left + size], factor)


def with_box(rgb: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """A copy of ``rgb`` with the crop's outline drawn just outside it, where it fits."""
    out = rgb.copy()
    h, w = out.shape[:2]
    width = max(1, min(h, w) // 256)
    y0, x0, y1, x1 = max(top - width, 0), max(left - width, 0), min(top + size + width, h), min(left + size + width, w)
    out[y0 : y0 + width, x0:x1] = BOX_COLOUR
    out[y1 - width : y1, x0:x1] = BOX_COLOUR
    out[y0:y1, x0 : x0 + width] = BOX_COLOUR
    out[y0:y1, x1 - width : x1] = BOX_COLOUR
    return out


def common_crop(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Centre-crop arrays to their smallest common height and width (VAEs with other factors under crop=none)."""
    h, w = min(a.shape[0] for a in arrays), min(a.shape[1] for a in arrays)
    corners = [(int(round((a.shape[0] - h) / 2)), int(round((a.shape[1] - w) / 2))) for a in arrays]
    return [a[top : top + h, left : left + w] for a, (top, left) in zip(arrays, corners)]


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont:
    from matplotlib import font_manager

    return ImageFont.truetype(font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans")), size)


def compose(title: str, columns: list[str], rows: list[tuple[str, list[np.ndarray | None]]], vmax: int) -> Image.Image:
    """A labelled table of tiles on white: ``rows`` of (label, tiles), ``None`` leaves a cell empty.

    Tiles are pasted at their own pixel size (no resampling); a colour bar for the error scale
    closes the figure.
    """
    pad, label_w, head = 12, 200, 34
    widths = [max((t[c].shape[1] for _, t in rows if t[c] is not None), default=0) for c in range(len(columns))]
    heights = [max((t.shape[0] for t in tiles if t is not None), default=0) for _, tiles in rows]
    width = label_w + sum(widths) + pad * (len(widths) + 1)
    bar_h = 58
    height = head + 26 + sum(heights) + pad * (len(rows) + 1) + bar_h
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), title, fill=(20, 20, 20), font=font(18))
    x = label_w + pad
    for name, w in zip(columns, widths):
        draw.text((x, head + 4), name, fill=GREY, font=font(13))
        x += w + pad
    y = head + 26 + pad
    for (label, tiles), h in zip(rows, heights):
        lines = label.split("\n")
        for i, line in enumerate(lines):
            first = i == 0
            draw.text((pad, y + 4 + 20 * i), line, fill=(20, 20, 20) if first else GREY, font=font(15 if first else 13))
        x = label_w + pad
        for tile, w in zip(tiles, widths):
            if tile is not None:
                canvas.paste(Image.fromarray(tile), (x, y))
            x += w + pad
        y += h + pad
    bar = heatmap(np.tile(np.linspace(0, vmax, 256), (14, 1)), vmax)
    bx = label_w + pad
    canvas.paste(Image.fromarray(bar), (bx, y + 4))
    draw.text((bx, y + 22), "0", fill=GREY, font=font(12))
    draw.text((bx + 256 - 6 * len(str(vmax)), y + 22), str(vmax), fill=GREY, font=font(12))
    scale = "|original − reconstruction|, mean over RGB, 8-bit levels (saturates above the scale)"
    draw.text((bx + 270, y + 2), scale, fill=GREY, font=font(12))
    return canvas
