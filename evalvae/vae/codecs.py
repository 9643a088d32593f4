"""Classical codecs as autoencoders: the baselines a VAE's rate and quality are read against.

``identity`` (the image itself, 24 bpp), ``bicubic-f8`` (an 8x area downsample kept as an 8-bit
thumbnail, bicubic upsample back) and ``jpeg``, ``webp``, ``avif`` through Pillow, at a fixed
``quality`` or at a target ``bpp`` searched for per image. Each is a :class:`VAEAdapter` whose
"latents" are what its decoder reads: uint8 pixels, or the encoded file itself (a bitstream
tensor, :func:`pack`), so ``bpp`` is always the real size and the latent cache stores real files.

A codec has no weights. Its identity is its settings and the library that runs it: the encoder
hash is the sha256 of the class, every setting and the Pillow/libjpeg/libwebp/libavif versions
(:meth:`Codec.encoder_hash`), so two codecs or two settings never share cached latents, and the
result chunks' key (the VAE's config and ``weights.location``, which holds the versions) differs
for each too.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evalvae.errors import ConfigError, EvalvaeError, check_choice
from evalvae.vae.base import LatentSpace, LoadedWeights, VAEAdapter

HEADER = 16  # bitstream tensor: length (uint64), quality (float32), status (uint8), 3 bytes padding
# how a target search ended (the status byte)
HIT, ABOVE_RANGE, BELOW_RANGE, COARSE = 0, 1, 2, 3
FORMATS = ("jpeg", "webp", "avif")
# the quality range Pillow accepts, and whether it takes integers only (JPEG: fractions through scaled tables)
QUALITY = {"jpeg": (1.0, 100.0, False), "webp": (0.0, 100.0, False), "avif": (0.0, 100.0, True)}


class CodecUnavailable(EvalvaeError):
    """This Pillow cannot encode the format."""


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (exact 8-bit levels, as the run gives them) back to uint8 on the CPU."""
    return ((images.detach().float().cpu() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def from_levels(pixels: torch.Tensor, device) -> torch.Tensor:
    """Pixel levels (uint8 or float in [0, 255]) to float32 images in [-1, 1] on ``device``."""
    return pixels.to(device=device, dtype=torch.float32).div(127.5).sub(1)


class Codec(VAEAdapter):
    """A codec seen as a VAE: deterministic, no weights, ``encode``/``decode`` in its own representation."""

    family = "codec"
    memory_modes = ("plain", "sliced")  # image by image anyway
    quantizable_latents = False  # already what the decoder reads: 8-bit pixels or a file

    def __init__(self, name: str, latent_space: LatentSpace, settings: dict, library: str, device="cpu", **kwargs):
        kwargs.pop("cache_dir", None)
        kwargs.pop("dtype", None)  # a codec's arithmetic is its own; the run's dtype does not apply
        weights = LoadedWeights("codec", library)
        super().__init__(name, nn.Module(), latent_space=latent_space, device=device, weights=weights)
        self.settings = settings

    @property
    def encoder_hash(self) -> str:
        if self._encoder_hash is None:
            what = {"class": f"{type(self).__module__}.{type(self).__qualname__}", **self.settings}
            what["library"] = self.weights.location
            self._encoder_hash = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
        return self._encoder_hash

    def encoder_state_dict(self) -> Mapping[str, torch.Tensor]:
        return {}

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, seeds=None) -> torch.Tensor:
        return self._moments(images)[0]

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        return self._decode_raw(latents)

    def describe(self) -> dict:
        return {**super().describe(), "codec": self.settings}


class IdentityCodec(Codec):
    """The image itself as uint8 (24 bpp): PSNR inf, SSIM 1, LPIPS 0, the ceiling every score is read against."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name, LatentSpace("pixels", 3, 1), {"codec": "identity"}, "evalvae", **kwargs)

    def _moments(self, images):
        return to_uint8(images).to(self.device), None

    def _decode_raw(self, z):
        return from_levels(z, self.device)


class BicubicCodec(Codec):
    """An area downsample by ``factor`` rounded to an 8-bit thumbnail (24 / factor² bpp), upsampled back
    with torch's bicubic interpolation (a = -0.75, ``align_corners=False``)."""

    def __init__(self, name: str, factor: int = 8, **kwargs):
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ConfigError(f"vae.{name}.factor", factor, hint="a positive integer downsampling factor")
        self.factor = factor
        space = LatentSpace("pixels", 3, factor)
        super().__init__(name, space, {"codec": "bicubic", "factor": factor}, f"torch {torch.__version__}", **kwargs)

    def _moments(self, images):
        levels = to_uint8(images).float()  # sums of factor² levels are exact in float32 up to factor 256
        small = F.avg_pool2d(levels, self.factor).round_()
        return small.to(torch.uint8).to(self.device), None

    def _decode_raw(self, z):
        up = F.interpolate(z.float(), scale_factor=self.factor, mode="bicubic", align_corners=False)
        return from_levels(up, self.device)


# -- Pillow codecs --------------------------------------------------------------------------------


def pack(files: list[bytes], qualities: list[float], statuses: list[int]) -> torch.Tensor:
    """Encoded files as one uint8 tensor (N, 1, 1, HEADER + longest), each row its header then its bytes."""
    width = HEADER + max((len(f) for f in files), default=0)
    out = np.zeros((len(files), 1, 1, width), dtype=np.uint8)
    for i, (data, q, status) in enumerate(zip(files, qualities, statuses)):
        row = out[i, 0, 0]
        row[:8], row[8:12] = np.array([len(data)], np.uint64).view(np.uint8), np.array([q], np.float32).view(np.uint8)
        row[12] = status
        row[HEADER : HEADER + len(data)] = np.frombuffer(data, np.uint8)
    return torch.from_numpy(out)


def unpack(latents: torch.Tensor) -> list[tuple[bytes, float, int]]:
    """Each row's (file bytes, quality, status) from :func:`pack`'s tensor."""
    rows = latents.detach().cpu().reshape(len(latents), -1).numpy()
    out = []
    for row in rows:
        n = int(row[:8].view(np.uint64)[0])
        out.append((row[HEADER : HEADER + n].tobytes(), float(row[8:12].view(np.float32)[0]), int(row[12])))
    return out


def jpeg_tables(quality: float) -> list[list[int]]:
    """libjpeg's quantization tables at ``quality``, for any real quality in [1, 100].

    The standard (Annex K) tables scaled as libjpeg's ``jpeg_quality_scaling`` does: scale 5000 / q
    (floored) below 50, else 200 - 2q, then ``(table * scale + 50) // 100`` clamped to 1..255. At an
    integer quality the file equals Pillow's ``quality=q`` byte for byte (tested); between integers
    the tables change one entry at a time, a control finer than the integer quality.
    """
    scale = math.floor(5000 / quality) if quality < 50 else 200 - 2 * quality
    return [np.clip(np.floor((t * scale + 50) / 100), 1, 255).astype(int).tolist() for t in _base_tables()]


_BASE: list[np.ndarray] = []


def _base_tables() -> list[np.ndarray]:
    """The standard luminance and chrominance tables, in Pillow's order: libjpeg's own at quality 50 (scale 100)."""
    if not _BASE:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="JPEG", quality=50)
        tables = Image.open(buf).quantization
        _BASE.extend(np.asarray(tables[k], dtype=np.int64) for k in sorted(tables))
    return _BASE


