"""Face identity fidelity (evalvae.metrics.faces): dlib's detector, landmarks and descriptors on Kodak."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from evalvae.metrics import faces
from evalvae.metrics.weights import MetricUnavailable

FACES = ("kodim04", "kodim15")  # Kodak's two portraits; at the native 768x512 both faces are whole


@pytest.fixture(scope="module")
def models() -> faces.FaceModels:
    """dlib's models; skipped where the regions extra is not installed, except in CI, which installs it."""
    try:
        return faces.FaceModels()
    except MetricUnavailable as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))


def kodak(assets, name: str) -> np.ndarray:
    return np.asarray(Image.open(assets / "images" / "kodak" / f"{name}.png").convert("RGB"))


@pytest.mark.parametrize("name", FACES)
def test_the_faces_found_equal_a_direct_dlib_call(models, assets, name):
    import dlib

    image = kodak(assets, name)
    found = models.detect(image)
    direct = dlib.get_frontal_face_detector()(image, 1)
    assert len(found) == len(direct) >= 1
    assert [f.box for f in found] == [(r.left(), r.top(), r.right(), r.bottom()) for r in direct]
    predictor = dlib.shape_predictor(str(faces.package_models_dir() / faces.LANDMARKS))
    for face, rect in zip(found, direct):
        assert face.landmarks == tuple((p.x, p.y) for p in predictor(image, rect).parts())
        assert face.size_px == max(rect.width(), rect.height())
        assert faces.Face.from_dict(face.to_dict()) == face


def test_an_unchanged_face_scores_1_and_a_blurred_one_less(models, assets):
    image = kodak(assets, "kodim04")
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(4)))
    found = models.detect(image)
    d = models.embed(models.chips(image, found) + models.chips(image, found) + models.chips(blurred, found))
    n = len(found)
    assert d.shape == (3 * n, 128)
    np.testing.assert_allclose(faces.cosine(d[:n], d[n : 2 * n]), 1.0, atol=1e-6)
    assert (faces.cosine(d[:n], d[2 * n :]) < 1 - 1e-3).all()
    # the descriptors are not unit vectors, so dlib's 0.6 distance is applied to the distance itself
    assert not np.allclose(np.linalg.norm(d, axis=1), 1.0, atol=0.05)


def test_batched_descriptors_equal_one_at_a_time(models, assets):
    image = kodak(assets, "kodim15")
    chips = models.chips(image, models.detect(image))
    chips = chips + [np.ascontiguousarray(np.flip(chips[0], 1))]
    one_by_one = np.concatenate([models.embed([c]) for c in chips])
    np.testing.assert_allclose(models.embed(chips), one_by_one, atol=1e-6)


def test_unavailable_without_dlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError
    with pytest.raises(MetricUnavailable, match=r'dlib.*pip install "evalvae\[regions\]"'):
        faces.FaceModels()


def test_unavailable_without_the_model_files(monkeypatch, tmp_path):
    with pytest.raises(
        MetricUnavailable, match=rf'{faces.LANDMARKS}, {faces.EMBEDDING} not found.*pip install "evalvae\[regions\]"'
    ):
        faces.FaceModels(models=tmp_path)
    (tmp_path / faces.LANDMARKS).write_bytes(b"")
    with pytest.raises(MetricUnavailable, match=rf"{faces.EMBEDDING} not found in metrics.faces.models="):
        faces.model_files(tmp_path)
    monkeypatch.setitem(sys.modules, faces.PACKAGE, None)  # the package not installed: find_spec finds nothing
    assert faces.package_models_dir() is None
    with pytest.raises(
        MetricUnavailable, match=r'face_recognition_models.*not installed; pip install "evalvae\[regions\]"'
    ):
        faces.FaceModels()


def test_a_damaged_model_file_makes_it_unavailable(tmp_path):
    pytest.importorskip("dlib")
    for name in (faces.LANDMARKS, faces.EMBEDDING):
        (tmp_path / name).write_bytes(b"not a dlib model")
    with pytest.raises(MetricUnavailable, match="dlib cannot read its model files"):
        faces.FaceModels(models=tmp_path)


def test_face_recognition_models_is_never_imported(models):
    assert faces.PACKAGE not in sys.modules or sys.modules[faces.PACKAGE] is None
