"""``evalvae report``: reports from runs made here with tiny models, and their robustness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evalvae.errors import ConfigError
from evalvae.report import NothingToReport, write_report
from evalvae.report.grids import select_images
from evalvae.report.load import load_inputs
from evalvae.report.saved import reconstruct_images
from evalvae.report.sections import group_sections
from evalvae.run import run
from tests import browser, helpers
from tests.compare_helpers import bench_row, set_level_row, write_bench


@pytest.fixture(scope="module")
def report(golden_recon, tmp_path_factory):
    """The report of the golden runs of the tiny pair at 32 and 48 px (``r32``, ``r48``)."""
    out = tmp_path_factory.mktemp("report")
    write_report([golden_recon["r32"], golden_recon["r48"]], out, worst=1)
    return out


def test_report_files_and_tables_match_the_runs(golden_recon, report):
    html = (report / "report.html").read_text(encoding="utf-8")
    md = (report / "report.md").read_text(encoding="utf-8")
    for slug in ("images-32x32", "images-48x48"):
        for plot in ("means", "per-image", "paired", "pareto"):
            assert (report / "plots" / f"{slug}-{plot}.png").stat().st_size > 5000
        assert list((report / "grids").glob(f"{slug}-*.png"))
        summary = pd.read_csv(report / "tables" / f"{slug}-summary.csv")
        per_image = pd.read_parquet(golden_recon["r32" if "32" in slug else "r48"] / "per_image.parquet")
        for r in summary.itertuples():
            values = per_image.loc[per_image["vae"] == r.entry, r.metric]
            assert r.mean == pytest.approx(values.mean(), rel=1e-12)
            assert r.std == pytest.approx(values.std(ddof=1), rel=1e-12)
            assert r.n == len(values) == 6
            assert r.ci_low <= r.mean <= r.ci_high
        for metric, block in summary.groupby("metric"):
            if metric == "bpp":  # a fact of the encoding, not a quality: never best
                assert not block["best"].any()
                continue
            best = block["mean"].idxmax()
            assert block.loc[block["best"], "entry"].tolist() == [block.loc[best, "entry"]]
        paired = pd.read_csv(report / "tables" / f"{slug}-paired.csv")
        assert set(paired["metric"]) == {"psnr", "ssim"} and len(paired) == 2
        assert (paired["n"] == 6).all()  # each pair is within one resolution: 6 images, never 12
        wide = per_image.pivot(index="image", columns="vae", values="psnr")
        row = paired[paired["metric"] == "psnr"].iloc[0]
        assert (row["a"], row["b"]) == ("taef2", "taesd")
        assert row["mean_diff"] == pytest.approx((wide["taef2"] - wide["taesd"]).mean(), rel=1e-12)
        assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
        assert row["wins"] + row["ties"] + row["losses"] == 6
    assert "images · 32×32" in html and "images · 48×48" in html
    assert "differs from the one scored" not in html  # every saved picture matched its recorded PSNR
    assert html.count('class="full grid-tile') >= 2 * 3  # original + two VAEs, in at least two grids
    assert "## images · 32×32" in md and "**Paired statistics**" in md
    assert md.count("| taef2 |") >= 2
    sections = group_sections(load_inputs([golden_recon["r32"], golden_recon["r48"]]).runs)
    assert [s.dataset["resolution"] for s in sections] == [32, 48]  # sections never mix protocols
    # no region metric in these runs: no region file, section or plot
    assert not (golden_recon["r32"] / "per_region.parquet").exists()
    assert "Text and face fidelity by region size" not in html and "Worst text regions" not in html
    assert not list((report / "plots").glob("*-by-size.png")) and "region size" not in md


def saved_images(run_dir: Path) -> list[str]:
    return sorted(json.loads((run_dir / "samples" / "index.json").read_text(encoding="utf-8"))["images"])


def test_saved_reconstructions_equal_the_scored_ones(golden_recon):
    r = load_inputs([golden_recon["r32"]]).runs[0]
    index = json.loads((golden_recon["r32"] / "samples" / "index.json").read_text(encoding="utf-8"))["images"]
    ids = saved_images(golden_recon["r32"])
    for vae in ("taef2", "taesd"):
        got, missing = reconstruct_images(r, vae, ids + ["no-such.png"])
        assert set(got) == set(ids) and missing["no-such.png"].startswith("not saved by run")
        for image, rec in got.items():
            recorded = r.per_image[(r.per_image["vae"] == vae) & (r.per_image["image"] == image)]["psnr"].item()
            assert rec.recorded_psnr == recorded
            # the scored pixels, except an image decoded again in another batch (a few flipped rounded pixels)
            tolerance = 1e-12 if index[image]["vaes"][vae]["source"] == "scored" else 5e-4
            assert rec.psnr == pytest.approx(recorded, abs=tolerance)
            assert rec.original.shape == rec.recon.shape == (32, 32, 3)
            assert rec.matches


def test_a_reconstruction_that_differs_from_the_scored_one_is_flagged(golden_recon, tmp_path):
    d = shutil.copytree(golden_recon["r32"], tmp_path / "r")
    image = saved_images(d)[0]
    per_image = pd.read_parquet(d / "per_image.parquet")
    per_image.loc[per_image["vae"] == "taesd", "psnr"] += 0.5  # as if other weights had been scored
    per_image.to_parquet(d / "per_image.parquet")
    got, _ = reconstruct_images(load_inputs([d]).runs[0], "taesd", [image])
    assert not got[image].matches
    html = write_report([d], tmp_path / "rep", images=[image], worst=0, best=0).read_text(encoding="utf-8")
    assert html.count("differs from the one scored") == 1  # taesd flagged, taef2 not


def test_worst_images_are_the_lowest_scores(golden_recon):
    section = group_sections(load_inputs([golden_recon["r32"]]).runs)[0]
    specs, notes = select_images(section, ["img00.png", "missing.png"], worst=2)
    assert specs[0].image == "img00.png" and specs[0].reasons == ["chosen"]
    assert notes and "missing.png" in notes[0]
    for vae in ("taef2", "taesd"):
        scores = section.per_image[section.per_image["entry"] == vae].set_index("image")["psnr"].sort_values()
        picked = [
            s.image for s in specs if any(r.startswith("worst PSNR") and r.endswith(f"for {vae}") for r in s.reasons)
        ]
        assert set(picked) == set(scores.index[:2])


def test_set_level_metrics_and_unavailable_values(golden_recon, tmp_path):
    d = shutil.copytree(golden_recon["r32"], tmp_path / "setlevel")
    summary = pd.read_csv(d / "summary.csv")
    extra = pd.DataFrame(
        [
            set_level_row("taef2", "rfid", 41.5, n=6),
            set_level_row("taesd", "rfid", 12.25, n=6),
            set_level_row("taef2", "kid", 0.031, n=6, std=0.004),
            set_level_row("taesd", "kid", np.nan, n=0, note="Inception weights not found"),
        ]
    )
    pd.concat([summary, extra]).to_csv(d / "summary.csv", index=False)
    per_image = pd.read_parquet(d / "per_image.parquet")
    per_image.loc[per_image["vae"] == "taesd", "ssim"] = np.nan  # e.g. a metric whose weights were unavailable
    per_image.to_parquet(d / "per_image.parquet")
    out = write_report([d], tmp_path / "rep", grids=False)
    table = pd.read_csv(tmp_path / "rep" / "tables" / "images-32x32-summary.csv").set_index(["entry", "metric"])
    assert table.loc[("taesd", "rfid"), "best"] and not table.loc[("taef2", "rfid"), "best"]  # lower is better
    assert table.loc[("taef2", "rfid"), "level"] == "set" and table.loc[("taef2", "rfid"), "n"] == 6
    assert table.loc[("taesd", "kid"), "status"] == "unavailable"
    assert table.loc[("taesd", "ssim"), "status"] == "unavailable"
    assert not table.loc[("taef2", "ssim"), "best"]  # nothing to beat
    paired = pd.read_csv(tmp_path / "rep" / "tables" / "images-32x32-paired.csv")
    assert paired["metric"].tolist() == ["psnr"]
    html = out.read_text(encoding="utf-8")
    assert "N = 6" in html and "rFID ↓" in html and "unavailable" in html
    assert "KID unavailable for taesd: Inception weights not found" in html
    assert "Image grids." not in html[html.index('<footer id="methods">') :]  # no grids, nothing to explain
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "**12.25" in md  # best rFID in bold


def test_metric_missing_from_one_of_two_runs_with_the_same_protocol(golden_recon, tmp_path):
    a = shutil.copytree(golden_recon["r32"], tmp_path / "a")
    b = shutil.copytree(golden_recon["r32"], tmp_path / "b")
    pd.read_parquet(b / "per_image.parquet").drop(columns=["ssim"]).to_parquet(b / "per_image.parquet")
    write_report([a, b], tmp_path / "rep", grids=False)
    table = pd.read_csv(tmp_path / "rep" / "tables" / "images-32x32-summary.csv")
    assert set(table["entry"]) == {"taef2 · a", "taesd · a", "taef2 · b", "taesd · b"}
    ssim = table[table["metric"] == "ssim"].set_index("entry")["status"]
    assert ssim["taef2 · b"] == "not measured" and ssim["taef2 · a"] == "ok"
    paired = pd.read_csv(tmp_path / "rep" / "tables" / "images-32x32-paired.csv")
    assert len(paired[paired["metric"] == "psnr"]) == 6 and len(paired[paired["metric"] == "ssim"]) == 1


def only_vae(src: Path, dst: Path, vae: str) -> Path:
    """A copy of a run as if only ``vae`` had been selected."""
    d = shutil.copytree(src, dst)
    for name in ("summary.csv", "timings.csv"):
        t = pd.read_csv(d / name)
        t[t["vae"] == vae].to_csv(d / name, index=False)
    p = pd.read_parquet(d / "per_image.parquet")
    p[p["vae"] == vae].to_parquet(d / "per_image.parquet")
    (d / "vaes.json").write_text(json.dumps([v for v in json.loads((d / "vaes.json").read_text()) if v["vae"] == vae]))
    return d


def test_single_vae_and_bench_and_categories(golden_recon, tmp_path):
    single = only_vae(golden_recon["r32"], tmp_path / "single", "taef2")
    per_image = pd.read_parquet(single / "per_image.parquet")
    per_image["category"] = ["faces", "text", "faces", "texture", "text", "texture"]
    per_image.to_parquet(single / "per_image.parquet")
    out = write_report([single], tmp_path / "rep", worst=1, best=0)
    assert (tmp_path / "rep" / "plots" / "images-32x32-categories-psnr.png").is_file()
    assert not (tmp_path / "rep" / "tables" / "images-32x32-paired.csv").read_text().strip().count("\n")
    html = out.read_text(encoding="utf-8")
    assert (
        "Paired comparisons" not in html and html.count('class="full grid-tile') == 2 * 2
    )  # original + taef2, two grids

    speeds = [("taef2", "decode", 2.0), ("taesd", "decode", 0.5), ("taef2", "encode", 1.0), ("taesd", "encode", 0.25)]
    rows = [bench_row(v, op, ms, iqr=0.1, resolution=32, batch=4, dtype="fp32", device="cpu") for v, op, ms in speeds]
    bench_dir = write_bench(tmp_path / "bench", [dict(r, peak_mem_mb=10.0, lowp_psnr_vs_fp32=np.nan) for r in rows])
    write_report([golden_recon["r32"], bench_dir], tmp_path / "rep2", grids=False)
    assert (tmp_path / "rep2" / "plots" / "images-32x32-pareto.png").is_file()
    from evalvae.report import tables

    section = group_sections(load_inputs([golden_recon["r32"]]).runs)[0]
    points, note = tables.speed_points(section, tables.summary_table(section), load_inputs([bench_dir]).bench)
    assert "decode" in note and dict(zip(points["entry"], points["images_per_s"])) == {"taef2": 500.0, "taesd": 2000.0}


def test_failed_and_missing_inputs(golden_recon, tmp_path):
    failed = tmp_path / "failed"
    failed.mkdir()
    shutil.copy(golden_recon["r32"] / "metrics.json", failed / "metrics.json")
    pd.DataFrame(columns=["vae", "image", "psnr", "ssim", "height", "width", "upscaled"]).to_parquet(
        failed / "per_image.parquet"
    )
    (failed / "vaes.json").write_text(
        json.dumps([{"vae": "flux", "status": "failed", "error": "weights for vae.flux unavailable offline"}])
    )
    with pytest.raises(NothingToReport, match="weights for vae.flux unavailable offline"):
        write_report([failed], tmp_path / "rep")
    with pytest.raises(NothingToReport, match="no such directory"):
        write_report([tmp_path / "nowhere"], tmp_path / "rep")
    out = write_report([failed, golden_recon["r32"]], tmp_path / "rep", grids=False)
    assert "VAE flux failed" in out.read_text(encoding="utf-8")
    res = helpers.evalvae_main(["report", str(failed), "--out", str(tmp_path / "cli")], cwd=tmp_path)
    assert res.returncode == 2 and "nothing to report" in res.stderr and "flux" in res.stderr


def test_multirun_folder_and_cli(golden_recon, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(golden_recon["r32"], sweep / "0")
    shutil.copytree(golden_recon["r48"], sweep / "1")
    inputs = load_inputs([sweep])
    assert [r.label for r in inputs.runs] == ["0", "1"] and not inputs.problems
    res = helpers.evalvae_main(["report", str(sweep), "--out", str(tmp_path / "out"), "--no-grids"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()) == tmp_path / "out" / "report.html"
    assert "VAE comparison report" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid worst=-1"):
        write_report([golden_recon["r32"]], tmp_path / "x", worst=-1)


# Eight images, three VAEs, values chosen so that wins, ties, losses and win rates can be counted by hand.
PSNR_A = np.full(8, 30.0)
PSNR_B = PSNR_A - np.arange(1, 9)  # a - b = +1 .. +8: a better on all 8
PSNR_C = PSNR_A - np.array([1, -2, 3, 0, 0, -6, 7, 8])  # a - c: 4 better, 2 equal, 2 worse
LPIPS_A = np.full(8, 0.10)
LPIPS_B = LPIPS_A + 0.05  # lower is better: a better on all 8
LPIPS_C = LPIPS_A + np.array([0.05, 0.05, 0.05, 0.05, 0.05, 0.05, -0.05, -0.05])  # a better on 6, worse on 2
# (metric, a, b): (wins, ties, losses, win rate = (wins + ties / 2) / 8), counted from the arrays above
BY_HAND = {
    ("psnr", "a", "b"): (8, 0, 0, 1.0),
    ("psnr", "a", "c"): (4, 2, 2, 0.625),
    ("psnr", "b", "c"): (0, 4, 4, 0.25),  # b - c = 0, -4, 0, -4, -5, -12, 0, 0
    ("lpips", "a", "b"): (8, 0, 0, 1.0),
    ("lpips", "a", "c"): (6, 0, 2, 0.75),
    ("lpips", "b", "c"): (0, 6, 2, 0.375),  # c - b = 0 on six images, -0.1 (c better) on two
}


def test_win_rates_equal_hand_counts(tmp_path):
    from tests.compare_helpers import write_run

    values = {
        "a": {"psnr": PSNR_A, "lpips": LPIPS_A},
        "b": {"psnr": PSNR_B, "lpips": LPIPS_B},
        "c": {"psnr": PSNR_C, "lpips": LPIPS_C},
    }
    write_report([write_run(tmp_path / "run", values)], tmp_path / "rep", grids=False)
    paired = pd.read_csv(tmp_path / "rep" / "tables" / "kodak-256x256-paired.csv").set_index(["metric", "a", "b"])
    assert sorted(paired.index) == sorted(BY_HAND)
    for key, (wins, ties, losses, win_rate) in BY_HAND.items():
        row = paired.loc[key]
        assert (row["n"], row["wins"], row["ties"], row["losses"]) == (8, wins, ties, losses), key
        assert row["win_rate"] == pytest.approx(win_rate, abs=1e-12), key
    # a beats b on every image (p well below 0.05 even after Holm over 3 pairs); a vs c and b vs c are mixed or
    # too few (4 non-zero differences) to be significant under any paired test
    assert paired.loc[("psnr", "a", "b"), "significant"] and paired.loc[("lpips", "a", "b"), "significant"]
    assert not paired.loc[("psnr", "a", "c"), "significant"] and not paired.loc[("psnr", "b", "c"), "significant"]
    assert (paired["p"] <= paired["p_holm"]).all() and (paired["p_holm"] <= 1).all()


# Appended to a copy of the report: records, after load, whether tables and grid tiles are rendered and visible.
PROBE = """<script>
window.addEventListener('load', () => {
  const shown = (el) => { const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none' && parseFloat(s.opacity) > 0; };
  const tables = [...document.querySelectorAll('table.summary')];
  const tiles = [...document.querySelectorAll('img.grid-tile')];
  const plots = [...document.querySelectorAll('img.plot')];
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({
    tables: tables.length, tables_shown: tables.filter(shown).length, rows: tables.map(t => t.tBodies[0].rows.length),
    tiles: tiles.length, tiles_shown: tiles.filter(t => shown(t) && t.complete && t.naturalWidth > 0).length,
    plots_shown: plots.filter(p => shown(p) && p.complete && p.naturalWidth > 0).length,
  });
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.slow
def test_html_renders_in_headless_chromium(report, tmp_path):
    seen = browser.probe(report / "report.html", PROBE, 1400, tmp_path)
    assert seen["tables"] == seen["tables_shown"] == 2 and seen["rows"] == [2, 2]
    assert seen["tiles"] >= 6 and seen["tiles_shown"] == seen["tiles"]
    assert seen["plots_shown"] >= 8
    shot = browser.screenshot(report / "report.html", tmp_path / "shot.png", 1400, 2600, tmp_path)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (2600, 1400)
    assert pixels.std() > 20  # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2000  # photos and plots, not just text on white


@pytest.mark.assets
def test_report_on_real_taef2_reconstructions(assets, taef2_dir, tmp_path):
    cfg = helpers.compose_run(
        [
            "+vae=taef2",
            f"vae.taef2.source={taef2_dir}",
            "dataset=folder",
            f"dataset.path={assets / 'images' / 'kodak'}",
            "dataset.resolution=128",
            "dataset.limit=3",
            "workers=0",
            "progress=false",
        ]
    )
    run(cfg, out_dir=tmp_path / "run")
    out = write_report([tmp_path / "run"], tmp_path / "rep", worst=1, best=0)
    summary = pd.read_csv(tmp_path / "rep" / "tables" / "kodak-128x128-summary.csv").set_index("metric")
    assert 20 < summary.loc["psnr", "mean"] < 40  # a real decoder, not noise
    html = out.read_text(encoding="utf-8")
    assert "differs from the one scored" not in html and html.count('class="full grid-tile') == 2 * 2