def pillow_library(fmt: str) -> str:
    """Pillow's version and that of the library encoding ``fmt``; raises :class:`CodecUnavailable` without one."""
    import PIL
    from PIL import features

    feature = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}[fmt]
    if not features.check(feature):
        avif = " (Pillow's wheels include libavif from Pillow 11.3 on: pip install -U pillow)" if fmt == "avif" else ""
        raise CodecUnavailable(
            f"{fmt.upper()} is unavailable: this Pillow {PIL.__version__} was built without {feature} support{avif}"
        )
    return f"Pillow {PIL.__version__}, {feature} {features.version(feature)}"


def search_quality(
    encode: Callable[[float], bytes], target_bits: float, lo: float, hi: float, integer: bool, tolerance: float
) -> tuple[bytes, float, int]:
    """The encoding whose size is nearest ``target_bits``, by bisection of the quality (size grows with it).

    Returns the file, its quality and a status: :data:`HIT` (within ``tolerance``), :data:`ABOVE_RANGE`
    (the target exceeds the size at the highest quality), :data:`BELOW_RANGE` (below the lowest) or
    :data:`COARSE` (between two adjacent settings, neither within ``tolerance``).
    """

    def error(data: bytes) -> float:
        return abs(8 * len(data) / target_bits - 1)

    top = encode(hi)
    if 8 * len(top) <= target_bits:
        return top, hi, HIT if error(top) <= tolerance else ABOVE_RANGE
    bottom = encode(lo)
    if 8 * len(bottom) >= target_bits:
        return bottom, lo, HIT if error(bottom) <= tolerance else BELOW_RANGE
    best = min(((top, hi), (bottom, lo)), key=lambda c: error(c[0]))
    a, b = lo, hi
    for _ in range(40):
        if integer and b - a <= 1:
            break
        mid = (a + b) // 2 if integer else (a + b) / 2
        data = encode(mid)
        if error(data) < error(best[0]):
            best = (data, mid)
        if error(data) <= tolerance / 10:  # close enough: 0.5% at the default 5%
            break
        if 8 * len(data) < target_bits:
            a = mid
        else:
            b = mid
    return best[0], float(best[1]), HIT if error(best[0]) <= tolerance else COARSE


