"""Float noise is not a preference, facts are not qualities, and VAEs are ranked on what they share.

Synthetic per-image tables (written as ``evalvae run`` writes them) through ``report`` and
``compare``: the same VAE with float noise at the measured scale (batch size 1 against 8) ties
everywhere; bits per pixel and region counts are never ranked, tested or plotted as qualities; a
VAE scored on fewer images is ranked on the images all share; KID whose every subset is the whole
set is not ranked; significance out of reach at this n says so. Report and compare share one
paired test.
"""

from __future__ import annotations

import copy
import json
import math

import matplotlib.axes
import numpy as np
import pandas as pd
import pytest

from evalvae.compare import Verdict, compare, load_snapshot, parse_tolerances, write_baseline
from evalvae.metrics import stats
from evalvae.metrics.info import BPP, RATE_FACTS, MetricInfo, Tolerance, metric_entry, recorded_info, registered_info
from evalvae.report import tables, views, write_report
from evalvae.report.load import load_inputs
from evalvae.report.sections import group_sections
from tests.compare_helpers import PROTOCOL, base_values, set_level_row, write_run

# The largest differences measured between TAEF2 at batch size 1 and 8 (Kodak, 256², CPU, fp32),
# per image: the float noise a report of a VAE against itself must read as ties.
NOISE = {"psnr": 5.4e-5, "ssim": 1.7e-6, "lpips": 3e-6}
RFID_NOISE = 8.7e-5  # relative


def section_of(*runs):
    (section,) = group_sections(load_inputs(list(runs)).runs)
    return section


def noisy_twin(values: dict[str, np.ndarray], scale: float = 1.0) -> dict[str, np.ndarray]:
    """The same values moved by up to the measured noise, every image the same way (the worst case:
    today's report calls that 4/4 wins and a CI that excludes 0)."""
    n = len(values["psnr"])
    steps = np.linspace(0.25, 1.0, n)
    return {m: v + scale * NOISE[m] * steps * (1 if m != "lpips" else -1) for m, v in values.items()}


# --- the same VAE twice ---------------------------------------------------------------------------


def test_a_vae_against_itself_at_another_batch_size_reads_as_ties_everywhere(tmp_path, monkeypatch):
    drawn = []
    barh = matplotlib.axes.Axes.barh
    monkeypatch.setattr(
        matplotlib.axes.Axes, "barh", lambda ax, *a, **k: drawn.append(list(k["edgecolor"])) or barh(ax, *a, **k)
    )
    v = base_values(n=4)
    protocol = copy.deepcopy(PROTOCOL)
    protocol["metrics"]["rfid"] = metric_entry(registered_info("rfid"), {"implementation": "evalvae float64 Fréchet"})
    rfid = [set_level_row("batch1", "rfid", 25.0, n=4), set_level_row("batch8", "rfid", 25.0 * (1 + RFID_NOISE), n=4)]
    run = write_run(tmp_path / "run", {"batch1": v, "batch8": noisy_twin(v)}, protocol, extra_summary=rfid)
    html = write_report([run], tmp_path / "rep", grids=False)
    rep = tmp_path / "rep"
    summary = pd.read_csv(rep / "tables" / "kodak-256x256-summary.csv")
    paired = pd.read_csv(rep / "tables" / "kodak-256x256-paired.csv")
    assert not summary["best"].any()  # no best mark, per-image or set-level
    assert drawn and all(c == "none" for edges in drawn for c in edges)  # no outlined bar
    assert set(paired["metric"]) == {"psnr", "ssim", "lpips"}
    for r in paired.itertuples():
        assert (r.wins, r.ties, r.losses) == (0, 4, 0) and r.win_rate == 0.5, r.metric
        assert (r.mean_diff, r.ci_low, r.ci_high) == (0.0, 0.0, 0.0), r.metric
        assert r.p == 1.0 and not r.significant and pd.isna(r.favours), r.metric
    text = html.read_text(encoding="utf-8") + (rep / "report.md").read_text(encoding="utf-8")
    assert "4/0/0" not in text and "0/0/4" not in text and "0/4/0" in text
    assert "not significant (all 4 images tie)" in text
    assert "favours" not in text.replace("favours {{", "")
    section = section_of(run)
    found = views.findings(section, tables.summary_table(section), tables.paired_table(section))
    assert len(found) == 4 and all("batch1 and batch8 tie" in f and ": best" not in f for f in found), found


