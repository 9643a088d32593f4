"""Face identity fidelity: does a face keep its identity through the VAE?

dlib's models, as ``face_recognition_models`` ships them (dlib-bin provides dlib itself):

1. dlib's HOG frontal face detector finds the faces of the **original** (8-bit RGB), upsampled
   ``upsample`` times first (each doubling halves the smallest face it finds: about 70 px
   without, about 37 px with one, on Kodak).
2. The 5-point landmark model (``shape_predictor_5_face_landmarks.dat``) places each face's
   eye corners and nose on the original.
3. The original and the reconstruction are both aligned with the **original's** landmarks
   (``dlib.get_face_chips``: 150x150 chips, padding 0.25, dlib's defaults for its face
   descriptor), so the reconstruction is judged on the same geometry.
4. dlib's ResNet (``dlib_face_recognition_resnet_model_v1.dat``) embeds every chip into a 128-D
   descriptor, a list of chips at a time; a face's similarity is the cosine of its two
   descriptors, 1 for an unchanged face.

Identity threshold: dlib documents its descriptors as "same person" when their Euclidean
distance is below 0.6, the threshold at which the model scores 99.38% on LFW (dlib's
``python_examples/face_recognition.py`` and ``examples/dnn_face_recognition_ex.cpp``). The descriptors are not unit vectors (norms about 1.4 to 1.6
on Kodak's faces), so no cosine is equivalent to that distance; the threshold is applied to the
distance itself, as calibrated, and a face counts as below it (its identity lost) when
``||d_original - d_reconstruction|| >= 0.6``.

Only the model files are read: ``face_recognition_models`` itself is never imported (it imports
``pkg_resources``, which setuptools >= 81 no longer ships), and dlib is imported when the metric
is built, so a run without it loads neither.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evalvae.errors import ConfigError
from evalvae.io import sha256_file
from evalvae.metrics import info as shipped
from evalvae.metrics.regioncache import RegionCache, pixels_sha256, region_key
from evalvae.metrics.regions import RegionMetric, SizeBins, to_hwc_u8
from evalvae.metrics.weights import MetricUnavailable
from evalvae.vocab import Region

INSTALL = 'pip install "evalvae[regions]"'
PACKAGE = "face_recognition_models"
LANDMARKS = "shape_predictor_5_face_landmarks.dat"
EMBEDDING = "dlib_face_recognition_resnet_model_v1.dat"
SAME_PERSON_DISTANCE = 0.6  # dlib's documented threshold on the Euclidean distance of two descriptors
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's defaults for compute_face_descriptor's own alignment
# Face size bins by the detection box's side in pixels at the evaluated resolution: <32, 32-64,
# 64-128, >=128 (an edge belongs to the bin above it). Octaves, as the text bins. 128 is where the
# 150-px chip stops enlarging the face (the detection box spans about 130 px of it with padding
# 0.25, measured on Kodak): from there on the descriptor sees the face at or below its own resolution. <32 is below the HOG
# detector's reach at upsample=1 and fills only with upsample=2, whose small detections on Kodak
# are mostly false (hands and textures at 512²).
SIZE_EDGES = (32, 64, 128)


def import_dlib():
    """The ``dlib`` module, or :class:`MetricUnavailable` naming the install command."""
    try:
        return importlib.import_module("dlib")
    except ImportError as e:
        raise MetricUnavailable(f"face fidelity needs dlib ({e}); {INSTALL}") from None


def package_models_dir() -> Path | None:
    """``face_recognition_models``' ``models/`` folder, found without importing the package; None if it is not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def model_files(models: str | Path | None = None) -> dict[str, Path]:
    """The landmark and embedding model files in ``models`` (default: ``face_recognition_models``' own folder).

    Raises :class:`MetricUnavailable` saying what is missing where, with the install command.
    """
    if models is None:
        folder = package_models_dir()
        if folder is None:
            raise MetricUnavailable(f"face fidelity needs {PACKAGE} (dlib's face models), not installed; {INSTALL}")
        where = f"{PACKAGE}'s folder {folder}"
    else:
        folder, where = Path(models).expanduser(), f"metrics.faces.models={models}"
    files = {"landmarks": folder / LANDMARKS, "embedding": folder / EMBEDDING}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise MetricUnavailable(f"face fidelity: {', '.join(missing)} not found in {where}; {INSTALL}")
    return files


@dataclass(frozen=True)
class Face:
    """One face found on an original: its detection box and its 5 landmarks, in pixels.

    ``box`` is dlib's rectangle ``(left, top, right, bottom)``, inclusive, and may reach past the
    image's border; ``landmarks`` are the 5 ``(x, y)`` points of the landmark model.
    """

    box: tuple[int, int, int, int]
    landmarks: tuple[tuple[int, int], ...]
    score: float = math.nan

    @property
    def size_px(self) -> int:
        """The box's side (dlib's HOG boxes are square; the larger side where rounding differs)."""
        left, top, right, bottom = self.box
        return max(right - left + 1, bottom - top + 1)

    def to_dict(self) -> dict:
        return {"box": list(self.box), "landmarks": [list(p) for p in self.landmarks], "score": self.score}

    @classmethod
    def from_dict(cls, data: dict) -> Face:
        return cls(tuple(data["box"]), tuple(tuple(p) for p in data["landmarks"]), float(data.get("score", math.nan)))


