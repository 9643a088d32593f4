"""The report at the edges: sections never mix what is not comparable, PSNR = +inf, notes next to numbers."""

from __future__ import annotations

import copy
import html as html_lib
import re

import numpy as np
import pandas as pd
import pytest

from evalvae.metrics.info import metric_entry, registered_info
from evalvae.report import write_report
from evalvae.report.load import load_inputs
from evalvae.report.sections import group_sections
from evalvae.run import run
from tests.compare_helpers import PROTOCOL, base_values, identity_vae, set_level_row, write_run
from tests.helpers import compose_run

NONSTANDARD = (
    "non-standard weights: LPIPS-alex backbone tensors sha256 0123456789ab, not comparable to published numbers"
)
RFID = metric_entry(
    registered_info("rfid"),
    {
        "implementation": "evalvae float64 Fréchet distance",
        "extractor": {"name": "inception-v3-fid-clean", "resize": "clean"},
        "reference": {"key": "ab" * 32, "source": "computed", "n": 12, "path": "/cache/refstats/ab/abab.safetensors"},
    },
)


def protocol(n=12, lpips_net="alex", fid="clean", **lpips_extra) -> dict:
    p = copy.deepcopy(PROTOCOL)
    p["dataset"]["n_evaluated"] = n
    p["metrics"]["lpips"].update(net=lpips_net, weights={"standard": True, "tensors_sha256": "cd" * 32}, **lpips_extra)
    p["metrics"]["rfid"] = copy.deepcopy(RFID)
    p["metrics"]["rfid"]["extractor"].update(name=f"inception-v3-fid-{fid}", resize=fid)
    if fid != "clean":
        p["metrics"]["rfid"]["reference"]["key"] = "ef" * 32
    return p


def rfid_row(vae, mean, n=12):
    note = f"extractor inception-v3-fid-clean; N={n} < feature dim 2048: rank-deficient covariance, rFID biased upward"
    return set_level_row(vae, "rfid", mean, n=n, note=note)


def test_sections_keep_apart_runs_that_differ_in_images_n_or_metric_settings(tmp_path):
    v = base_values()
    better = dict(v, psnr=v["psnr"] + 3, lpips=v["lpips"] / 4)  # would be "best" in any section it joined
    d = {
        "alex": write_run(tmp_path / "alex", {"a": v}, protocol(), extra_summary=[rfid_row("a", 20.0)]),
        # same protocol, weights read from elsewhere and reference statistics from the cache: joins "alex"
        "again": write_run(
            tmp_path / "again",
            {"e": dict(v, psnr=v["psnr"] + 0.5)},
            protocol(provenance={"weights": {"file": "/elsewhere/alex.pth"}}),
            extra_summary=[rfid_row("e", 21.0)],
        ),
        "no-lpips": write_run(tmp_path / "no-lpips", {"f": {"psnr": v["psnr"] - 1, "ssim": v["ssim"]}}, protocol()),
        "vgg": write_run(tmp_path / "vgg", {"b": better}, protocol(lpips_net="vgg")),
        "fewer": write_run(tmp_path / "fewer", {"c": {k: x[:8] for k, x in better.items()}}, protocol(n=8)),
        "other-images": write_run(
            tmp_path / "other-images", {"g": better}, protocol(), images=[f"other{i}.png" for i in range(12)]
        ),
        "legacy": write_run(
            tmp_path / "legacy", {"h": better}, protocol(fid="legacy"), extra_summary=[rfid_row("h", 2.0)]
        ),
    }
    (tmp_path / "again" / "metrics.json").write_text(
        (tmp_path / "again" / "metrics.json").read_text().replace('"computed"', '"cache"')
    )
    sections = group_sections(load_inputs(list(d.values())).runs)
    by_entries = {tuple(e.label for e in s.entries): s.title for s in sections}
    assert set(by_entries) == {("a", "e", "f"), ("b",), ("c",), ("g",), ("h",)}
    titles = list(by_entries.values())
    assert len(set(titles)) == 5 and all(t.startswith("kodak · 256×256 · ") for t in titles)
    assert by_entries[("b",)] == "kodak · 256×256 · LPIPS net vgg"
    assert by_entries[("c",)] == "kodak · 256×256 · N = 8"
    assert re.fullmatch(r"kodak · 256×256 · image set [0-9a-f]{8}", by_entries[("g",)])
    assert by_entries[("h",)].startswith("kodak · 256×256 · rFID extractor name inception-v3-fid-legacy")
    # its own values of what the others cite
    assert by_entries[("a", "e", "f")].startswith("kodak · 256×256 · N = 12 · image set ")
    two = group_sections(load_inputs([d["alex"], d["vgg"]]).runs)
    assert [s.title for s in two] == ["kodak · 256×256 · LPIPS net alex", "kodak · 256×256 · LPIPS net vgg"]

    write_report(list(d.values()), tmp_path / "rep", grids=False)
    slug = sections[0].slug
    table = pd.read_csv(tmp_path / "rep" / "tables" / f"{slug}-summary.csv")
    assert set(table["entry"]) == {"a", "e", "f"}
    best = table[table["best"]].groupby("metric")["entry"].apply(sorted).to_dict()
    # never b, c, g or h; SSIM (a, e, f) and LPIPS (a, e) are equal for every VAE that has them: no best
    assert best == {"psnr": ["e"], "rfid": ["a"]}
    assert table.loc[(table.entry == "f") & (table.metric == "lpips"), "status"].item() == "not measured"
    for s in sections[1:]:  # one VAE each: nothing is marked best against another section's VAEs
        assert not pd.read_csv(tmp_path / "rep" / "tables" / f"{s.slug}-summary.csv")["best"].any()