def test_noise_beyond_the_tie_tolerance_is_still_a_difference(tmp_path):
    v = base_values(n=12)
    run = write_run(tmp_path / "run", {"a": v, "b": dict(v, psnr=v["psnr"] - 0.01)})  # 20x PSNR's tie
    section = section_of(run)
    paired = tables.paired_table(section).set_index("metric")
    assert (paired.loc["psnr", "wins"], paired.loc["psnr", "favours"]) == (12, "a")
    assert paired.loc["psnr", "significant"] and paired.loc["ssim", "ties"] == 12
    best = tables.summary_table(section).query("best")
    assert best[["entry", "metric"]].values.tolist() == [["a", "psnr"]]


def test_values_within_the_tie_of_the_best_share_the_mark_and_all_tied_mark_none():
    info = registered_info("psnr")
    assert stats.top_tier({"a": 30.0, "b": 30.0 + 4e-4, "c": 29.0}, info) == ["a", "b"]
    assert stats.top_tier({"a": 30.0, "b": 30.0 + 6e-4}, info) == ["b"]
    assert stats.top_tier({"a": 1.0, "b": 2.0}, registered_info("bpp")) == []  # a fact: never a best


def test_compare_calls_a_move_within_the_tie_unchanged_whatever_the_tolerance(tmp_path):
    v = base_values(n=12)
    base = load_snapshot(write_run(tmp_path / "b", {"vae": v}))
    cur = load_snapshot(write_run(tmp_path / "c", {"vae": noisy_twin(v, scale=4.0)}))  # 4x the noise, within ties
    exact = parse_tolerances({"metrics": {m: {"abs": 0.0} for m in NOISE}, "alpha": None, "improvements": "fail"})
    result = compare(base, cur, exact)
    rows = {r.metric: r for r in result.rows}
    assert all(rows[m].verdict is Verdict.PASS for m in NOISE), {m: rows[m].verdict for m in NOISE}
    assert "within the tie tolerance" in rows["psnr"].detail and rows["psnr"].p_value == 1.0
    assert result.exit_code == 0
    beyond = load_snapshot(write_run(tmp_path / "d", {"vae": dict(v, psnr=v["psnr"] + 0.002)}))  # 4x PSNR's tie
    assert next(r for r in compare(base, beyond, exact).rows if r.metric == "psnr").verdict is Verdict.IMPROVED


# --- one paired test for report and compare -------------------------------------------------------


def test_report_and_compare_give_the_same_p_and_verdict_on_the_same_images(tmp_path):
    # Per-image moves where the paired t-test (one-sided) and the Wilcoxon test disagree at 0.05:
    # eleven images improve a little, one collapses.
    b = np.round(np.random.default_rng(3).normal(30.0, 2.0, 12), 4)
    c = b + np.array([0.05, 0.08, 0.02, 0.06, 0.03, 0.07, 0.04, 0.05, 0.09, 0.01, 0.06, -0.9])
    base = write_run(tmp_path / "base", {"v": {"psnr": b}})
    cur = write_run(tmp_path / "cur", {"v": {"psnr": np.round(c, 4)}})
    row = next(r for r in compare(load_snapshot(base), load_snapshot(cur)).rows if r.metric == "psnr")
    section = section_of(base, cur)
    p = tables.paired_table(section).set_index("metric").loc["psnr"]
    assert row.p_value == pytest.approx(p["p"], rel=1e-12) == pytest.approx(p["p_holm"], rel=1e-12)
    assert row.p_value == pytest.approx(stats.wilcoxon_p(np.round(c, 4) - b), rel=1e-12)
    assert abs(row.delta) > row.allowed  # beyond tolerance: the test decides
    assert (row.verdict is Verdict.NOISE) == (not p["significant"])
    # the mean fell (−0.028 dB) beyond the tolerance, and the test rejects "no change": the t-test
    # compare used before called this noise (one-sided p = 0.36) while the report called it significant
    assert row.verdict is Verdict.REGRESSED and p["significant"]


