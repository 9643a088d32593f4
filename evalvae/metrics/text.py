"""Text fidelity: what an OCR reads in the reconstruction against what it reads in the original, line by line.

The OCR is PP-OCRv4 (detection and recognition) with PP-OCR's mobile v2.0 direction classifier,
the ONNX models shipped in ``rapidocr-onnxruntime``, run on CPU by onnxruntime. Text lines are
detected on the original (or taken from the dataset's ground truth), and each line is recognised
on the original and on the reconstruction from the same box. Per line: the normalised edit
distance (NED) and exact match of the two readings after :func:`normalise`; where the dataset
knows the line's string, also of the reconstruction's reading against it (T-NED, T-ACC).
"""

from __future__ import annotations

import logging
import math
import unicodedata
from importlib import metadata
from pathlib import Path

import numpy as np

from evalvae.io import sha256_file
from evalvae.metrics import info as shipped
from evalvae.metrics.regioncache import RegionCache, pixels_sha256, region_key
from evalvae.metrics.regions import RegionMetric, SizeBins, to_hwc_u8
from evalvae.metrics.weights import MetricUnavailable
from evalvae.vocab import Region

log = logging.getLogger(__name__)
INSTALL = 'pip install "evalvae[regions]"'
WIDTH_STEP = 64  # px: the recogniser's input widths (see TextFidelity.recognise)
REC_BATCH = 8  # crops per recogniser call
NORMALISATION = "Unicode NFKC, case folded (str.casefold), every whitespace character removed"


def normalise(text: str) -> str:
    """The form both readings are compared in: NFKC, case folded, without whitespace.

    PP-OCR's recogniser drops or keeps the spaces between English words unreliably, so spaces are
    no evidence of fidelity; NFKC maps the full-width forms its Chinese-English dictionary can emit
    to their ASCII equivalents.
    """
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each of cost 1) between ``a`` and ``b``."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def ned(a: str, b: str) -> float:
    """Normalised edit distance ``levenshtein(a, b) / max(len(a), len(b))``, 0 for two empty strings."""
    longest = max(len(a), len(b))
    return levenshtein(a, b) / longest if longest else 0.0


def turned(crop: np.ndarray) -> np.ndarray:
    """A crop turned by 180 degrees."""
    return np.ascontiguousarray(crop[::-1, ::-1])


def line_size(box: np.ndarray) -> float:
    """A detected line's text height: its box's height, or its width where PP-OCR reads it as vertical text."""
    width = max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3]))
    height = max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2]))
    return float(width if height >= 1.5 * width else height)


