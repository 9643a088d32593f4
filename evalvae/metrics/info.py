"""What a metric's numbers are to their readers: direction, title, decimals, unit and default tolerance.

Each metric class declares the :class:`MetricInfo` of the result names it produces (``info`` on a
per-image metric, ``infos`` on a set-level one). The run writes it into ``metrics.json`` beside
each metric's protocol (``"info"``), and ``report`` and ``compare`` read it from there
(:func:`recorded_info`). Results written before ``metrics.json`` carried it fall back to
:func:`builtin_info`, the info of the metrics evalvae ships; any other metric reads neutrally
(:func:`neutral_info`: its own name, 4 significant digits, the direction ``metrics.json`` states
if any, and compare's ``default`` tolerance).

The shipped metrics' info is declared here and their classes point to it, so that ``compare`` and
``report`` read it without importing torch or a metric library. Nothing here does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from evalvae.errors import ConfigError

__all__ = [
    "BUILTIN",
    "MetricInfo",
    "Tolerance",
    "builtin_info",
    "declared_infos",
    "info_of",
    "metric_entry",
    "neutral_info",
    "recorded_info",
]


def _number(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or math.isinf(value):
        raise ConfigError(where, value, hint="a finite number >= 0")
    return float(value)


def _check(where: str, values: dict) -> None:
    """Raise a :class:`ConfigError` naming ``where.<field>`` for the first invalid field of ``values``."""
    for key in ("title", "unit"):
        if key in values and not isinstance(values[key], str):
            raise ConfigError(f"{where}.{key}", values[key], hint="a string")
    hib = values.get("higher_is_better")
    if hib is not None and not isinstance(hib, bool):
        raise ConfigError(f"{where}.higher_is_better", hib, (True, False, None))
    d = values.get("decimals")
    if d is not None and (isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 12):
        raise ConfigError(f"{where}.decimals", d, hint="an integer from 0 to 12, or null for 4 significant digits")
    tol = values.get("tolerance")
    if tol is not None and not isinstance(tol, Tolerance):
        raise ConfigError(f"{where}.tolerance", tol, hint="a Tolerance(abs=..., rel=...), or null for the default")


@dataclass(frozen=True)
class Tolerance:
    """An allowed change of ``max(abs, rel * |baseline|)`` in the metric's own unit."""

    abs: float = 0.0
    rel: float = 0.0

    def allowed(self, baseline: float) -> float:
        return max(self.abs, self.rel * abs(baseline))

    def describe(self) -> str:
        parts = ([f"±{self.abs:g}"] if self.abs else []) + ([f"±{self.rel:.3g}×"] if self.rel else [])
        return " or ".join(parts) or "exact"

    def to_dict(self) -> dict:
        return {"abs": self.abs, "rel": self.rel}

    @classmethod
    def from_dict(cls, data, where: str = "tolerance") -> Tolerance:
        if not isinstance(data, dict):
            raise ConfigError(where, data, hint="a mapping such as {abs: 0.01} or {rel: 0.02}")
        unknown = sorted(set(data) - {"abs", "rel"})
        if unknown:
            raise ConfigError(f"{where} key", unknown[0], ("abs", "rel"))
        return cls(*(_number(f"{where}.{k}", data.get(k, 0.0)) for k in ("abs", "rel")))


