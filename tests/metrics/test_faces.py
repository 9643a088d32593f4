"""Face identity fidelity (evalvae.metrics.faces): dlib's detector, landmarks and descriptors on Kodak."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFilter

from evalvae.config import compose
from evalvae.errors import ConfigError
from evalvae.io import sha256_file
from evalvae.metrics import Unavailable, build_metrics, faces, result_columns
from evalvae.metrics.info import METRICS
from evalvae.metrics.regions import REGIONS, SizeBins
from evalvae.metrics.weights import MetricUnavailable
from evalvae.run import run
from tests.helpers import compose_run
from tests.prerequisites import missing, require_module

FACES = ("kodim04", "kodim15")  # Kodak's two portraits; at the native 768x512 both faces are whole


@pytest.fixture(scope="module")
def models() -> faces.FaceModels:
    """dlib's models; skipped where the regions extra is not installed, except under CI=true, which installs it."""
    try:
        return faces.FaceModels()
    except MetricUnavailable as e:
        missing(str(e))


@pytest.fixture(scope="module")
def direct(models) -> SimpleNamespace:
    """dlib's detector, landmark model and network built here, independently of evalvae's loading."""
    import dlib

    root = faces.package_models_dir()
    return SimpleNamespace(
        detector=dlib.get_frontal_face_detector(),
        predictor=dlib.shape_predictor(str(root / faces.LANDMARKS)),
        net=dlib.face_recognition_model_v1(str(root / faces.EMBEDDING)),
    )


def kodak(assets, name: str) -> np.ndarray:
    return np.asarray(Image.open(assets / "images" / "kodak" / f"{name}.png").convert("RGB"))


@pytest.mark.parametrize("name", FACES)
def test_the_faces_found_equal_a_direct_dlib_call(models, direct, assets, name):
    image = kodak(assets, name)
    found = models.detect(image)
    rects = direct.detector(image, 1)
    assert len(found) == len(rects) >= 1
    assert [f.box for f in found] == [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
    for face, rect in zip(found, rects):
        assert face.landmarks == tuple((p.x, p.y) for p in direct.predictor(image, rect).parts())
        assert face.size_px == max(rect.width(), rect.height())
        assert faces.Face.from_dict(face.to_dict()) == face


def test_a_strided_view_is_read_as_its_pixels(models, assets):
    """dlib reads a numpy buffer as if it were C-contiguous (a column slice is then garbage, found or not by chance)."""
    view = kodak(assets, "kodim15")[:, 256:]
    assert not view.flags["C_CONTIGUOUS"]
    found = models.detect(np.ascontiguousarray(view))
    assert len(found) == 1
    for _ in range(3):
        assert models.detect(view) == found
    np.testing.assert_array_equal(models.chips(view, found)[0], models.chips(np.ascontiguousarray(view), found)[0])


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
    require_module("dlib", 'pip install "evalvae[regions]"')
    for name in (faces.LANDMARKS, faces.EMBEDDING):
        (tmp_path / name).write_bytes(b"not a dlib model")
    with pytest.raises(MetricUnavailable, match="dlib cannot read its model files"):
        faces.FaceModels(models=tmp_path)


def test_face_recognition_models_is_never_imported(models):
    assert faces.PACKAGE not in sys.modules or sys.modules[faces.PACKAGE] is None


# -- the metric ----------------------------------------------------------------------------------
def squares(assets) -> list[np.ndarray]:
    """256x256 (512² crops halved) holding Kodak's two portrait faces whole, and a landscape without a face (kodim01)."""
    crops = kodak(assets, "kodim04")[128:640], kodak(assets, "kodim15")[:, 256:], kodak(assets, "kodim01")[:, :512]
    return [np.asarray(Image.fromarray(a).resize((256, 256), Image.BICUBIC)) for a in crops]


def blur(images: list[np.ndarray], radius: float = 4) -> list[np.ndarray]:
    return [np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(radius))) for a in images]