def test_runs_whose_metric_settings_differ_only_in_implementation_share_a_section(tmp_path):
    v = base_values()
    gpu = protocol()
    gpu["metrics"]["ssim"]["implementation"] = "torchmetrics (float64)"
    runs = [write_run(tmp_path / "cpu", {"a": v}, protocol()), write_run(tmp_path / "gpu", {"b": v}, gpu)]
    (section,) = group_sections(load_inputs(runs).runs)
    assert section.title == "kodak · 256×256" and [e.label for e in section.entries] == ["a", "b"]
    assert any("SSIM in run gpu differs in {'implementation': 'torchmetrics (float64)'}" in n for n in section.notes)


def test_exact_reconstructions_show_as_infinity_everywhere(tmp_path, image_dir):
    dataset = ["dataset=folder", f"dataset.path={image_dir}", "dataset.resolution=32", "workers=0"]
    cfg = compose_run([*identity_vae("exact"), *identity_vae("close", 0.02), *dataset])
    out = run(cfg, out_dir=tmp_path / "run").out_dir
    html = write_report([out], tmp_path / "rep", worst=1).read_text(encoding="utf-8")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")

    table = pd.read_csv(tmp_path / "rep" / "tables" / "images-32x32-summary.csv").set_index(["entry", "metric"])
    exact = table.loc[("exact", "psnr")]
    assert exact["status"] == "ok" and exact["mean"] == np.inf and exact["infinite"] == 6 and exact["n"] == 6
    assert np.isnan(exact["std"]) and np.isnan(exact["ci_low"]) and bool(exact["best"])
    close = table.loc[("close", "psnr")]
    assert np.isfinite(close["mean"]) and close["ci_low"] <= close["mean"] <= close["ci_high"] and not close["best"]
    paired = pd.read_csv(tmp_path / "rep" / "tables" / "images-32x32-paired.csv").set_index("metric").loc["psnr"]
    assert (paired["mean_diff"], paired["wins"], paired["favours"]) == (np.inf, 6, "exact")
    assert np.isnan(paired["ci_low"])
    assert 0 < paired["p"] < 0.05  # six infinite wins rank above everything: the signed-rank test still applies

    note = "PSNR (dB) is ∞ on 6 of 6 images (exact reconstructions): the mean is ∞, with no std or CI; plots leave those images out"
    assert note in md and html_lib.escape(note) in html
    row = next(line for line in md.splitlines() if line.startswith("| exact |"))
    assert "**∞**¹" in row and "PSNR (dB): best exact (∞)" in md
    assert re.search(r'<td class="best">∞<sup class="fn">¹</sup></td>', html)
    assert "PSNR ∞ dB" in html  # the grid's recreated exact reconstruction
    for plot in ("means", "per-image"):
        assert (tmp_path / "rep" / "plots" / f"images-32x32-{plot}.png").stat().st_size > 5000
    assert "Infinite values (∞, see the notes under the results) are left out." in html


