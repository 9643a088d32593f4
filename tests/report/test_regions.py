"""The report's region results: text fidelity by text height, the worst text regions side by side, from files only.

One small run (the text chart at 64 px, 4 pages, an exact and a blurring stand-in VAE, real PP-OCRv4)
is shared by the file's tests.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evalvae.errors import ConfigError
from evalvae.report.build import write_report
from evalvae.report.load import load_inputs
from evalvae.report.regions import by_size
from evalvae.report.sections import group_sections
from evalvae.run import run
from tests.helpers import compose_run
from tests.prerequisites import require_module

require_module("rapidocr_onnxruntime", 'pip install "evalvae[regions]"')

PAGES = 4


def overrides(tmp_path, *extra) -> list[str]:
    return [
        "dataset=textchart",
        "dataset.resolution=64",
        f"dataset.limit={PAGES}",
        "device=cpu",
        "workers=0",
        "batch_size=2",
        f"cache_dir={tmp_path / 'cache'}",
        f"samples.worst={PAGES}",  # every page saved: the worst regions are searched on all of them
        "samples.best=0",
        "+vae.exact._target_=tests.run_standins.Identity",
        "+vae.blur._target_=tests.metrics.test_text.Blur",
        "+vae.blur.sigma=2.0",
        *extra,
    ]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("regions")
    out = run(compose_run(overrides(tmp, "metrics=text")), out_dir=tmp / "run").out_dir
    shutil.rmtree(tmp / "cache")  # the report reads result files only: no cache, no weights, no dataset
    return out


def test_the_report_shows_text_fidelity_by_height_and_the_worst_regions(text_run, tmp_path):
    html = write_report([text_run], tmp_path / "report").read_text(encoding="utf-8")
    assert "Text and face fidelity by region size" in html
    assert "Text fidelity by text height" in html and "Worst text regions" in html
    assert "Face identity by face size" not in html  # no face metric in this run
    plots = tmp_path / "report" / "plots"
    curve, grid = next(plots.glob("*-text-by-size.png")), next(plots.glob("*-text-worst.png"))
    for png in (curve, grid):
        assert png.stat().st_size > 2000
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert f"plots/{curve.name}" in md and f"plots/{grid.name}" in md
    w, h = Image.open(grid).size
    assert h > 3 * 100 and w > 3 * 150  # rows of regions, original plus both VAEs


def test_the_curves_follow_the_bins_small_to_large(text_run):
    section = group_sections(load_inputs([text_run]).runs)[0]
    table = by_size(section)
    ned = table[table["metric"] == "text_ned"]
    assert set(ned["entry"]) == {"exact", "blur"}
    exact = ned[ned["entry"] == "exact"]
    assert (exact["mean"] == 0).all()  # an exact reconstruction reads every line alike
    blur = ned[ned["entry"] == "blur"].set_index("bin")["mean"]
    assert blur.iloc[0] > blur.iloc[-1]  # the blur fails small text first
    written = pd.read_csv(text_run / "summary_by_region_size.csv")
    assert list(dict.fromkeys(ned["bin"])) == list(dict.fromkeys(written["bin"]))


def test_the_worst_regions_are_cropped_from_the_saved_samples(text_run):
    from evalvae.report.regions import _crop

    regions = pd.read_parquet(text_run / "per_region.parquet")
    index = json.loads((text_run / "samples" / "index.json").read_text(encoding="utf-8"))
    assert set(regions["image"].astype(str)) <= set(index["images"])  # every page with text was saved
    row = regions[regions["vae"] == "blur"].sort_values("text_ned").iloc[-1]
    entry = index["images"][str(row["image"])]["vaes"]["blur"]
    original = np.array(Image.open(text_run / "samples" / entry["original"]).convert("RGB"))
    crop = _crop(original, row["box"])
    ys = np.asarray(row["box"], dtype=float)[1::2]
    k = crop.shape[0] // (min(original.shape[0], int(np.ceil(ys.max())) + 2) - max(0, int(np.floor(ys.min())) - 2))
    assert k >= 1 and crop.shape[0] % k == 0
    assert (crop[::k, ::k].repeat(k, 0).repeat(k, 1) == crop).all()  # enlarged by pixel repetition only


def test_a_sweep_of_runs_reports_every_vae_by_size(text_run, tmp_path):
    common = [o for o in overrides(tmp_path, "metrics=text") if not o.startswith("+vae.")]
    soft = ["+vae.soft._target_=tests.metrics.test_text.Blur", "+vae.soft.sigma=1.0"]
    other = run(compose_run([*common, *soft]), out_dir=tmp_path / "other").out_dir
    sections = group_sections(load_inputs([text_run, other]).runs)
    assert len(sections) == 1
    entries = set(by_size(sections[0])["entry"])
    assert len(entries) == 3 and any("soft" in e for e in entries)
    html = write_report([text_run, other], tmp_path / "report").read_text(encoding="utf-8")
    assert "Worst text regions" in html


def test_t2i_refuses_a_region_metric_before_building_it():
    from evalvae.t2i.metrics import reject_region_metrics

    cfg = compose_run(["metrics=text"])
    with pytest.raises(ConfigError, match=r"metrics\.text.*TextFidelity.*task=recon"):
        reject_region_metrics(cfg.metrics)
    reject_region_metrics(compose_run(["metrics=default"]).metrics)  # no region metric: nothing to refuse


def test_the_report_shows_face_identity_by_size_and_the_worst_faces(assets, tmp_path):
    """Kodak's two portraits and a landscape at 128 px, an exact and a blurring stand-in VAE, dlib's real models."""
    require_module("dlib", 'pip install "evalvae[regions]"')
    from tests.metrics.test_faces import squares

    folder = tmp_path / "images"
    folder.mkdir()
    for name, image in zip(("kodim04", "kodim15", "kodim01"), squares(assets)):
        Image.fromarray(image).save(folder / f"{name}.png")
    chart = [o for o in overrides(tmp_path) if not o.startswith("dataset.")]
    faces = [o.replace("textchart", "folder") for o in chart] + [
        f"dataset.path={folder}",
        "dataset.resolution=128",
        "metrics=faces",
    ]
    out = run(compose_run(faces), out_dir=tmp_path / "run").out_dir
    shutil.rmtree(tmp_path / "cache")
    shutil.rmtree(folder)  # the report needs neither the dataset nor the cache
    html = write_report([out], tmp_path / "report").read_text(encoding="utf-8")
    assert "Face identity by face size" in html and "Worst faces" in html
    assert "Text fidelity by text height" not in html
    table = by_size(group_sections(load_inputs([out]).runs)[0])
    sim = table[table["metric"] == "face_sim"].groupby("entry")["mean"].mean()
    assert sim["exact"] == pytest.approx(1.0, abs=1e-6) and sim["blur"] < sim["exact"]
    assert next((tmp_path / "report" / "plots").glob("*-faces-worst.png")).stat().st_size > 2000