def pixels(images: list[np.ndarray]) -> torch.Tensor:
    """HWC uint8 arrays -> the metric input, ``(N, 3, H, W)`` float64 in [0, 255]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).double()


@pytest.fixture(scope="module")
def fidelity(models, tmp_path_factory) -> faces.FaceFidelity:
    return faces.FaceFidelity(cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_blur_scores_less_and_an_image_without_faces_is_counted_not_averaged(fidelity, direct, assets):
    images = squares(assets)
    same = fidelity(pixels(images), pixels(images))  # the perfect score: tests/metrics/test_contract.py
    counts = [len(direct.detector(a, 1)) for a in images]
    assert counts[:2] == [1, 1] and counts[2] == 0
    assert same["face_regions"].tolist() == counts
    assert same["face_sim"][2].isnan() and same["face_below"][2].isnan()  # no face: NaN, not 0 or 1
    assert [len(r) for r in same[REGIONS]] == counts

    blurred = fidelity(pixels(images), pixels(blur(images)))
    assert (blurred["face_sim"][:2] < 1 - 1e-3).all()
    assert blurred["face_sim"][2].isnan() and blurred["face_regions"].tolist() == counts
    # an image's value is the mean over its faces only: the set's mean over images with faces
    records = [r for image in blurred[REGIONS] for r in image]
    assert [r["metric"] for r in records] == ["faces", "faces"]
    np.testing.assert_allclose(np.nanmean(blurred["face_sim"].numpy()), np.mean([r["face_sim"] for r in records]))


def test_distances_equal_dlib_aligning_and_embedding_each_face_itself(fidelity, direct, assets):
    """dlib's own path (compute_face_descriptor(image, shape): its alignment, one face a call) gives the same numbers."""
    images = squares(assets)[:2]
    blurred = blur(images)
    out = fidelity(pixels(images), pixels(blurred))
    detector, predictor, net = direct.detector, direct.predictor, direct.net
    for image, rec, records in zip(images, blurred, out[REGIONS]):
        shapes = [predictor(image, r) for r in detector(image, 1)]
        descriptors = [(net.compute_face_descriptor(image, s), net.compute_face_descriptor(rec, s)) for s in shapes]
        expected = [np.linalg.norm(np.array(a) - np.array(b)) for a, b in descriptors]
        np.testing.assert_allclose([r["face_distance"] for r in records], expected, atol=1e-6)


def test_face_below_is_the_share_of_faces_at_or_past_the_distance_threshold(models, assets):
    images = squares(assets)[:2]
    blurred = blur(images)
    base = faces.FaceFidelity(cache=False)(pixels(images), pixels(blurred))
    distances = sorted(r["face_distance"] for image in base[REGIONS] for r in image)
    assert 0 < distances[0] < distances[1] < faces.SAME_PERSON_DISTANCE  # a mild blur keeps both identities
    between = faces.FaceFidelity(threshold=(distances[0] + distances[1]) / 2, cache=False)
    out = between(pixels(images), pixels(blurred))
    for value, records in zip(out["face_below"].tolist(), out[REGIONS]):
        assert value == np.mean([r["face_distance"] >= between.threshold for r in records])
    assert sorted(out["face_below"].tolist()) == [0.0, 1.0]
    strict = faces.FaceFidelity(threshold=distances[0], cache=False)
    assert strict(pixels(images), pixels(blurred))["face_below"].tolist() == [1.0, 1.0]


def test_the_originals_are_detected_and_embedded_once(models, assets, tmp_path):
    images = squares(assets)
    first = faces.FaceFidelity(cache_dir=str(tmp_path))
    a = first(pixels(images), pixels(blur(images)))
    b = first(pixels(images), pixels(blur(images, 2)))  # a second VAE: only its reconstructions are embedded
    assert first.calls == {"detect": 3, "embed": 3, "faces_embedded": 6}
    again = faces.FaceFidelity(cache_dir=str(tmp_path))  # a later run reads the originals' entries from disk
    c = again(pixels(images), pixels(blur(images)))
    assert again.calls == {"detect": 0, "embed": 1, "faces_embedded": 2}
    np.testing.assert_array_equal(c["face_sim"].numpy(), a["face_sim"].numpy())
    assert (b["face_sim"][:2] > a["face_sim"][:2]).all()  # the milder blur keeps more of the identity
    assert len(list((tmp_path / "refstats" / "regions" / "faces").rglob("*.safetensors"))) == 3
    uncached = faces.FaceFidelity(cache_dir=str(tmp_path / "other"), cache=False)
    uncached(pixels(images), pixels(images))
    assert uncached.calls["detect"] == 3 and not (tmp_path / "other").exists()


def test_a_damaged_region_entry_is_deleted_and_recomputed(tmp_path):
    from evalvae.metrics.regioncache import RegionCache

    key, entry = "ab" * 32, {"boxes": [[1, 2, 3, 4]]}
    RegionCache("faces", str(tmp_path)).put(key, entry)
    assert RegionCache("faces", str(tmp_path)).get(key) == entry
    (path,) = (tmp_path / "refstats" / "regions" / "faces").rglob("*.safetensors")
    path.write_bytes(path.read_bytes().replace(b"[1, 2", b"[7, 2"))  # the same size, another box
    assert RegionCache("faces", str(tmp_path)).get(key) is None and not path.exists()