@dataclass(frozen=True)
class MetricInfo:
    """How one result name reads.

    Args:
        name: the result name (a per-image column and summary.csv's ``metric``), such as ``psnr``.
        title: how tables and plots name it, unit included: ``PSNR (dB)``.
        higher_is_better: the direction of better values; None where unknown (compare then refuses
            to judge it, and the report ranks nothing by it).
        decimals: decimals a value is shown with; None for 4 significant digits.
        tolerance: compare's default allowed change; None for the ``default`` of its tolerances.
        unit: the unit alone (``dB``), for prose; empty for unitless metrics.
    """

    name: str
    title: str
    higher_is_better: bool | None
    decimals: int | None = None
    tolerance: Tolerance | None = None
    unit: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("MetricInfo.name", self.name, hint="a non-empty result name")
        _check(f"MetricInfo({self.name!r})", {f.name: getattr(self, f.name) for f in fields(self)})

    def to_dict(self) -> dict:
        """The ``"info"`` of a ``metrics.json`` entry (the name is the entry's key)."""
        return {
            "title": self.title,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "decimals": self.decimals,
            "tolerance": None if self.tolerance is None else self.tolerance.to_dict(),
        }

    @classmethod
    def from_dict(cls, name: str, data: dict, base: MetricInfo | None = None, where: str = "info") -> MetricInfo:
        """The info stated by ``data`` (as :meth:`to_dict` writes it); fields it lacks come from ``base``.

        Invalid values raise a :class:`ConfigError` naming ``where.<field>``; unknown fields are
        ignored (written by a later evalvae).
        """
        if not isinstance(data, dict):
            raise ConfigError(where, data, hint="a mapping of title, unit, higher_is_better, decimals, tolerance")
        base = neutral_info(name) if base is None else replace(base, name=name)
        stated = {f.name: data[f.name] for f in fields(cls) if f.name != "name" and f.name in data}
        if stated.get("tolerance") is not None:
            stated["tolerance"] = Tolerance.from_dict(stated["tolerance"], f"{where}.tolerance")
        _check(where, stated)
        return replace(base, **stated)


def neutral_info(name: str, higher_is_better: bool | None = None) -> MetricInfo:
    """A metric nothing is known about: titled by its name, 4 significant digits, the default tolerance."""
    return MetricInfo(name, name, higher_is_better)


# The metrics evalvae ships (evalvae.metrics.pixel, .lpips, .distribution; evalvae.t2i.clipscore).
# Quality tolerances sit ~10x above the float noise of re-running the same weights on another
# machine (a few flipped 8-bit pixels) and well below what a decoder fine-tune or a precision
# change moves (docs/ci.md).
PSNR = MetricInfo("psnr", "PSNR (dB)", True, decimals=2, tolerance=Tolerance(abs=0.01), unit="dB")
SSIM = MetricInfo("ssim", "SSIM", True, decimals=4, tolerance=Tolerance(abs=0.0002))
LPIPS = MetricInfo("lpips", "LPIPS", False, decimals=4, tolerance=Tolerance(abs=0.0002))
RFID = MetricInfo("rfid", "rFID", False, decimals=2, tolerance=Tolerance(rel=0.01))
KID = MetricInfo("kid", "KID", False, decimals=5, tolerance=Tolerance(abs=0.0001, rel=0.02))
# task=t2i names rFID's statistic ``fid``: its reference is an image set, not the originals.
FID = replace(RFID, name="fid", title="FID")
CLIP_SCORE = MetricInfo("clip_score", "CLIP score", True, decimals=2, tolerance=Tolerance(rel=0.001))
BUILTIN = {i.name: i for i in (PSNR, SSIM, LPIPS, RFID, KID, FID, CLIP_SCORE)}
# evalvae.metrics.text: per image, the mean over its text lines of the OCR readings' agreement, the
# reconstruction's against the original's and (T-) against the ground truth. One line of 20 read
# otherwise (one character of 20) in one image of 12 moves the set's NED by 2e-4 and its accuracy by 0.004.
TEXT_NED = MetricInfo("text_ned", "Text NED", False, decimals=4, tolerance=Tolerance(abs=0.005))
TEXT_ACC = MetricInfo("text_acc", "Text accuracy", True, decimals=4, tolerance=Tolerance(abs=0.01))
TEXT_T_NED = MetricInfo("text_t_ned", "T-NED (vs truth)", False, decimals=4, tolerance=Tolerance(abs=0.005))
TEXT_T_ACC = MetricInfo("text_t_acc", "T-ACC (vs truth)", True, decimals=4, tolerance=Tolerance(abs=0.01))
BUILTIN.update({i.name: i for i in (TEXT_NED, TEXT_ACC, TEXT_T_NED, TEXT_T_ACC)})
# evalvae.metrics.faces: per image, the mean over its faces of the cosine of the original's and the
# reconstruction's dlib descriptors, and the share of its faces dlib calls another person. Flipping
# 1% of a reconstruction's 8-bit pixels by one level moves a face's similarity by 3e-5; TAESD and
# TAEF2 differ by 0.01 on Kodak's portrait at 256². One face in 24 images changing identity moves the share by 0.04.
FACE_SIM = MetricInfo("face_sim", "Face identity similarity", True, decimals=4, tolerance=Tolerance(abs=0.001))
FACE_BELOW = MetricInfo(
    "face_below", "Faces below identity threshold", False, decimals=3, tolerance=Tolerance(abs=0.01)
)
BUILTIN.update({i.name: i for i in (FACE_SIM, FACE_BELOW)})
# evalvae.recon.rate: bits per pixel of what the decoder reads (fewer is better at equal quality), and
# with metrics.latent_bits the PSNR the quantized latents lose. A VAE's bpp is exact; a codec's target
# search lands within its tolerance (5%), so reruns on another libjpeg may move it by a few percent.
BPP = MetricInfo("bpp", "Bits per pixel", False, decimals=3, tolerance=Tolerance(rel=0.05), unit="bpp")
LATENT_BITS_PSNR_DROP = MetricInfo(
    "latent_bits_psnr_drop",
    "PSNR lost to latent_bits (dB)",
    False,
    decimals=3,
    tolerance=Tolerance(abs=0.01),
    unit="dB",
)
BUILTIN.update({i.name: i for i in (BPP, LATENT_BITS_PSNR_DROP)})
# per-image facts beside bpp, not metrics: a codec's target bpp and the quality it used (NaN for VAEs)
BPP_TARGET, CODEC_QUALITY = "bpp_target", "codec_quality"
RATE_FACTS = (BPP_TARGET, CODEC_QUALITY)
# evalvae.metrics.color: per image, the mean and 95th percentile of pixel CIEDE2000 ΔE. Flipping 1% of
# a 256² reconstruction's 8-bit pixels by one level moves the mean by about 0.003.
DELTA_E = MetricInfo("delta_e", "ΔE2000 (mean)", False, decimals=3, tolerance=Tolerance(abs=0.01))
DELTA_E_P95 = MetricInfo("delta_e_p95", "ΔE2000 (95th pct)", False, decimals=3, tolerance=Tolerance(abs=0.02))
BUILTIN.update({i.name: i for i in (DELTA_E, DELTA_E_P95)})


