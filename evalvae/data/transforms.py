"""The evaluation protocol's geometry: resize and crop, as the community's scripts do it.

``crop=center`` (the default) is torchvision's ``Resize(R, interpolation=BICUBIC)`` then
``CenterCrop(R)`` on Pillow images, the sd-vae-ft-mse model card's 256x256 COCO protocol:

* the shorter side becomes R and the longer ``int(R * long / short)`` (truncated), Pillow bicubic;
* the crop starts at ``int(round((H - R) / 2))``, ``int(round((W - R) / 2))``.

``crop=none`` keeps the native size; each VAE then centre-crops to a multiple of its
downsampling factor (:func:`crop_to_multiple`), with the same rounding. An image with a side below
the factor has no such crop: it is skipped for that VAE (:func:`below_factor`).

Images whose shorter side is below R follow ``small``: ``upscale`` (default; what ``Resize``
does, so results match the community's numbers) or ``skip`` (recorded in ``skipped.csv``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from evalvae.errors import ConfigError, check_choice
from evalvae.provenance import versions
from evalvae.vocab import CROPS, SMALL

# The version of how a file becomes the 8-bit image every latent, metric and feature starts from
# (decoding, :mod:`evalvae.data.images`; the geometry here). Bump it with any change that moves those
# pixels: every cache keyed on the images then misses (evalvae.jobs.store, evalvae.metrics.refstats).
IMAGES_VERSION = 1
IMAGE_LIBRARIES = ("Pillow",)  # decodes the files and resizes them


def images_identity() -> dict:
    """What the 8-bit images depend on besides the files and the geometry: this code's version and Pillow's."""
    return {"version": IMAGES_VERSION, "libraries": versions(IMAGE_LIBRARIES)}


def rgb8_sha256(images: torch.Tensor) -> list[str]:
    """sha256 of each ``(N, 3, H, W)`` uint8 image's pixels as ``H x W x 3`` bytes, row-major with RGB
    interleaved: for an 8-bit RGB file the geometry leaves as it is (``crop=none``, sides multiples of
    the VAE's factor), ``hashlib.sha256(np.asarray(PIL.Image.open(path)).tobytes())``."""
    hwc = images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
    return [hashlib.sha256(a.tobytes()).hexdigest() for a in hwc]


class TooSmall(Exception):
    """The image is below the protocol's resolution and ``small=skip``."""


@dataclass(frozen=True)
class Geometry:
    resolution: int = 256
    crop: str = "center"
    small: str = "upscale"

    def __post_init__(self):
        check_choice("dataset.crop", self.crop, CROPS)
        check_choice("dataset.small", self.small, SMALL)
        if self.crop == "center" and (not isinstance(self.resolution, int) or self.resolution < 8):
            raise ConfigError("dataset.resolution", self.resolution, hint="an integer of at least 8 pixels")

    def apply(self, rgb: np.ndarray) -> tuple[torch.Tensor, bool]:
        """``(H, W, 3)`` uint8 -> ``(3, R, R)`` uint8 tensor, and whether the image was upscaled."""
        if self.crop == "none":
            return torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), False
        short = min(rgb.shape[:2])
        upscaled = short < self.resolution
        if upscaled and self.small == "skip":
            raise TooSmall(f"shorter side {short} px < dataset.resolution={self.resolution} (dataset.small=skip)")
        im = center_crop(resize_shorter(Image.fromarray(rgb), self.resolution), self.resolution)
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous(), upscaled

    def check_factor(self, factor: int, who: str) -> None:
        """Raise a :class:`ConfigError` naming ``dataset.resolution`` when ``crop=center`` makes images smaller
        than ``factor``, the downsampling factor of ``who`` (``"VAE 'x'"``): none would have a crop to a multiple
        of it. A resolution at or above it that is not a multiple is cropped by the VAE; ``crop=none`` checks
        each image instead (:func:`below_factor`)."""
        if self.crop == "center" and self.resolution < factor:
            hint = f"at least {factor} with {who} (its downsampling factor): a smaller image has no crop to a multiple of it"
            raise ConfigError("dataset.resolution", self.resolution, hint=hint)

    def describe(self) -> dict:
        if self.crop == "none":
            note = "native size, centre-cropped to a multiple of each VAE's downsampling factor"
            return {"crop": "none", "resize": "none", "note": note}
        return {
            "resolution": self.resolution,
            "resize": "torchvision Resize(shorter side = R, PIL bicubic, long side truncated)",
            "crop": "torchvision CenterCrop(R), offsets int(round((size - R) / 2))",
            "small": self.small,
        }


# The two functions below do torchvision's arithmetic with Pillow directly (importing torchvision
# costs seconds at start-up); tests check them against torchvision's transforms pixel for pixel.
def resize_shorter(im: Image.Image, size: int) -> Image.Image:
    """``Resize(size, BICUBIC)``: the shorter side becomes ``size``, the longer ``int(size * long / short)``."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return im
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return im.resize((new_w, new_h), Image.Resampling.BICUBIC)


def center_crop(im: Image.Image, size: int) -> Image.Image:
    """``CenterCrop(size)`` of an image at least ``size`` on each side."""
    w, h = im.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def crop_offsets(h: int, w: int, factor: int) -> tuple[int, int]:
    """Top and left offsets of :func:`crop_to_multiple`'s crop of an ``h`` x ``w`` image."""
    return int(round((h % factor) / 2.0)), int(round((w % factor) / 2.0))


def below_factor(h: int, w: int, factor: int) -> str | None:
    """Why an ``h`` x ``w`` image has no crop to a multiple of ``factor`` (a side below it), or None.

    Such an image is too small for a VAE of that downsampling factor: the run skips it for that VAE
    (``skipped.csv``), and the reference statistics for that factor leave it out too.
    """
    if h >= factor and w >= factor:
        return None
    return f"too small: {h}x{w} px (height x width), a side below the downsampling factor {factor}"


def crop_to_multiple(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Centre-crop ``(..., H, W)`` to the largest multiple of ``factor`` in each dimension."""
    h, w = images.shape[-2:]
    th, tw = h - h % factor, w - w % factor
    if (th, tw) == (h, w):
        return images
    top, left = crop_offsets(h, w, factor)
    return images[..., top : top + th, left : left + tw]
