"""Metric info (direction, title, decimals, default tolerance): declared by each metric class, written into
metrics.json by the run, read from there by ``report`` and ``compare``; results written before metrics.json
recorded it are refused. A metric defined here, outside evalvae, proves that adding one of your own takes a
class and a YAML file."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from evalvae.compare import Verdict, compare, load_snapshot, write_baseline
from evalvae.compare.baseline import UnusableInput
from evalvae.compare.tolerances import default_tolerances, load_tolerances
from evalvae.config import compose
from evalvae.errors import ConfigError
from evalvae.metrics import build_metrics, unavailable
from evalvae.metrics.base import PairMetric
from evalvae.metrics.info import MetricInfo, Tolerance, recorded_info, registered_info
from evalvae.report import write_report
from evalvae.report.load import load_inputs
from evalvae.report.sections import group_sections
from evalvae.run import run
from evalvae.t2i.metrics import T2IMetrics
from tests.compare_helpers import PROTOCOL, base_values, write_run
from tests.helpers import compose_run
from tests.t2i_helpers import tiny_clip_dir  # noqa: F401 (fixture)

IDENTITY = "tests.run_standins.Identity"
MAE_INFO = MetricInfo("mae", "MAE (8-bit levels)", False, decimals=3, tolerance=Tolerance(abs=0.5), unit="levels")


class MAE(PairMetric):
    """Mean absolute error over pixels and channels, in 8-bit levels: a metric evalvae does not ship."""

    infos = (MAE_INFO,)

    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mae": (original - reconstruction).abs().mean(dim=(1, 2, 3))}

    def protocol(self) -> dict:
        return {"implementation": "mean |original - reconstruction| over H, W and RGB, float64"}


def standin_run(out, image_dir, gain: float, *extra):
    """A run of one stand-in VAE (``gain`` times the image) named ``v`` on the six test images."""
    dataset = ["dataset=folder", f"dataset.path={image_dir}", "dataset.resolution=32", "device=cpu", "workers=0"]
    vae = [f"+vae.v._target_={IDENTITY}", f"+vae.v.gain={gain}"]
    run(compose_run([*vae, *dataset, f"cache_dir={out.parent / 'cache'}", *extra]), out_dir=out)
    return out


def entries(out) -> dict:
    return json.loads((out / "metrics.json").read_text())["metrics"]


# --- declared, and written into metrics.json -----------------------------------------------------------


def test_an_unavailable_metric_of_your_own_carries_its_class_info_without_being_built():
    # the registered metrics' (read from the registry): tests/metrics/test_contract.py
    built = build_metrics(compose([f"+metrics.mae._target_={__name__}.MAE"]).metrics)
    assert [m.infos for m in built if isinstance(m, MAE)] == [(MAE_INFO,)]
    gone = unavailable("mae", OmegaConf.create({"_target_": f"{__name__}.MAE"}), "no weights")
    assert (gone.infos, gone.set_level, gone.note) == ((MAE_INFO,), False, "no weights")


@pytest.mark.parametrize("fid", ["computed", "unavailable"])
def test_metrics_json_holds_the_info_of_every_metric_of_a_run(tmp_path, image_dir, fid):
    absent = f"metrics.fid.weights={tmp_path / 'absent.pth'}"
    extractor = "metrics.fid.extractor=tests.helpers.TinyExtractor" if fid == "computed" else absent
    no_lpips = f"metrics.lpips.backbone_weights={tmp_path / 'absent-alexnet.pth'}"  # unavailable: info all the same
    out = standin_run(tmp_path / "run", image_dir, 0.9, "metrics=all", "metrics.fid.kid_subsets=5", no_lpips, extractor)
    found = entries(out)
    assert set(found) == {"psnr", "ssim", "lpips", "rfid", "kid", "bpp"}
    for name, entry in found.items():
        assert entry["info"] == registered_info(name).to_dict(), name
        assert entry["higher_is_better"] is registered_info(name).higher_is_better, name
    assert found["lpips"]["available"] is False
    assert ("available" in found["rfid"]) == (fid == "unavailable")
    assert found["psnr"]["info"] == {
        "title": "PSNR (dB)",
        "unit": "dB",
        "higher_is_better": True,
        "decimals": 2,
        "tolerance": {"abs": 0.01, "rel": 0.0},
        "tie": {"abs": 0.0005, "rel": 0.0},  # float noise: batch size 1 vs 8 moved PSNR by 5.4e-5 dB per image
        "quality": True,
    }
    assert found["bpp"]["info"]["quality"] is False and found["bpp"]["info"]["tie"] is None  # a fact


def test_t2i_protocol_holds_the_info_of_clip_score_and_of_fid_under_its_name(tmp_path, image_dir, tiny_clip_dir):  # noqa: F811
    def protocol(*extra) -> dict:
        cfg = compose(
            [
                "task=t2i",
                "metrics=all",
                "metrics.fid.extractor=tests.helpers.TinyExtractor",
                f"metrics.lpips.backbone_weights={tmp_path / 'absent.pth'}",
                *extra,
            ]
        )
        return T2IMetrics(cfg, tmp_path / "cache", torch.device("cpu")).protocol()

    with_reference = protocol(
        f"t2i.clip_score.model={tiny_clip_dir}",
        "dataset@t2i.reference=folder",
        f"t2i.reference.path={image_dir}",
        "t2i.reference.resolution=32",
    )
    without = protocol(f"t2i.clip_score.model={tmp_path / 'no-clip'}")  # CLIP and FID/KID unavailable
    for found in (with_reference, without):
        assert set(found) == {"psnr", "ssim", "lpips", "clip_score", "fid", "kid"}
        for name, entry in found.items():
            assert entry["info"] == registered_info(name).to_dict(), name
            assert entry["higher_is_better"] is registered_info(name).higher_is_better, name
    assert with_reference["fid"]["info"]["title"] == "FID" and "available" not in with_reference["clip_score"]
    assert without["clip_score"]["available"] is False and without["fid"]["available"] is False


def test_recorded_info_reads_the_entry_and_refuses_an_entry_written_before_info():
    assert recorded_info("psnr") == registered_info("psnr")  # a name without an entry: the registered info
    psnr = registered_info("psnr").to_dict()
    stated = recorded_info(
        "psnr", {"higher_is_better": True, "info": {**psnr, "decimals": 3, "higher_is_better": False}}
    )
    assert (stated.decimals, stated.higher_is_better, stated.title) == (3, False, "PSNR (dB)")  # info wins
    with pytest.raises(ConfigError, match=r"run/metrics\.json: metrics\.psnr\.info=None; results written before"):
        recorded_info("psnr", {"higher_is_better": True}, "run/metrics.json: metrics.psnr.info")
    unknown = recorded_info("sharpness")
    assert (unknown.title, unknown.higher_is_better, unknown.decimals, unknown.tolerance) == ("sharpness", *[None] * 3)
    with pytest.raises(ConfigError, match=r"metrics\.psnr\.info\.decimals=-1.*integer from 0 to 12"):
        recorded_info("psnr", {"info": {"decimals": -1}})
    with pytest.raises(ConfigError, match=r"run/metrics\.json: metrics\.x\.info\.tolerance\.abs='0\.1'"):
        recorded_info("x", {"info": {"tolerance": {"abs": "0.1"}}}, "run/metrics.json: metrics.x.info")
    with pytest.raises(ConfigError, match=r"higher_is_better='yes'; choose one of True, False, None"):
        MetricInfo("x", "X", "yes")


# --- read by report and compare ------------------------------------------------------------------------


def protocol_with(**infos) -> dict:
    p = copy.deepcopy(PROTOCOL)
    for name, info in infos.items():
        p["metrics"][name]["info"] = {**p["metrics"][name]["info"], **info}
    return p


def test_the_report_shows_the_title_decimals_and_direction_metrics_json_states(tmp_path):
    values = {"a": base_values(seed=0), "b": base_values(seed=1)}
    values["b"]["psnr"] = values["a"]["psnr"] + 1.0  # b is 1 dB above a on every image
    stated = write_run(
        tmp_path / "stated", values, protocol_with(psnr={"decimals": 3, "title": "Peak SNR", "higher_is_better": False})
    )
    plain = write_run(tmp_path / "plain", values)  # metrics.json with PSNR's own info: 2 decimals, higher is better
    means = pd.read_csv(stated / "summary.csv").set_index(["vae", "metric"])["mean"]
    a, b = means[("a", "psnr")], means[("b", "psnr")]
    for path, best in ((plain, "b"), (stated, "a")):
        (section,) = group_sections(load_inputs([path]).runs)
        assert section.direction("psnr") is (best == "b")
    md = (write_report([stated], tmp_path / "rep", grids=False).parent / "report.md").read_text(encoding="utf-8")
    assert "| Peak SNR ↓ |" in md and f"| {b:.3f} ± " in md and f"{b:.2f} ± " not in md  # the best is in bold
    assert "Peak SNR: best a " in md
    md = (write_report([plain], tmp_path / "rep-plain", grids=False).parent / "report.md").read_text(encoding="utf-8")
    assert "| PSNR (dB) ↑ |" in md and f"| {a:.2f} ± " in md and "Peak SNR" not in md
    assert "PSNR (dB): best b " in md


def test_runs_differing_only_in_info_share_a_section_and_are_no_protocol_mismatch(tmp_path):
    one = write_run(tmp_path / "one", {"a": base_values(seed=0)})
    info = protocol_with(ssim={"decimals": 6, "title": "structural similarity"})
    two = write_run(tmp_path / "two", {"b": base_values(seed=1)}, info)
    (section,) = group_sections(load_inputs([one, two]).runs)
    assert section.labels == ["a", "b"] and section.info("ssim").decimals == 4  # the first run's info
    same = write_run(tmp_path / "same", {"a": base_values(seed=0)}, info)
    comparison = compare(load_snapshot(one), load_snapshot(same))
    assert not comparison.mismatches and comparison.exit_code == 0


def compare_dirs(baseline, current, tolerances=None):
    return {(r.vae, r.metric): r for r in compare(load_snapshot(baseline), load_snapshot(current), tolerances).rows}


def test_a_flipped_direction_in_metrics_json_flips_compares_verdict(tmp_path):
    before = {"v": base_values(seed=0)}
    after = copy.deepcopy(before)
    after["v"]["lpips"] = before["v"]["lpips"] + 0.01  # every image 0.01 higher: worse by the shipped direction
    flip = protocol_with(lpips={"higher_is_better": True})
    pairs = {
        "shipped": (write_run(tmp_path / "b0", before), write_run(tmp_path / "c0", after)),
        "flipped": (write_run(tmp_path / "b1", before, flip), write_run(tmp_path / "c1", after, flip)),
    }
    rows = {k: compare_dirs(*dirs)[("v", "lpips")] for k, dirs in pairs.items()}
    assert rows["shipped"].verdict is Verdict.REGRESSED and rows["shipped"].higher_is_better is False
    assert rows["flipped"].verdict is Verdict.IMPROVED and rows["flipped"].higher_is_better is True


def test_compare_takes_the_default_tolerance_from_the_info_and_a_file_still_overrides_it(tmp_path):
    before = {"v": base_values(seed=0)}
    after = copy.deepcopy(before)
    after["v"]["psnr"] = before["v"]["psnr"] - 0.05  # beyond the shipped ±0.01 dB, within a stated ±0.1
    wide = protocol_with(psnr={"tolerance": {"abs": 0.1, "rel": 0.0}})
    row = compare_dirs(write_run(tmp_path / "b", before, wide), write_run(tmp_path / "c", after, wide))[("v", "psnr")]
    assert row.tolerance == "±0.1" and row.verdict is Verdict.PASS
    row = compare_dirs(write_run(tmp_path / "b0", before), write_run(tmp_path / "c0", after))[("v", "psnr")]
    assert row.tolerance == "±0.01" and row.verdict is Verdict.REGRESSED  # the info PSNR records
    user = tmp_path / "tol.yaml"
    user.write_text("metrics:\n  psnr: {abs: 0.001}\n")
    row = compare_dirs(tmp_path / "b", tmp_path / "c", load_tolerances(user))[("v", "psnr")]
    assert row.tolerance == "±0.001" and row.verdict is Verdict.REGRESSED  # the file beats the info
    assert default_tolerances().get("v", "psnr") == Tolerance(abs=0.01)  # without results: the shipped info


def test_a_baseline_file_carries_the_info_and_results_written_before_info_are_refused(tmp_path):
    before = {"v": base_values(seed=0)}
    after = copy.deepcopy(before)
    after["v"]["ssim"] = before["v"]["ssim"] - 0.001
    stated = protocol_with(ssim={"higher_is_better": False, "tolerance": {"abs": 0.01, "rel": 0.0}})
    path = write_baseline(load_snapshot(write_run(tmp_path / "b", before, stated)), tmp_path / "base.json")
    data = json.loads(path.read_text())
    assert data["info"]["ssim"]["tolerance"] == {"abs": 0.01, "rel": 0.0} and data["info"]["psnr"]["decimals"] == 2
    # the current run states nothing: the baseline's info decides (within ±0.01, and lower is better here)
    row = compare_dirs(path, write_run(tmp_path / "c", after))[("v", "ssim")]
    assert row.tolerance == "±0.01" and row.higher_is_better is False and row.verdict is Verdict.PASS
    # a baseline, and a run directory, written before metrics.json recorded the info: refused, naming the file
    del data["info"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    with pytest.raises(
        UnusableInput, match=r"old\.json is a malformed .*old\.json: info\.lpips=None; results written before"
    ):
        load_snapshot(old)
    protocol = json.loads((tmp_path / "c" / "metrics.json").read_text())
    del protocol["metrics"]["ssim"]["info"]
    (tmp_path / "c" / "metrics.json").write_text(json.dumps(protocol))
    with pytest.raises(ConfigError, match=r"c/metrics\.json: metrics\.ssim\.info=None; results written before"):
        load_snapshot(tmp_path / "c")
    with pytest.raises(ConfigError, match=r"c/metrics\.json: metrics\.ssim\.info=None; results written before"):
        group_sections(load_inputs([tmp_path / "c"]).runs)


# --- adding a metric of your own: one module (MAE above) and one YAML -------------------------------------


def test_a_metric_added_by_a_class_and_a_yaml_is_run_reported_and_compared(tmp_path, image_dir):
    conf = tmp_path / "conf" / "metrics"
    conf.mkdir(parents=True)
    (conf / "mae.yaml").write_text(f"defaults:\n  - default\n  - _self_\n\nmae:\n  _target_: {__name__}.MAE\n")
    mine = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "metrics=mae"]
    base = standin_run(tmp_path / "base", image_dir, 0.95, *mine)
    worse = standin_run(tmp_path / "worse", image_dir, 0.90, *mine)
    close = standin_run(tmp_path / "close", image_dir, 0.951, *mine)
    assert entries(base)["mae"]["info"] == MAE_INFO.to_dict() and entries(base)["mae"]["higher_is_better"] is False
    per_image = pd.read_csv(base / "per_image.csv")
    assert list(per_image.columns[2:5]) == ["psnr", "ssim", "mae"] and (per_image["mae"] > 0).all()

    md = (write_report([base], tmp_path / "rep", grids=False).parent / "report.md").read_text(encoding="utf-8")
    mean, std = per_image["mae"].mean(), per_image["mae"].std(ddof=1)
    assert "| MAE (8-bit levels) ↓ |" in md and f"{mean:.3f} ± {std:.3f}" in md

    rows = compare_dirs(base, worse)
    mae = rows[("v", "mae")]
    assert mae.higher_is_better is False and mae.tolerance == "±0.5" and mae.allowed == 0.5
    assert mae.current - mae.baseline > 0.5 and mae.verdict is Verdict.REGRESSED  # MAE up: worse
    mae = compare_dirs(base, close)[("v", "mae")]
    assert 0 < mae.baseline - mae.current < 0.5 and mae.verdict is Verdict.PASS  # within the declared ±0.5
    # the baseline file keeps the info: it compares without the run directory's metrics.json
    path = write_baseline(load_snapshot(base), tmp_path / "base.json")
    (base / "metrics.json").unlink()
    mae = compare_dirs(path, worse)[("v", "mae")]
    assert (mae.tolerance, mae.higher_is_better, mae.verdict) == ("±0.5", False, Verdict.REGRESSED)