class PillowCodec(Codec):
    """JPEG, WebP or AVIF through Pillow, at a fixed ``quality`` or a target ``bpp`` (which wins when set).

    With ``bpp`` each image's quality is bisected until its file is within ``tolerance`` of
    ``bpp x pixels`` bits: JPEG's quality is real-valued through scaled quantization tables
    (:func:`jpeg_tables`), WebP's is real-valued in libwebp, AVIF's an integer. A target beyond the
    codec's range (or between two adjacent integer settings) cannot be hit: that image gets the
    nearest file, and ``rate_warnings`` says why. ``options`` go to Pillow's ``save`` as they are
    (``subsampling``, ``method``, ``speed``...). ``bpp`` counts the whole file, headers included.
    """

    def __init__(
        self, name: str, format: str, quality=None, bpp=None, tolerance=0.05, options: Mapping | None = None, **kwargs
    ):
        fmt = check_choice(f"vae.{name}.format", format, FORMATS)
        lo, hi, integer = QUALITY[fmt]
        for key, value, low, high in (
            ("quality", quality, lo, hi),
            ("bpp", bpp, 0, math.inf),
            ("tolerance", tolerance, 0, 1),
        ):
            number = not isinstance(value, bool) and isinstance(value, int | float)
            if value is not None and not (number and low <= value <= high):
                raise ConfigError(f"vae.{name}.{key}", value, hint=f"a number in [{low}, {high}]")
        if bpp is None and quality is None:
            raise ConfigError(f"vae.{name}.quality", None, hint=f"a quality in [{lo:g}, {hi:g}], or set vae.{name}.bpp")
        if bpp is not None and bpp <= 0:
            raise ConfigError(f"vae.{name}.bpp", bpp, hint="a positive target in bits per pixel, or null")
        if bpp is None and fmt != "webp" and quality != int(quality):
            raise ConfigError(f"vae.{name}.quality", quality, hint=f"an integer for {fmt} (fractions only with bpp=)")
        self.format, self.quality, self.bpp, self.tolerance = fmt, quality, bpp, float(tolerance)
        self.options = dict(options or {})
        self.range, self.integer = (lo, hi), integer
        settings = {"codec": fmt, "quality": None if bpp is not None else quality, "bpp": bpp}
        settings.update(tolerance=self.tolerance if bpp is not None else None, options=self.options)
        super().__init__(name, LatentSpace(f"{fmt} file", 1, 1), settings, pillow_library(fmt), **kwargs)

    def _file(self, image, quality: float) -> bytes:
        buf = io.BytesIO()
        if self.format == "jpeg":
            if quality == int(quality) and self.bpp is None:
                image.save(buf, format="JPEG", quality=int(quality), **self.options)
            else:
                image.save(buf, format="JPEG", qtables=jpeg_tables(quality), **self.options)
        else:
            q = int(quality) if self.integer else float(quality)
            image.save(buf, format=self.format.upper(), quality=q, **self.options)
        return buf.getvalue()

    def _moments(self, images):
        from PIL import Image

        files, qualities, statuses = [], [], []
        for pixels in to_uint8(images).permute(0, 2, 3, 1).numpy():
            image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
            if self.bpp is None:
                data, q, status = self._file(image, self.quality), float(self.quality), HIT
            else:
                target = self.bpp * pixels.shape[0] * pixels.shape[1]
                encode = lambda q, image=image: self._file(image, q)  # noqa: E731
                data, q, status = search_quality(encode, target, *self.range, self.integer, self.tolerance)
            files.append(data)
            qualities.append(q)
            statuses.append(status)
        return pack(files, qualities, statuses).to(self.device), None

    def _decode_raw(self, z):
        from PIL import Image

        images = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data, _, _ in unpack(z)]
        return from_levels(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), self.device)

    def rate_bits(self, latents):
        return torch.tensor([8.0 * len(data) for data, _, _ in unpack(latents)], dtype=torch.float64)

    def rate_facts(self, latents):
        rows = unpack(latents)
        target = math.nan if self.bpp is None else float(self.bpp)
        return {"bpp_target": [target] * len(rows), "codec_quality": [q for _, q, _ in rows]}

    def rate_warnings(self, latents) -> list[str]:
        lo, hi = self.range
        fmt = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}[self.format]
        why = {
            ABOVE_RANGE: f"beyond {fmt}'s range: its highest quality {hi:g} gives fewer bits",
            BELOW_RANGE: f"below {fmt}'s range: its lowest quality {lo:g} gives more bits",
            COARSE: f"between two adjacent {fmt} qualities, neither within {self.tolerance:.0%}",
        }
        return [why.get(status, "") for _, _, status in unpack(latents)]