def builtin_info(name: str) -> MetricInfo | None:
    """The info of a result name evalvae's own metrics produce (any case), else None."""
    return BUILTIN.get(str(name).lower())


def declared_infos(metric) -> dict[str, MetricInfo]:
    """What a metric class or object declares, by result name: its ``infos`` (set-level), else its ``info``."""
    infos = getattr(metric, "infos", None)
    if infos is None:
        info = getattr(metric, "info", None)
        infos = () if info is None else (info,)
    return {i.name: i for i in infos}


def info_of(metric, name: str | None = None) -> MetricInfo:
    """The info of result ``name`` (default: the metric's ``name``) of a metric class or object.

    A metric that declares none (a class written before metric info) gets the shipped info of that
    name, else a neutral one with the metric's own ``higher_is_better``.
    """
    name = name or metric.name
    declared = declared_infos(metric)
    if name in declared:
        return declared[name]
    if len(declared) == 1 and not getattr(metric, "set_level", False):  # a per-image metric under another key
        return replace(next(iter(declared.values())), name=name)
    return builtin_info(name) or neutral_info(name, getattr(metric, "higher_is_better", None))


def metric_entry(info: MetricInfo, protocol: dict) -> dict:
    """A metric's ``metrics.json`` entry: ``higher_is_better`` (as read before ``"info"``), its protocol, its info."""
    return {"higher_is_better": info.higher_is_better, **protocol, "info": info.to_dict()}


def recorded_info(name: str, entry: dict | None = None, where: str | None = None) -> MetricInfo:
    """The info of result ``name`` as its ``metrics.json`` entry records it.

    Field by field, later sources win: the shipped info (:func:`builtin_info`, else neutral), the
    entry's ``higher_is_better``, then its ``"info"``. ``where`` names the entry in errors.
    """
    info = builtin_info(name)
    info = neutral_info(name) if info is None else replace(info, name=name)
    entry = entry if isinstance(entry, dict) else {}
    if entry.get("higher_is_better") is not None:
        info = replace(info, higher_is_better=bool(entry["higher_is_better"]))
    if entry.get("info") is not None:
        info = MetricInfo.from_dict(name, entry["info"], info, where or f"metrics.{name}.info")
    return info
