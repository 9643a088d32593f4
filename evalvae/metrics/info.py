"""What a metric's numbers are to their readers: direction, title, decimals, unit, default tolerance,
the float noise within which two values tie, and whether the column is a quality at all; and the
registry of the metrics evalvae ships.

Every metric declares the :class:`MetricInfo` of each result it produces (``infos``). The run writes
it into ``metrics.json`` beside each metric's protocol (``"info"``), and ``report`` and ``compare``
read it from there (:func:`recorded_info`).

Two tolerances, for two questions. ``tolerance`` is how far compare lets a mean move before it
counts (about ten times the noise of re-running the same weights on other hardware, below what a
real change moves). ``tie`` is the float noise itself, with a stated margin: two values within it
are the same number computed twice (the same VAE at another batch size), so the report and compare
call them a tie everywhere: no win, no best, no favoured side, no regression.

:data:`METRICS` maps each shipped metric's key in ``conf/metrics`` to its class, as a
``"module:Class"`` string imported only when asked for, and to the infos of its results, so that
``compare``, ``report`` and the run read them without importing torch or a metric library. Nothing
here does I/O.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from evalvae.errors import ConfigError


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
    for key, null in (("tolerance", "the default"), ("tie", "ties of equal values")):
        tol = values.get(key)
        if tol is not None and not isinstance(tol, Tolerance):
            raise ConfigError(f"{where}.{key}", tol, hint=f"a Tolerance(abs=..., rel=...), or null for {null}")
    quality = values.get("quality")
    if quality is not None and not isinstance(quality, bool):
        raise ConfigError(f"{where}.quality", quality, (True, False))


@dataclass(frozen=True)
class Tolerance:
    """An allowed change of ``max(abs, rel * |baseline|)`` in the metric's own unit."""

    abs: float = 0.0
    rel: float = 0.0

    def allowed(self, baseline: float) -> float:
        return max(self.abs, self.rel * abs(baseline))

    def ties(self, a: float, b: float) -> bool:
        """Whether ``a`` and ``b`` are within this tolerance of each other (relative to the larger
        magnitude, so the answer is the same either way round); equal values (infinities too) tie."""
        if a == b:
            return True
        if not (math.isfinite(a) and math.isfinite(b)):
            return False
        return abs(a - b) <= self.allowed(max(abs(a), abs(b)))

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
        tie: the float noise of computing the same value twice, with a margin: values (per image,
            or means) within it tie. None: only equal values tie.
        quality: False for a fact about an image or its encoding (bits per pixel, a region count),
            which the report never ranks, tests or plots as a quality.
    """

    name: str
    title: str
    higher_is_better: bool | None
    decimals: int | None = None
    tolerance: Tolerance | None = None
    unit: str = ""
    tie: Tolerance | None = None
    quality: bool = True

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
            "tie": None if self.tie is None else self.tie.to_dict(),
            "quality": self.quality,
        }

    @property
    def summarised(self) -> bool:
        """Whether ``summary.csv`` holds its mean: a quality, or a fact with a direction (``bpp``, which
        compare gates); a fact without one (a region count, a codec's target) is a per-image column only."""
        return self.quality or self.higher_is_better is not None

    @property
    def tie_tolerance(self) -> Tolerance:
        """:attr:`tie`, or exact ties (``Tolerance()``) where none is stated."""
        return self.tie or Tolerance()

    @classmethod
    def from_dict(cls, name: str, data: dict, where: str = "info") -> MetricInfo:
        """The info stated by ``data`` (as :meth:`to_dict` writes it); fields it lacks are neutral (:func:`neutral_info`).

        Invalid values raise a :class:`ConfigError` naming ``where.<field>``; unknown fields are
        ignored (written by a later evalvae).
        """
        if not isinstance(data, dict):
            raise ConfigError(
                where, data, hint="a mapping of title, unit, higher_is_better, decimals, tolerance, tie, quality"
            )
        stated = {f.name: data[f.name] for f in fields(cls) if f.name != "name" and f.name in data}
        for key in ("tolerance", "tie"):
            if stated.get(key) is not None:
                stated[key] = Tolerance.from_dict(stated[key], f"{where}.{key}")
        if "quality" in stated and stated["quality"] is None:  # null: a quality
            del stated["quality"]
        _check(where, stated)
        return replace(neutral_info(name), **stated)


def neutral_info(name: str) -> MetricInfo:
    """A metric nothing is known about: titled by its name, no direction, 4 significant digits, the default
    tolerance, ties only between equal values, a quality."""
    return MetricInfo(name, name, None)


# The infos of the metrics evalvae ships (the registry, METRICS, below says which class produces each).
# Quality tolerances sit ~10x above the float noise of re-running the same weights on another
# machine (a few flipped 8-bit pixels) and well below what a decoder fine-tune or a precision
# change moves (docs/ci.md).
#
# Ties (`tie`): the largest difference measured between two runs of the same weights at batch
# size 1 and 8 (real TAEF2 on Kodak at 256², CPU, fp32, metrics=[all,color], real LPIPS-alex and
# FID Inception weights; 24 images, and 8 with metrics.latent_bits=8), per image for per-image metrics and of the value for
# set-level ones, with a margin of about 10x, rounded up, and below the smallest real change measured
# (docs/ci.md: bf16 instead of fp32 moves TAEF2's means by -0.012 dB PSNR and -1.9e-5 SSIM, which caps
# SSIM's tie at 1e-5, 7x its plain noise). A float-noise difference flips a few
# 8-bit pixels (PSNR: ~4e-6 dB each at 256²); docs/ci.md's other CPUs and thread counts stay
# within the same per-image 5.4e-5 dB. TF32 convolutions on a GPU are a precision change, not noise,
# and can exceed a tie (3.3e-3 dB per image measured on an H200).
# tie: measured 5.4e-5 dB per image (5.3e-5 with latent_bits=8)
PSNR = MetricInfo(
    "psnr", "PSNR (dB)", True, decimals=2, tolerance=Tolerance(abs=0.01), unit="dB", tie=Tolerance(abs=5e-4)
)
# tie: measured 1.5e-6 per image, 5.0e-6 with latent_bits=8; bf16 moves the mean 1.9e-5
SSIM = MetricInfo("ssim", "SSIM", True, decimals=4, tolerance=Tolerance(abs=0.0002), tie=Tolerance(abs=1e-5))
# metrics.psnr.channels=y, metrics.ssim.channels=y: the same results of BT.601 luma alone (the names stay, the
# protocol says which). Ties measured as above (TAEF2, Kodak at 256², batch size 1 vs 8): PSNR-Y 8.9e-5 dB per
# image, so ±1e-3 dB; SSIM-Y 3.1e-6, kept at SSIM's ±1e-5 (bf16's real move of SSIM's mean, 1.9e-5, caps it)
PSNR_Y = replace(PSNR, title="PSNR-Y (dB)", tie=Tolerance(abs=1e-3))
SSIM_Y = replace(SSIM, title="SSIM-Y")
# evalvae.metrics.msssim: MS-SSIM (Wang et al. 2003) at 5 scales. tie: measured 3.2e-7 per image
MS_SSIM = MetricInfo("ms_ssim", "MS-SSIM", True, decimals=4, tolerance=Tolerance(abs=0.0002), tie=Tolerance(abs=5e-6))
# evalvae.metrics.dists: DISTS (Ding et al. 2020), 0 for identical images; VGG16 in float32, and its statistics
# (means, variances, covariances of the features) in float32 as the authors' code. tie: measured 2.4e-5 per image,
# ten times LPIPS's; compare's tolerance is set about seven times the tie, as LPIPS's
DISTS = MetricInfo("dists", "DISTS", False, decimals=4, tolerance=Tolerance(abs=0.002), tie=Tolerance(abs=3e-4))
# tie: measured 2.5e-6 per image (3e-6 seen on 4 images)
LPIPS = MetricInfo("lpips", "LPIPS", False, decimals=4, tolerance=Tolerance(abs=0.0002), tie=Tolerance(abs=3e-5))
# tie: measured 4.8e-5 relative at N = 24 (8.7e-5 seen on another set)
RFID = MetricInfo("rfid", "rFID", False, decimals=2, tolerance=Tolerance(rel=0.01), tie=Tolerance(rel=1e-3))
# tie: measured 1.5e-6 at N = 8, 1.9e-7 at 24 (KID can be ~0: no relative tie)
KID = MetricInfo("kid", "KID", False, decimals=5, tolerance=Tolerance(abs=0.0001, rel=0.02), tie=Tolerance(abs=2e-5))
# evalvae.metrics.fd_dinov2: the Fréchet distance of DINOv2 ViT-L/14 features (Stein et al. 2023); rFID's
# tolerances (a Fréchet distance too). Not measured (no DINOv2 weights offline): only equal values tie.
RFD_DINOV2 = MetricInfo("rfd_dinov2", "FD-DINOv2", False, decimals=2, tolerance=Tolerance(rel=0.01))
# task=t2i names it fd_dinov2, as rFID fid: its reference is an image set, not the originals
FD_DINOV2 = replace(RFD_DINOV2, name="fd_dinov2")
# evalvae.metrics.cmmd: CMMD (Jayasumana et al. 2024), the RBF-kernel MMD of CLIP embeddings times 1000.
# Not measured (no CLIP weights offline): only equal values tie.
CMMD = MetricInfo("cmmd", "CMMD", False, decimals=4, tolerance=Tolerance(abs=0.001, rel=0.02))
# task=t2i names rFID's statistic ``fid``: its reference is an image set, not the originals.
FID = replace(RFID, name="fid", title="FID")
# not measured (no CLIP weights offline): only equal scores tie
CLIP_SCORE = MetricInfo("clip_score", "CLIP score", True, decimals=2, tolerance=Tolerance(rel=0.001))
# evalvae.metrics.text: per image, the mean over its text lines of the OCR readings' agreement, the
# reconstruction's against the original's and (T-) against the ground truth. One line of 20 read
# otherwise (one character of 20) in one image of 12 moves the set's NED by 2e-4 and its accuracy by 0.004.
# Readings are discrete: a reading that changes is a real difference, so only equal values tie.
TEXT_NED = MetricInfo("text_ned", "Text NED", False, decimals=4, tolerance=Tolerance(abs=0.005))
TEXT_ACC = MetricInfo("text_acc", "Text accuracy", True, decimals=4, tolerance=Tolerance(abs=0.01))
TEXT_T_NED = MetricInfo("text_t_ned", "T-NED (vs truth)", False, decimals=4, tolerance=Tolerance(abs=0.005))
TEXT_T_ACC = MetricInfo("text_t_acc", "T-ACC (vs truth)", True, decimals=4, tolerance=Tolerance(abs=0.01))
# evalvae.metrics.faces: per image, the mean over its faces of the cosine of the original's and the
# reconstruction's dlib descriptors, and the share of its faces dlib calls another person. Flipping
# 1% of a reconstruction's 8-bit pixels by one level moves a face's similarity by 3e-5; TAESD and
# TAEF2 differ by 0.01 on Kodak's portrait at 256². One face in 24 images changing identity moves the share by 0.04.
# Float noise flips far fewer pixels than 1% (PSNR's noise above: ~10 of 65,536), so the similarity's
# tie is that 1% move, 3e-5 (not measured directly: dlib's models cannot be loaded here); the share is discrete.
FACE_SIM = MetricInfo(
    "face_sim", "Face identity similarity", True, decimals=4, tolerance=Tolerance(abs=0.001), tie=Tolerance(abs=3e-5)
)
FACE_BELOW = MetricInfo(
    "face_below", "Faces below identity threshold", False, decimals=3, tolerance=Tolerance(abs=0.01)
)
# How many text lines and faces an image has (found on the original, the same for every VAE): facts.
TEXT_REGIONS = MetricInfo("text_regions", "Text lines", None, decimals=0, quality=False)
FACE_REGIONS = MetricInfo("face_regions", "Faces", None, decimals=0, quality=False)
# evalvae.recon.rate: bits per pixel of what the decoder reads (fewer is better at equal quality), and
# with metrics.latent_bits the PSNR the quantized latents lose. A VAE's bpp is exact; a codec's target
# search lands within its tolerance (5%), so reruns on another libjpeg may move it by a few percent.
# bpp is a fact of the encoding, not a quality: compare gates it (lower is better at equal quality), the
# report states it and plots quality against it, but never ranks, tests or plots it as a quality.
BPP = MetricInfo("bpp", "Bits per pixel", False, decimals=3, tolerance=Tolerance(rel=0.05), unit="bpp", quality=False)
# tie: measured 5.0e-5 dB per image
LATENT_BITS_PSNR_DROP = MetricInfo(
    "latent_bits_psnr_drop",
    "PSNR lost to latent_bits (dB)",
    False,
    decimals=3,
    tolerance=Tolerance(abs=0.01),
    unit="dB",
    tie=Tolerance(abs=5e-4),
)
# per-image facts beside bpp, not metrics: a codec's target bpp and the quality it used (NaN for VAEs)
BPP_TARGET = MetricInfo("bpp_target", "Target bpp", None, decimals=3, unit="bpp", quality=False)
CODEC_QUALITY = MetricInfo("codec_quality", "Codec quality", None, decimals=0, quality=False)
RATE_FACTS = (BPP_TARGET.name, CODEC_QUALITY.name)
# evalvae.metrics.color: per image, the mean and 95th percentile of pixel CIEDE2000 ΔE. Flipping 1% of
# a 256² reconstruction's 8-bit pixels by one level moves the mean by about 0.003.
# tie: measured 4.4e-5 per image
DELTA_E = MetricInfo(
    "delta_e", "ΔE2000 (mean)", False, decimals=3, tolerance=Tolerance(abs=0.01), tie=Tolerance(abs=5e-4)
)
# tie: measured 3.2e-4 per image (a flipped pixel can move the percentile)
DELTA_E_P95 = MetricInfo(
    "delta_e_p95", "ΔE2000 (95th pct)", False, decimals=3, tolerance=Tolerance(abs=0.02), tie=Tolerance(abs=3e-3)
)


# -- the registry --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    """A metric evalvae ships, known without importing it.

    Args:
        key: its key in ``conf/metrics`` (``metrics.<key>``), such as ``fid``.
        target: its class as ``"module:Class"``, imported by :meth:`load` only.
        infos: the info of every result it can produce, in the order of its columns or rows.
        set_level: a metric of the set of images (:class:`~evalvae.metrics.base.SetMetric`), not per image.
        optional: results that a boolean argument of the class turns off, as ``{result name: argument}``
            (``{"kid": "kid"}``: ``kid=false`` gives rFID alone).
        variants: the infos an argument's value gives instead, as ``{argument: {value: infos}}``
            (``{"channels": {"y": (PSNR_Y,)}}``).
    """

    key: str
    target: str
    infos: tuple[MetricInfo, ...]
    set_level: bool = False
    optional: Mapping[str, str] = field(default_factory=dict)
    variants: Mapping[str, Mapping[str, tuple[MetricInfo, ...]]] = field(default_factory=dict)

    @property
    def dotted(self) -> str:
        """The class as a ``_target_`` spells it: ``evalvae.metrics.pixel.PSNR``."""
        return self.target.replace(":", ".")

    def load(self) -> type:
        """The class itself (imports its module)."""
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def infos_for(self, arguments: Mapping) -> tuple[MetricInfo, ...]:
        """The infos of the results the class built with ``arguments`` produces."""
        on = {name: bool(arguments.get(argument, True)) for name, argument in self.optional.items()}
        infos = next((by[arguments[arg]] for arg, by in self.variants.items() if arguments.get(arg) in by), self.infos)
        return tuple(i for i in infos if on.get(i.name, True))


METRICS = {
    m.key: m
    for m in (
        Registered("psnr", "evalvae.metrics.pixel:PSNR", (PSNR,), variants={"channels": {"y": (PSNR_Y,)}}),
        Registered("ssim", "evalvae.metrics.pixel:SSIM", (SSIM,), variants={"channels": {"y": (SSIM_Y,)}}),
        Registered("ms_ssim", "evalvae.metrics.msssim:MSSSIM", (MS_SSIM,)),
        Registered("lpips", "evalvae.metrics.lpips:LPIPS", (LPIPS,)),
        Registered("dists", "evalvae.metrics.dists:DISTS", (DISTS,)),
        Registered("fid", "evalvae.metrics.distribution:FIDKID", (RFID, KID), set_level=True, optional={"kid": "kid"}),
        Registered("cmmd", "evalvae.metrics.cmmd:CMMD", (CMMD,), set_level=True),
        Registered("dinov2", "evalvae.metrics.fd_dinov2:FDDINOv2", (RFD_DINOV2,), set_level=True),
        Registered("color", "evalvae.metrics.color:DeltaE", (DELTA_E, DELTA_E_P95)),
        Registered(
            "text", "evalvae.metrics.text:TextFidelity", (TEXT_NED, TEXT_ACC, TEXT_T_NED, TEXT_T_ACC, TEXT_REGIONS)
        ),
        Registered("faces", "evalvae.metrics.faces:FaceFidelity", (FACE_SIM, FACE_BELOW, FACE_REGIONS)),
        # t2i.clip_score: each decode against its prompt
        Registered("clip_score", "evalvae.t2i.clipscore:CLIPScore", (CLIP_SCORE,)),
        # every run's rate columns (metrics.latent_bits adds the PSNR drop)
        Registered(
            "rate",
            "evalvae.recon.rate:Rate",
            (BPP, LATENT_BITS_PSNR_DROP, BPP_TARGET, CODEC_QUALITY),
            optional={LATENT_BITS_PSNR_DROP.name: "latent_bits"},
        ),
    )
}
# by result name; task=t2i names rFID's statistic fid
_BY_NAME = {i.name: i for m in METRICS.values() for i in m.infos} | {FID.name: FID, FD_DINOV2.name: FD_DINOV2}


def registered(target: str) -> Registered | None:
    """The registry's entry of the class a ``_target_`` names (``module.Class`` or ``module:Class``), else None."""
    dotted = str(target).replace(":", ".")
    return next((m for m in METRICS.values() if m.dotted == dotted), None)


def registered_info(name: str) -> MetricInfo | None:
    """The info of a result name evalvae's own metrics produce, else None."""
    return _BY_NAME.get(name)


def metric_entry(info: MetricInfo, protocol: dict) -> dict:
    """A metric's ``metrics.json`` entry: ``higher_is_better`` (the direction, which is protocol), its protocol, its info."""
    return {"higher_is_better": info.higher_is_better, **protocol, "info": info.to_dict()}


def recorded_info(name: str, entry: dict | None = None, where: str | None = None) -> MetricInfo:
    """The info of result ``name``: as its ``metrics.json`` entry records it (``"info"``); for a name without
    an entry (a per-image fact such as ``text_regions``, which ``metrics.json`` does not list), the
    registered info of that name, else a neutral one. ``where`` names the entry in errors.

    An entry without ``"info"`` was written before ``metrics.json`` recorded it, and is refused.
    """
    where = where or f"metrics.{name}.info"
    if entry is None:
        return registered_info(name) or neutral_info(name)
    if not isinstance(entry, dict) or entry.get("info") is None:
        raise ConfigError(
            where,
            None,
            hint="results written before metrics.json recorded each metric's info; rerun them with this evalvae",
        )
    return MetricInfo.from_dict(name, entry["info"], where=where)