# --- facts are not qualities ---------------------------------------------------------------------


def test_bits_per_pixel_and_region_counts_are_facts_declared_in_the_metric_info():
    for name in ("bpp", "text_regions", "face_regions", *RATE_FACTS):
        assert registered_info(name).quality is False, name
        assert recorded_info(name).quality is False, name  # a per-image fact metrics.json does not list
    assert all(registered_info(m).quality for m in ("psnr", "ssim", "lpips", "rfid", "kid", "delta_e", "text_ned"))
    assert BPP.to_dict()["quality"] is False
    stated = recorded_info("mae", {"info": {"title": "MAE", "quality": False}})
    assert stated.quality is False and stated.title == "MAE"


def test_facts_are_never_best_tested_or_plotted_as_quality(tmp_path, monkeypatch):
    titles = []
    set_title = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(
        matplotlib.axes.Axes, "set_title", lambda ax, t, *a, **k: titles.append(t) or set_title(ax, t, *a, **k)
    )
    v = base_values(n=8)
    facts = {"bpp": np.full(8, 0.5), "text_regions": np.arange(8.0), "face_regions": np.ones(8)}
    worse = {**facts, "bpp": np.full(8, 2.0), "text_regions": np.arange(8.0) + 1}
    protocol = copy.deepcopy(PROTOCOL)
    protocol["metrics"]["mae"] = metric_entry(MetricInfo("mae", "MAE", False, quality=False), {})
    run = write_run(
        tmp_path / "run",
        {
            "a": {**v, **facts, "mae": np.full(8, 1.0)},
            "b": {**v, "psnr": v["psnr"] - 1, **worse, "mae": np.full(8, 3.0)},
        },
        protocol,
    )
    write_report([run], tmp_path / "rep", grids=False)
    summary = pd.read_csv(tmp_path / "rep" / "tables" / "kodak-256x256-summary.csv")
    paired = pd.read_csv(tmp_path / "rep" / "tables" / "kodak-256x256-paired.csv")
    facts_rows = summary[summary["metric"].isin(["bpp", "text_regions", "face_regions", "mae"])]
    assert len(facts_rows) == 8 and not facts_rows["best"].any()  # shown, never best
    assert summary.query("best")[["entry", "metric"]].values.tolist() == [["a", "psnr"]]
    assert set(paired["metric"]) == {"psnr", "ssim", "lpips"}  # no paired test, no win rate of a fact
    means = [t for t in titles if "per image" not in t and not t.startswith("Δ")]
    assert means and not any(t.startswith(("Bits per pixel", "Text lines", "Faces", "MAE")) for t in titles), titles
    section = section_of(run)
    found = views.findings(section, tables.summary_table(section), tables.paired_table(section))
    assert not any(f.startswith(("Faces", "MAE")) and "best" in f for f in found)
    assert any(f.startswith("Bits per pixel: from 0.500 (a) to 2.000 (b)") for f in found), found
    assert section.primary_metric == "psnr"


# --- ranked over the images they share -----------------------------------------------------------