@functools.lru_cache(maxsize=4)
def _load(dlib, stamps: tuple[tuple[str, int, int], ...]):
    """dlib's detector (half a second to build), landmark model and network, and the files' sha256, once per process.

    ``stamps`` are the landmark and embedding files' path, size and mtime: a file changed on disk is read again.
    """
    (landmarks, *_), (embedding, *_) = stamps
    models = (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(landmarks),
        dlib.face_recognition_model_v1(embedding),
    )
    return (*models, (sha256_file(landmarks), sha256_file(embedding)))


class FaceModels:
    """dlib's detector, landmark model and descriptor network, loaded once.

    Args:
        upsample: times the original is upsampled (x2 each) before detection; 0 to 2.
        models: a folder holding the two model files; None for ``face_recognition_models``' own.
    """

    def __init__(self, upsample: int = 1, models: str | Path | None = None):
        if isinstance(upsample, bool) or not isinstance(upsample, int) or not 0 <= upsample <= 2:
            raise ConfigError("metrics.faces.upsample", upsample, (0, 1, 2))
        self.upsample = upsample
        self.files = model_files(models)
        self.dlib = import_dlib()
        stamps = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files.values())
        try:
            self.detector, self.landmarker, self.embedder, sha256 = _load(self.dlib, stamps)
        except RuntimeError as e:  # dlib's deserialization error on a damaged file
            raise MetricUnavailable(f"face fidelity: dlib cannot read its model files ({e}); {INSTALL}") from None
        self.sha256 = dict(zip(self.files, sha256))

    def detect(self, image: np.ndarray) -> list[Face]:
        """The faces of one ``(H, W, 3)`` uint8 original, with their landmarks, in the detector's order."""
        image = np.ascontiguousarray(image)  # dlib reads an array's buffer as if it were C-contiguous
        rects, scores, _ = self.detector.run(image, self.upsample, 0.0)
        faces = []
        for rect, s in zip(rects, scores):
            shape = self.landmarker(image, rect)
            box = (rect.left(), rect.top(), rect.right(), rect.bottom())
            faces.append(Face(box, tuple((p.x, p.y) for p in shape.parts()), float(s)))
        return faces

    def _detections(self, faces: list[Face]):
        out = self.dlib.full_object_detections()
        for f in faces:
            rect = self.dlib.rectangle(*f.box)
            out.append(self.dlib.full_object_detection(rect, [self.dlib.point(x, y) for x, y in f.landmarks]))
        return out

    def chips(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        """The aligned ``CHIP_SIZE``² chips of ``faces`` (found on the original) cut from ``image``, original or not."""
        if not faces:
            return []
        image = np.ascontiguousarray(image)
        return list(self.dlib.get_face_chips(image, self._detections(faces), size=CHIP_SIZE, padding=CHIP_PADDING))

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        """``(n, 128)`` float64 descriptors of aligned chips, computed as one batch (no jitter)."""
        if not chips:
            return np.zeros((0, 128))
        return np.array([list(d) for d in self.embedder.compute_face_descriptor(chips, 0)], dtype=np.float64)

    def describe(self) -> dict:
        """The models and detection settings (protocol)."""
        return {
            "detector": "dlib get_frontal_face_detector (HOG), on the original",
            "upsample": self.upsample,
            "landmarks": {"file": LANDMARKS, "sha256": self.sha256["landmarks"]},
            "embedding": {"file": EMBEDDING, "sha256": self.sha256["embedding"]},
            "alignment": f"dlib.get_face_chips with the original's landmarks on both images, {CHIP_SIZE}px, padding {CHIP_PADDING}",
        }

    def provenance(self) -> dict:
        """Where the models were read from and the dlib that ran them (recorded, not protocol)."""
        return {"dlib": getattr(self.dlib, "__version__", "unknown"), **{k: str(p) for k, p in self.files.items()}}


class FaceFidelity(RegionMetric):
    """Face identity fidelity (dlib: HOG detector, 5-point landmarks, ResNet descriptors), binned by face size.

    Per image: ``face_sim``, the mean over its faces of the cosine similarity of the original's and
    the reconstruction's descriptors (both aligned with the original's landmarks); ``face_below``,
    the share of its faces whose descriptors are ``threshold`` or more apart (dlib's "not the same
    person"); ``face_regions``, how many faces it has. An image without faces has NaN for both and
    0 faces: counted, never averaged in.

    Args:
        bins: edges of the face-size bins in px, by the detection box's side (:data:`SIZE_EDGES`).
        threshold: the Euclidean descriptor distance from which a face counts as another person (dlib: 0.6).
        upsample: times the original is upsampled before detection (smallest face: ~70 px at 0, ~37 px at 1).
        models: a folder with the two model files; null for ``face_recognition_models``' own.
        cache_dir: where the originals' faces and descriptors are kept across runs (``refstats/regions/faces``).
        cache: false keeps them for the run only.
    """

    kind = "faces"
    infos = (shipped.FACE_SIM, shipped.FACE_BELOW, shipped.FACE_REGIONS)
    libraries = ("numpy",)  # dlib's own version is in identity() and the protocol (whichever package installed it)
    takes_truth = False  # no dataset gives faces; they are always detected on the original

    def __init__(
        self,
        bins=SIZE_EDGES,
        threshold: float = SAME_PERSON_DISTANCE,
        upsample: int = 1,
        models: str | None = None,
        cache_dir: str | None = None,
        cache: bool = True,
    ):
        self.bins = SizeBins(tuple(bins))
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not threshold > 0:
            raise ConfigError("metrics.faces.threshold", threshold, hint="a descriptor distance > 0 (dlib's: 0.6)")
        self.threshold = float(threshold)
        self.models = FaceModels(upsample, models)
        self.cache = RegionCache(self.kind, cache_dir, persist=cache)
        self.calls = {"detect": 0, "embed": 0, "faces_embedded": 0}  # for the speed note and the tests

    def identity(self) -> dict:
        """What an original's faces and descriptors depend on besides its pixels (their cache key)."""
        return {
            **self.models.describe(),
            "dlib": self.models.provenance()["dlib"],
            "chip": [CHIP_SIZE, CHIP_PADDING],
            "version": self.version,
        }

    def protocol(self) -> dict:
        return {
            "implementation": "dlib HOG face detector and 5-point landmarks on the original; both images aligned "
            "with the original's landmarks; dlib ResNet 128-D descriptors (face_recognition_models' files)",
            **self.models.describe(),
            "similarity": "cosine of the original's and the reconstruction's descriptors",
            "threshold": {
                "distance": self.threshold,
                "rule": "face_below: a face whose descriptors are >= this Euclidean distance apart",
                "source": "dlib's documented same-person threshold, distance < 0.6 (99.38% on LFW)",
            },
            "size": "the detection box's side in px at the evaluated resolution",
            "bins": self.bins.describe(),
            "per_image": "mean over the image's faces; NaN for an image without faces (face_regions = 0)",
            "pixels": "8-bit RGB (reconstructions rounded)",
            "provenance": self.models.provenance(),
        }

    def _embed(self, chips: list[np.ndarray]) -> np.ndarray:
        self.calls["embed"] += 1
        self.calls["faces_embedded"] += len(chips)
        return self.models.embed(chips)

    def originals(self, images: list[np.ndarray]) -> list[dict]:
        """Per original: its faces and their descriptors, computed once, then from memory or the cache."""
        keys = [region_key(self.identity(), pixels_sha256(a), None) for a in images]
        entries = [self.cache.get(k) for k in keys]
        todo = [i for i, e in enumerate(entries) if e is None]
        found = {}
        for i in todo:
            self.calls["detect"] += 1
            found[i] = self.models.detect(images[i])
        chips = [c for i in todo for c in self.models.chips(images[i], found[i])]
        descriptors = iter(self._embed(chips).tolist() if chips else [])  # every new face of the batch at once
        for i in todo:
            entries[i] = {
                "faces": [f.to_dict() for f in found[i]],
                "descriptors": [next(descriptors) for _ in found[i]],
            }
            self.cache.put(keys[i], entries[i])
        return entries

    def score_regions(self, original, reconstruction, truth=None) -> list[list[dict]]:
        originals, recons = to_hwc_u8(original), to_hwc_u8(reconstruction)
        entries = self.originals(originals)
        faces = [[Face.from_dict(f) for f in e["faces"]] for e in entries]
        chips = [c for rec, fs in zip(recons, faces) for c in self.models.chips(rec, fs)]
        got = iter(self._embed(chips) if chips else [])  # every face of the batch in one call
        records: list[list[dict]] = []
        for entry, fs in zip(entries, faces):
            image = []
            for face, ref in zip(fs, entry["descriptors"]):
                d = next(got)
                ref = np.asarray(ref, dtype=np.float64)
                distance = float(np.linalg.norm(ref - d))
                left, top, right, bottom = face.box
                image.append(
                    {
                        "size_px": float(face.size_px),
                        "face_sim": float(ref @ d / (np.linalg.norm(ref) * np.linalg.norm(d))),
                        "face_below": float(distance >= self.threshold),
                        "face_distance": distance,
                        "box": Region.rect(left, top, right + 1, bottom + 1, face.size_px).flat_box(),
                        "detector_score": face.score,
                    }
                )
            records.append(image)
        return records