def test_one_exact_image_among_finite_ones(tmp_path):
    v = base_values()
    exact = v["psnr"].copy()
    exact[[2, 7]] = np.inf
    d = write_run(tmp_path / "r", {"a": dict(v, psnr=exact), "b": v})
    write_report([d], tmp_path / "rep", grids=False)
    table = pd.read_csv(tmp_path / "rep" / "tables" / "kodak-256x256-summary.csv").set_index(["entry", "metric"])
    assert table.loc[("a", "psnr"), "mean"] == np.inf and table.loc[("a", "psnr"), "infinite"] == 2
    assert table.loc[("b", "psnr"), "mean"] == pytest.approx(v["psnr"].mean(), rel=1e-12)
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "PSNR (dB) is ∞ on 2 of 12 images (exact reconstructions)" in md
    paired = pd.read_csv(tmp_path / "rep" / "tables" / "kodak-256x256-paired.csv").set_index("metric").loc["psnr"]
    assert paired["mean_diff"] == np.inf and paired["wins"] == 2 and paired["ties"] == 10
    for plot in ("means", "per-image", "paired"):  # drawn from the finite values
        assert (tmp_path / "rep" / "plots" / f"kodak-256x256-{plot}.png").stat().st_size > 5000


def test_notes_on_values_show_next_to_them(tmp_path):
    v = base_values()
    p = protocol()
    p["metrics"]["lpips"]["weights"] = {"standard": False, "tensors_sha256": "0123456789ab" + "0" * 52}
    rfid = [rfid_row("a", 20.0), rfid_row("b", 30.0)]
    d = write_run(tmp_path / "r", {"a": v, "b": dict(v, psnr=v["psnr"] - 1)}, p, extra_summary=rfid)
    summary = pd.read_csv(d / "summary.csv")
    summary["note"] = summary["note"].fillna("").astype(object)
    summary.loc[summary.metric == "lpips", "note"] = NONSTANDARD
    summary.loc[(summary.vae == "b") & (summary.metric == "psnr"), "note"] = "3 non-finite reconstruction(s) excluded"
    summary.to_csv(d / "summary.csv", index=False)

    html = write_report([d], tmp_path / "rep", grids=False).read_text(encoding="utf-8")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    rfid_note = "N=12 &lt; feature dim 2048: rank-deficient covariance, rFID biased upward"
    lpips_note = (
        f'<sup class="fn">²</sup> ⚠ {html_lib.escape(NONSTANDARD)} <span class="small">(LPIPS, every VAE)</span>'
    )
    assert lpips_note in html
    assert '3 non-finite reconstruction(s) excluded <span class="small">(PSNR (dB), b)</span>' in html
    assert f'{rfid_note} <span class="small">(rFID, every VAE)</span>' in html
    # restates the protocol
    assert "extractor inception-v3-fid-clean</li>" not in html and "extractor inception-v3-fid-clean (" not in md
    start = html.index('id="summary-kodak-256x256"')
    summary_table = html[start : html.index("</table>", start)]
    assert summary_table.count('class="warnmark"') == 2 and summary_table.count('<sup class="fn">') == 2 + 1 + 2
    row_b = next(line for line in md.splitlines() if line.startswith("| b |"))
    cells = [c.strip() for c in row_b.strip("|").split("|")]
    assert cells[2].endswith("¹")  # PSNR of b: excluded reconstructions (notes are numbered in the metrics' order)
    assert cells[4].startswith("⚠ ") and cells[4].endswith("²")  # LPIPS: non-standard weights
    assert cells[5].endswith("³")  # rFID at N < 2048
    assert f"² ⚠ {NONSTANDARD} (LPIPS, every VAE)" in md
    assert "¹ 3 non-finite reconstruction(s) excluded (PSNR (dB), b)" in md