def test_faces_are_binned_by_box_side_with_each_edge_in_the_bin_above(fidelity, assets):
    bins = fidelity.bins
    assert bins.edges == faces.SIZE_EDGES == (32, 64, 128)
    sizes = {31.9: "<32", 32: "32–64", 63.9: "32–64", 64: "64–128", 127.9: "64–128", 128: "≥128", 400: "≥128"}
    assert {s: bins.bin_of(s) for s in sizes} == sizes
    # Kodak's portrait at 128 px high: a face of about 53 px, in the 32–64 bin
    small = np.asarray(Image.fromarray(kodak(assets, "kodim04")).resize((85, 128), Image.BICUBIC))
    (record,) = fidelity(pixels([small]), pixels([small]))[REGIONS][0]
    assert 32 <= record["size_px"] < 64 and record["bin"] == "32–64"
    left, top, right, bottom = record["box"][0], record["box"][1], record["box"][4], record["box"][5]
    assert right - left == bottom - top == record["size_px"]


def test_the_protocol_names_the_models_their_hashes_bins_and_threshold(fidelity):
    p = fidelity.protocol()
    for key, name in (("landmarks", faces.LANDMARKS), ("embedding", faces.EMBEDDING)):
        assert p[key] == {"file": name, "sha256": sha256_file(faces.package_models_dir() / name)}
    assert p["upsample"] == 1 and p["bins"]["edges_px"] == [32.0, 64.0, 128.0]
    assert p["threshold"]["distance"] == 0.6 and "0.6" in p["threshold"]["source"]
    assert p["provenance"]["dlib"] and "landmarks" in p["provenance"]


def test_metrics_faces_is_unavailable_without_dlib_with_the_install_command(monkeypatch):
    cfg = compose(["+vae=taesd", "metrics=faces"])
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError
    with pytest.raises(MetricUnavailable, match=r'dlib.*pip install "evalvae\[regions\]"'):
        faces.FaceModels()
    (metric,) = [m for m in build_metrics(cfg.metrics) if isinstance(m, Unavailable)]
    assert result_columns(metric) == ["face_sim", "face_below"]  # summarised; face_regions is a per-image fact
    assert metric.reason.endswith('pip install "evalvae[regions]"') and "\n" not in metric.reason
    assert metric.infos == METRICS["faces"].infos  # compare and report know them without dlib
    assert [i.higher_is_better for i in metric.infos] == [True, False, None]


def test_bad_settings_name_the_argument():
    with pytest.raises(ConfigError, match=r"metrics.faces.upsample=3; choose one of 0, 1, 2"):
        faces.FaceModels(upsample=3)
    with pytest.raises(ConfigError, match=r"metrics.faces.threshold=0"):
        faces.FaceFidelity(threshold=0)


@pytest.mark.slow  # a fresh interpreter
def test_importing_the_metric_loads_no_dlib():
    code = "import sys, evalvae.metrics.faces; assert 'dlib' not in sys.modules and 'face_recognition_models' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_run_with_metrics_faces_writes_faces_per_image_per_region_and_in_the_summary(models, assets, tmp_path):
    """TAEF2 on Kodak's two portraits and a landscape at 128²: the faceless image is counted, never averaged in."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name, image in zip(("kodim04", "kodim15", "kodim01"), squares(assets)):
        Image.fromarray(image).save(folder / f"{name}.png")
    overrides = ["+vae=taef2", f"vae.taef2.source={assets / 'weights' / 'taef2'}", "dataset=folder"]
    overrides += [f"dataset.path={folder}", "dataset.resolution=128", "metrics=faces", "workers=0", "progress=false"]
    out = run(compose_run(overrides), out_dir=tmp_path / "out").out_dir
    rows = pd.read_csv(out / "per_image.csv").set_index("image")
    assert rows.face_regions.to_dict() == {"kodim01.png": 0, "kodim04.png": 1, "kodim15.png": 1}
    assert rows.loc["kodim01.png", ["face_sim", "face_below"]].isna().all()
    faces_sim = rows.face_sim.dropna()
    assert len(faces_sim) == 2 and (faces_sim > 0.9).all() and (faces_sim < 1).all()  # a real VAE keeps the identity
    summary = pd.read_csv(out / "summary.csv").set_index("metric")
    assert summary.loc["face_sim", "n"] == 2
    assert summary.loc["face_sim", "mean"] == pytest.approx(faces_sim.mean(), abs=1e-12)
    regions = pd.read_parquet(out / "per_region.parquet")
    assert sorted(regions.image) == ["kodim04.png", "kodim15.png"] and set(regions.metric) == {"faces"}
    assert (regions.bin == [SizeBins(faces.SIZE_EDGES).bin_of(s) for s in regions.size_px]).all()
    by_size = pd.read_csv(out / "summary_by_region_size.csv")
    assert set(by_size.metric) == {"face_sim", "face_below"} and by_size[by_size.metric == "face_sim"].n.sum() == 2
    protocol = json.loads((out / "metrics.json").read_text())["metrics"]["face_sim"]
    assert protocol["embedding"]["sha256"] == sha256_file(faces.package_models_dir() / faces.EMBEDDING)