def test_a_vae_scored_on_fewer_images_is_ranked_on_the_images_all_share(tmp_path):
    v = base_values(n=12)
    v["psnr"][8:] = 20.0  # the last four images are hard for every VAE
    partial = {m: x[:8] - (0.5 if m == "psnr" else 0.0) for m, x in v.items()}  # worse on every image it has
    run = write_run(tmp_path / "run", {"full": v, "partial": partial})
    section = section_of(run)
    summary = tables.summary_table(section).set_index(["entry", "metric"])
    assert summary.loc[("partial", "psnr"), "mean"] > summary.loc[("full", "psnr"), "mean"]  # its own 8 easy images
    assert bool(summary.loc[("full", "psnr"), "best"]) and not bool(summary.loc[("partial", "psnr"), "best"])
    assert summary.loc[("full", "psnr"), "n_rank"] == 8
    assert summary.loc[("full", "psnr"), "rank_mean"] == pytest.approx(v["psnr"][:8].mean(), rel=1e-12)
    assert summary.loc[("full", "psnr"), "n"] == 12  # the table still shows each VAE's own mean
    note = next(n for n in section.notes if n.startswith("PSNR (dB)"))
    assert "full: 12, partial: 8" in note and "over the 8 image(s) every VAE scored" in note
    found = views.findings(section, tables.summary_table(section), tables.paired_table(section))
    assert found[0].startswith("PSNR (dB): best full (29.") and "of 8 images" in found[0], found[0]


def test_set_level_values_over_different_numbers_of_images_are_not_ranked(tmp_path):
    v = base_values(n=12)
    run = write_run(
        tmp_path / "run",
        {"a": v, "b": {m: x[:10] for m, x in v.items()}},
        extra_summary=[set_level_row("a", "rfid", 20.0), set_level_row("b", "rfid", 30.0, n=10)],
    )
    section = section_of(run)
    summary = tables.summary_table(section)
    assert not summary[summary["metric"] == "rfid"]["best"].any()
    why = "rFID: VAEs were scored on different numbers of images (a: 12, b: 10)"
    assert any(n.startswith(why) for n in section.notes)


@pytest.mark.parametrize("subset_size, ranked", [(1000, False), (12, False), (10, True)])
def test_kid_whose_every_subset_is_the_whole_set_is_not_ranked(tmp_path, subset_size, ranked):
    protocol = copy.deepcopy(PROTOCOL)
    protocol["metrics"]["kid"] = metric_entry(registered_info("kid"), {"subsets": 100, "subset_size": subset_size})
    kid = [set_level_row("a", "kid", 1e-3), set_level_row("b", "kid", 5e-3)]
    run = write_run(tmp_path / "run", {"a": base_values(), "b": base_values(seed=1)}, protocol, extra_summary=kid)
    section = section_of(run)
    best = tables.summary_table(section).query("metric == 'kid' and best")["entry"].tolist()
    note = [n for n in section.notes if n.startswith("KID:")]
    if ranked:
        assert best == ["a"] and not note
    else:
        assert best == [] and len(note) == 1
        assert (
            f"N = 12 images is not more than the subset size {subset_size}, so every subset is the whole set" in note[0]
        )
        found = views.findings(section, tables.summary_table(section), tables.paired_table(section))
        assert "KID: not ranked (every subset is the whole set; see the notes)." in found


# --- significance out of reach -------------------------------------------------------------------


def test_not_significant_says_when_no_result_could_have_been_significant(tmp_path):
    v = base_values(n=4)
    steps = np.linspace(0.4, 0.6, 4)
    run = write_run(tmp_path / "run", {"a": v, "b": {m: x - steps * np.abs(x).mean() for m, x in v.items()}})
    write_report([run], tmp_path / "rep", grids=False)
    text = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    why = "n = 4: the smallest possible p is 0.125"
    assert f"not significant ({why})" in md and why in text
    assert md.count(why) >= 3 + 1  # every paired row, and the findings
    # six images and three VAEs: p can reach 0.031, but Holm over three pairs cannot go below 0.094
    v6 = base_values(n=6)
    three = write_run(
        tmp_path / "three",
        {
            k: {m: x - d * np.linspace(0.9, 1.1, 6) * np.abs(x).mean() for m, x in v6.items()}
            for k, d in (("a", 0), ("b", 0.3), ("c", 0.6))
        },
    )
    paired = tables.paired_table(section_of(three))
    assert np.allclose(paired["p"], 2 / 2**6) and not paired["significant"].any()
    assert paired["p_floor"].tolist() == pytest.approx([3 * 2 / 2**6] * len(paired))
    assert views.unreachable(paired.iloc[0].to_dict()) == "n = 6: the smallest possible Holm p is 0.094"
    # twelve images: within reach, nothing said
    twelve = write_run(tmp_path / "twelve", {"a": base_values(), "b": base_values(seed=1)})
    assert all(views.unreachable(r) == "" for r in tables.paired_table(section_of(twelve)).to_dict("records"))


