"""Decoding image files to 8-bit RGB, with every conversion documented.

Conversion rules (the originals every metric compares against):

* RGB is used as stored. EXIF orientation is ignored, as torchvision's loaders do.
* Grayscale (``L``, ``1``), palette (``P``), ``YCbCr``, ``LAB``, ``HSV`` and ``CMYK`` go through
  Pillow's ``convert("RGB")``; CMYK conversion is Pillow's naive one (no ICC profile applied).
* Alpha (``RGBA``, ``LA``, ``PA`` and palettes with transparency) is composited over white.
* 16-bit samples keep their high byte (``v >> 8``). Pillow already decodes 16-bit RGB PNGs this
  way; evalvae does the same for 16-bit grayscale so the two agree.
* Multi-frame files (GIF, TIFF) use their first frame.
* Float images (mode ``F``), truncated or corrupt files and non-images raise
  :class:`UnreadableImage` with the reason; the dataset records them in ``skipped.csv``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class UnreadableImage(Exception):
    """The file cannot be turned into an 8-bit RGB image; the message is the reason."""


def load_rgb8(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Decode ``path`` to an ``(H, W, 3)`` uint8 array; also return the source mode for the record."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return to_rgb8(im), im.mode
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"cannot decode: {e}") from None


def to_rgb8(im: Image.Image) -> np.ndarray:
    """Convert a loaded Pillow image to ``(H, W, 3)`` uint8 RGB by the rules in this module's docstring."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in _SIXTEEN_BIT:
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise UnreadableImage(f"mode {mode} with values outside 0..65535")
        g = (a.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode == "F":
        raise UnreadableImage("32-bit float image (mode F) has no defined 8-bit scale")
    if mode == "P" and "transparency" in im.info or mode == "PA":
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8).copy()
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (ValueError, OSError) as e:
        raise UnreadableImage(f"cannot convert mode {mode} to RGB: {e}") from None
