"""The report's layout in headless Chromium: no table is cut off at common window widths."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from evalvae.report import write_report
from tests import browser
from tests.compare_helpers import base_values, bench_row, set_level_row, write_bench, write_run

pytestmark = pytest.mark.slow  # headless Chromium: python -m pytest -m slow

REPO = Path(__file__).resolve().parents[2]
VAES = ("taesd", "taesd3", "taef2")
WIDTHS = (1280, 1920)
OPS = ("encode", "decode", "roundtrip")


def set_rows(vae: str, i: int, n: int) -> list[dict]:
    """rFID and KID as a run writes them: KID with a std, rFID with a caveat."""
    return [
        set_level_row(vae, "rfid", 20.0 + 7 * i, n=n, note=f"N={n} < feature dim 2048"),
        set_level_row(vae, "kid", -0.021 + 0.001 * i, n=n, std=2.3e-16),
    ]


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory) -> Path:
    """Every kind of section with all its columns: a run with per-image, rate and set-level metrics for three
    VAEs (two of them in a bench, whose speed joins the overview), the committed latent diagnostics and
    robustness results."""
    tmp = tmp_path_factory.mktemp("layout")
    values, rows = {}, []
    for i, vae in enumerate(VAES):
        v = base_values(8, seed=i)
        values[vae] = dict(v, bpp=np.full(8, 0.5 * (i + 1)), delta_e=v["lpips"] * 40, delta_e_p95=v["lpips"] * 90)
        rows += set_rows(vae, i, 8)
    run = write_run(tmp / "run", values, extra_summary=rows)
    latents = shutil.copytree(REPO / "reports" / "latents-kodak-256", tmp / "latents-kodak-256")
    robust = tmp / "robustness-kodak"
    robust.mkdir()
    shutil.copy(REPO / "reports" / "robustness-kodak" / "robustness.csv", robust)
    bench = write_bench(
        tmp / "bench",
        [
            bench_row(v, op, 2.0 + i, resolution=256, dtype="fp32", mode="plain")
            for i, v in enumerate(VAES[:2])
            for op in OPS
        ],
    )
    html = write_report([run, latents, robust, bench], tmp / "report", grids=False)
    return html


@pytest.mark.parametrize("width", WIDTHS)
def test_no_table_is_cut_off(wide_report, width, tmp_path):
    seen = browser.probe(wide_report, browser.OVERFLOW_PROBE, width, tmp_path)
    assert seen["tables"] >= 8  # contents, overview, results, VAEs, paired, latents, robustness, bench
    assert seen["cut"] == [], f"tables wider than their box at {width} px: {seen['cut']}"
    assert seen["page"] <= seen["view"], f"the page scrolls sideways at {width} px ({seen['page']} px wide)"
