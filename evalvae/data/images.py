"""Decoding image files to 8-bit RGB, with every conversion documented.

Conversion rules (the originals every metric compares against):

* RGB is used as stored. EXIF orientation is ignored, as torchvision's loaders do.
* Grayscale (``L``, ``1``), palette (``P``), ``YCbCr``, ``LAB``, ``HSV`` and ``CMYK`` go through
  Pillow's ``convert("RGB")``; CMYK conversion is Pillow's naive one (no ICC profile applied).
* Alpha (``RGBA``, ``LA``, ``PA`` and palettes with transparency) is composited over white.
* 16-bit samples keep their high byte (``v >> 8``). Pillow already decodes 16-bit RGB PNGs this
  way; evalvae does the same for 16-bit grayscale so the two agree.
* Integer grayscale in Pillow's 32-bit mode ``I`` is converted by the file's declared sample
  depth where Pillow exposes it (:func:`declared_bits`): 16-bit data (a raw mode ``I;16*``, as
  16-bit PGMs open, or a PNG/PPM, which hold at most 16 bits) keeps its high byte like any 16-bit
  image, even if its values happen to be all <= 255. Genuine 32-bit data (raw mode ``I;32*``, as
  in 32-bit TIFFs), or ``I`` of unknown depth, goes by value range: values within 0..255 are
  taken as 8-bit, within 0..65535 as 16-bit (high byte); a negative value or one above 65535
  raises :class:`UnreadableImage` with the range found. (16-bit grayscale PNGs open as
  ``I;16`` in current Pillow, as ``I`` in older releases; both read as 16-bit.)
* Multi-frame files (GIF, TIFF) use their first frame.
* Float images (mode ``F``), truncated or corrupt files and non-images raise
  :class:`UnreadableImage` with the reason; the dataset records them in ``skipped.csv``.
"""

from __future__ import annotations

import os
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
_AT_MOST_16_BITS = {"PNG", "PPM"}  # formats whose integer grayscale samples have at most 16 bits


class UnreadableImage(Exception):
    """The file cannot be turned into an 8-bit RGB image; the message is the reason."""


def load_rgb8(path: str | os.PathLike | BinaryIO) -> tuple[np.ndarray, str]:
    """Decode ``path`` (a file, or a binary file object holding one) to an ``(H, W, 3)`` uint8 array;
    also return the source mode for the record."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                bits = declared_bits(im)  # before load(), which drops the decoder's raw mode
                im.load()
                return to_rgb8(im, bits), im.mode
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"cannot decode: {e}") from None


def _raw_mode(tile) -> str:
    args = tile[3]
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return args if isinstance(args, str) else ""


def declared_bits(im: Image.Image) -> int | None:
    """Bits per sample an integer grayscale file declares (16 or 32), where Pillow exposes them; None if not.

    Call it on an opened image before ``load()``: for mode ``I`` it reads the decoder's raw mode
    (``I;16*`` or ``I;32*``), else the format (PNG and PPM hold at most 16 bits a sample).
    """
    if im.mode in _SIXTEEN_BIT:
        return 16
    if im.mode != "I":
        return None
    for raw in map(_raw_mode, getattr(im, "tile", None) or []):
        if raw.startswith("I;16"):
            return 16
        if raw.startswith("I;32") or raw == "I":
            return 32
    return 16 if im.format in _AT_MOST_16_BITS else None


def _gray_to_rgb8(a: np.ndarray, shift: int) -> np.ndarray:
    g = (a.astype(np.uint32) >> shift).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def to_rgb8(im: Image.Image, bits: int | None = None) -> np.ndarray:
    """Convert a loaded Pillow image to ``(H, W, 3)`` uint8 RGB by the rules in this module's docstring.

    ``bits``: the sample depth the file declares (:func:`declared_bits`); it decides how mode ``I``
    is read, which otherwise goes by its value range.
    """
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in _SIXTEEN_BIT or mode == "I":
        a = np.asarray(im)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise UnreadableImage(
                f"mode {mode} with values {lo}..{hi}: neither 8-bit (0..255) nor 16-bit (0..65535) data"
            )
        if mode == "I" and bits != 16 and hi <= 255:
            return _gray_to_rgb8(a, 0)  # 32-bit samples holding 8-bit values
        return _gray_to_rgb8(a, 8)
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
