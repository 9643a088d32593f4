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
distance is below 0.6 (99.38% on LFW; dlib's ``dnn_face_recognition_ex.cpp`` and
``face_recognition.py`` example). The descriptors are not unit vectors (norms about 1.4 to 1.6
on Kodak's faces), so no cosine is equivalent to that distance; the threshold is applied to the
distance itself, as calibrated, and a face counts as below it (its identity lost) when
``||d_original - d_reconstruction|| >= 0.6``.

Only the model files are read: ``face_recognition_models`` itself is never imported (it imports
``pkg_resources``, which setuptools >= 81 no longer ships), and dlib is imported when the metric
is built, so a run without it loads neither.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evalvae.errors import ConfigError
from evalvae.io import sha256_file
from evalvae.metrics.weights import MetricUnavailable

INSTALL = 'pip install "evalvae[regions]"'
PACKAGE = "face_recognition_models"
LANDMARKS = "shape_predictor_5_face_landmarks.dat"
EMBEDDING = "dlib_face_recognition_resnet_model_v1.dat"
SAME_PERSON_DISTANCE = 0.6  # dlib's documented threshold on the Euclidean distance of two descriptors
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's defaults for compute_face_descriptor's own alignment
# Face size bins by the detection box's side in pixels at the evaluated resolution: <32, 32-64,
# 64-128, >=128 (an edge belongs to the bin above it). Octaves, as the text bins. 128 is where the
# 150-px chip (the face spans about 100 px of it with padding 0.25) stops enlarging the face: from
# there on the descriptor sees the face at or below its own resolution. <32 is below the HOG
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


def to_hwc_uint8(images) -> list[np.ndarray]:
    """``(N, 3, H, W)`` pixels in [0, 255] (a tensor, any device) -> N contiguous ``(H, W, 3)`` uint8 arrays, rounded."""
    x = images.detach().double().round().clamp(0, 255).to("cpu").numpy().astype(np.uint8)
    return [np.ascontiguousarray(a.transpose(1, 2, 0)) for a in x]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, d)`` arrays, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


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
        try:
            self.detector = self.dlib.get_frontal_face_detector()
            self.landmarker = self.dlib.shape_predictor(str(self.files["landmarks"]))
            self.embedder = self.dlib.face_recognition_model_v1(str(self.files["embedding"]))
        except RuntimeError as e:  # dlib's deserialization error on a damaged file
            raise MetricUnavailable(f"face fidelity: dlib cannot read its model files ({e}); {INSTALL}") from None
        self.sha256 = {k: sha256_file(p) for k, p in self.files.items()}

    def detect(self, image: np.ndarray) -> list[Face]:
        """The faces of one ``(H, W, 3)`` uint8 original, with their landmarks, in the detector's order."""
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