class TextFidelity(RegionMetric):
    """OCR fidelity of text lines (PP-OCRv4 through rapidocr-onnxruntime), binned by text height.

    Args:
        bins: edges of the text-height bins in pixels (``[8, 16, 32]``: <8, 8–16, 16–32, ≥32).
        text_score: detected lines whose reading on the original scores below this recogniser
            confidence, or reads as nothing, are not text and are left out (ground-truth lines are all kept).
        use_cls: orient each line with the direction classifier on the original (a line read as
            upside down is turned 180°, on the reconstruction too).
        cache_dir: where the originals' lines and readings are kept across runs (``refstats/regions/text``).
        cache: false keeps them for the run only.
    """

    kind = "text"
    infos = (shipped.TEXT_NED, shipped.TEXT_ACC, shipped.TEXT_T_NED, shipped.TEXT_T_ACC, shipped.TEXT_REGIONS)
    libraries = ("rapidocr-onnxruntime", "onnxruntime", "opencv-python", "opencv-python-headless", "numpy")

    def __init__(
        self,
        bins=(8, 16, 32),
        text_score: float = 0.5,
        use_cls: bool = True,
        cache_dir: str | None = None,
        cache: bool = True,
    ):
        try:
            import rapidocr_onnxruntime
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as e:
            raise MetricUnavailable(f"rapidocr-onnxruntime cannot be imported ({e}); {INSTALL}") from None
        self.bins = SizeBins(tuple(bins))
        self.text_score, self.use_cls = float(text_score), bool(use_cls)
        self.engine = RapidOCR()
        self.models = self._models(Path(rapidocr_onnxruntime.__file__).parent)
        self.versions = {p: metadata.version(p) for p in ("rapidocr-onnxruntime", "onnxruntime")}
        self.cache = RegionCache(self.kind, cache_dir, persist=cache)
        self._identity = self.identity()
        self.calls = {"detect": 0, "recognise": 0}  # engine calls, for the speed note and the tests

    def _models(self, root: Path) -> dict:
        from rapidocr_onnxruntime.utils import read_yaml

        config = read_yaml(str(root / "config.yaml"))
        out = {}
        for part, keys in (
            ("Det", ("limit_side_len", "limit_type", "thresh", "box_thresh", "unclip_ratio", "use_dilation")),
            ("Rec", ("rec_img_shape",)),
            ("Cls", ("cls_image_shape", "cls_thresh")),
        ):
            path = root / config[part]["model_path"]
            out[part.lower()] = {
                "file": path.name,
                "sha256": sha256_file(path),
                "settings": {k: config[part][k] for k in keys},
                "path": str(path),
            }
        return out

    def identity(self) -> dict:
        """What the originals' lines and readings depend on besides the pixels (their cache key)."""
        models = self._described()
        if not self.use_cls:
            models.pop("cls")
        return {
            "models": models,
            "text_score": self.text_score,
            "width_step": WIDTH_STEP,
            "versions": self.versions,
            "version": self.version,
        }

    def _described(self) -> dict:
        return {k: {n: m[n] for n in ("file", "sha256", "settings")} for k, m in self.models.items()}

    def protocol(self) -> dict:
        models = self._described()
        return {
            "implementation": "rapidocr-onnxruntime {rapidocr-onnxruntime} (PP-OCRv4 det/rec, PP-OCR mobile v2.0 cls), "
            "onnxruntime {onnxruntime}, CPU".format(**self.versions),
            "models": models,
            "classifier": "orients each line on the original; the reconstruction's crop is turned alike"
            if self.use_cls
            else "not used (lines read as upright)",
            "lines": "detected on the original (PP-OCRv4 DB boxes, kept where the original's reading scores "
            f">= {self.text_score} and is not empty), or the dataset's ground-truth boxes; both images are "
            "read from the same box (rapidocr's perspective crop)",
            "text_score": self.text_score,
            "recognition": f"crops resized to height 48, zero-padded to their own width rounded up to a multiple of "
            f"{WIDTH_STEP} px (at least 320), batched {REC_BATCH} at a time with crops of that width only",
            "normalisation": NORMALISATION,
            "ned": "Levenshtein distance / max(len) of the normalised readings (0 for two empty strings)",
            "accuracy": "exact match of the normalised readings",
            "truth": "text_t_ned, text_t_acc: the reconstruction's reading against the ground-truth string",
            "size": "ground truth: the line's font size in px; detected: the box's height (its width for vertical text)",
            "bins": self.bins.describe(),
            "per_image": "mean over the image's lines; NaN for an image without text (text_regions = 0)",
            "pixels": "8-bit RGB (reconstructions rounded), passed to the models as BGR",
            "provenance": {k: m["path"] for k, m in self.models.items()},
        }

    # -- the OCR ---------------------------------------------------------------------------------
    def detect(self, bgr: np.ndarray) -> list[Region]:
        """Text lines of one original (top to bottom, left to right)."""
        self.calls["detect"] += 1
        boxes, _ = self.engine.auto_text_det(bgr)
        return [Region(tuple(map(tuple, b.astype(float).tolist())), line_size(b)) for b in boxes or []]

    def crops(self, bgr: np.ndarray, regions: list[Region]) -> list[np.ndarray]:
        return self.engine.get_crop_img_list(bgr, [np.array(r.box, dtype=np.float32) for r in regions])

    def orient(self, crops: list[np.ndarray]) -> list[bool]:
        """Which crops the classifier reads as upside down."""
        if not self.use_cls or not crops:
            return [False] * len(crops)
        _, labels, _ = self.engine.text_cls([c.copy() for c in crops])
        thresh = self.models["cls"]["settings"]["cls_thresh"]
        return [bool(label == "180" and score > thresh) for label, score in labels]

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """Readings ``(text, confidence)`` of crops, in batches of crops of one padded width.

        The recogniser reads a crop resized to height 48 and zero-padded on the right to its batch's
        width. rapidocr pads each batch to its widest crop, so a reading would depend on the crops
        batched with it; here every crop is padded to its own width rounded up to a multiple of
        ``WIDTH_STEP`` px (at least 320, PP-OCR's ``rec_img_shape``) and batched with crops of that
        same width only, so equal crops read alike in any batch, whichever VAE or image they come with.
        """
        if not crops:
            return []
        self.calls["recognise"] += 1
        rec = self.engine.text_rec
        _, height, min_width = rec.rec_image_shape
        widths = [max(min_width, WIDTH_STEP * math.ceil(height * c.shape[1] / c.shape[0] / WIDTH_STEP)) for c in crops]
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for width in sorted(set(widths)):
            same = [i for i, w in enumerate(widths) if w == width]
            for start in range(0, len(same), REC_BATCH):
                chunk = same[start : start + REC_BATCH]
                batch = np.stack([rec.resize_norm_img(crops[i], width / height) for i in chunk]).astype(np.float32)
                for i, (text, score, *_) in zip(chunk, rec.postprocess_op(rec.session(batch)[0])):
                    out[i] = (str(text), float(score))
        return out

    def original(self, rgb: np.ndarray, truth: list[Region] | None) -> dict:
        """An original's lines, orientation and readings: computed once, then from memory or the cache."""
        key = region_key(self._identity, pixels_sha256(rgb), None if truth is None else [r.to_dict() for r in truth])
        entry = self.cache.get(key)
        if entry is not None:
            return entry
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        regions = self.detect(bgr) if truth is None else list(truth)
        crops = self.crops(bgr, regions)
        upside_down = self.orient(crops)
        readings = self.recognise([turned(c) if t else c for c, t in zip(crops, upside_down)])
        keep = [truth is not None or (score >= self.text_score and normalise(text) != "") for text, score in readings]
        entry = {
            "regions": [r.to_dict() for r, k in zip(regions, keep) if k],
            "turned": [t for t, k in zip(upside_down, keep) if k],
            "texts": [r[0] for r, k in zip(readings, keep) if k],
        }
        self.cache.put(key, entry)
        return entry

    def score_regions(self, original, reconstruction, truth) -> list[list[dict]]:
        originals, recons = to_hwc_u8(original), to_hwc_u8(reconstruction)
        entries = [self.original(o, t) for o, t in zip(originals, truth)]
        crops = []
        for rec, entry in zip(recons, entries):
            regions = [Region.from_dict(r) for r in entry["regions"]]
            bgr = np.ascontiguousarray(rec[..., ::-1])
            crops += [turned(c) if t else c for c, t in zip(self.crops(bgr, regions), entry["turned"])]
        readings = iter(self.recognise(crops))  # every line of the batch in one call
        records: list[list[dict]] = []
        for entry in entries:
            image = []
            for region, text in zip(entry["regions"], entry["texts"]):
                got = next(readings)[0]
                a, b = normalise(text), normalise(got)
                t = region.get("truth")
                image.append(
                    {
                        "size_px": float(region["size_px"]),
                        "text_ned": ned(b, a),
                        "text_acc": float(a == b),
                        "text_t_ned": math.nan if t is None else ned(b, normalise(t)),
                        "text_t_acc": math.nan if t is None else float(normalise(t) == b),
                        "truth": t,
                        "original_text": text,
                        "recon_text": got,
                        "box": region["box"],
                    }
                )
            records.append(image)
        return records