def test_compare_lets_the_tolerance_decide_where_the_test_cannot_reach_alpha(tmp_path):
    v = base_values(n=4)
    base = load_snapshot(write_run(tmp_path / "b", {"vae": v}))
    cur = load_snapshot(write_run(tmp_path / "c", {"vae": dict(v, psnr=v["psnr"] - 1.0)}))
    row = next(r for r in compare(base, cur).rows if r.metric == "psnr")
    assert row.p_value == pytest.approx(0.125) and row.verdict is Verdict.REGRESSED
    assert "the smallest possible p is 0.12, not below alpha, so the tolerance alone decides" in row.noise


def test_smallest_p_is_the_exact_wilcoxon_floor():
    assert [stats.smallest_p(m) for m in range(7)] == pytest.approx([1, 1, 0.5, 0.25, 0.125, 0.0625, 0.03125])
    assert stats.smallest_p(60) < 1e-9  # the normal approximation beyond 50


# --- the tie tolerance: declared, recorded and read back -----------------------------------------


def test_tie_tolerances_sit_above_the_measured_noise_and_below_compares_tolerance():
    for name, noise in {**NOISE, "rfid": RFID_NOISE}.items():
        info = registered_info(name)
        tie = info.tie.allowed(1.0)  # rFID's is relative
        assert noise * 5 <= tie < info.tolerance.allowed(1.0), name
    # and below the smallest real change measured (docs/ci.md: bf16 instead of fp32, TAEF2's means)
    assert registered_info("psnr").tie.abs < 0.0119 and registered_info("ssim").tie.abs < 1.9e-5


def test_a_recorded_tie_is_read_back_by_report_and_compare(tmp_path):
    assert MetricInfo.from_dict("psnr", {"tie": {"abs": 0.1}}).tie == Tolerance(abs=0.1)
    assert recorded_info("x").tie is None and recorded_info("x").tie_tolerance == Tolerance()
    v = base_values(n=12)
    protocol = copy.deepcopy(PROTOCOL)
    protocol["metrics"]["psnr"]["info"] = dict(registered_info("psnr").to_dict(), tie={"abs": 0.1, "rel": 0.0})
    moved = dict(v, psnr=v["psnr"] + 0.05)  # beyond PSNR's shipped tie, within the recorded one
    base = write_run(tmp_path / "base", {"v": v}, protocol)
    cur = write_run(tmp_path / "cur", {"v": moved}, protocol)
    baseline = write_baseline(load_snapshot(base), tmp_path / "b.json")
    assert json.loads(baseline.read_text())["info"]["psnr"]["tie"] == {"abs": 0.1, "rel": 0.0}
    row = next(r for r in compare(load_snapshot(baseline), load_snapshot(cur)).rows if r.metric == "psnr")
    assert row.verdict is Verdict.PASS and "within the tie tolerance ±0.1" in row.detail
    two = write_run(tmp_path / "two", {"a": v, "b": moved}, protocol)
    assert tables.paired_table(section_of(two)).set_index("metric").loc["psnr", "ties"] == 12
    assert math.isnan(stats.paired([1.0], [np.nan], True).mean_diff)
