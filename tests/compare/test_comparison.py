"""compare(): verdicts per (vae, metric) and bench case, protocol checks, baseline files."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from evalvae.compare import compare, load_snapshot, merge, parse_tolerances, write_baseline
from evalvae.compare.baseline import UnusableInput
from evalvae.compare.verdict import Verdict
from tests.compare_helpers import PROTOCOL, base_values, bench_row, set_level_row, write_bench, write_run


def verdicts(comparison) -> dict[tuple[str, str], Verdict]:
    return {(r.vae, r.name): r.verdict for r in comparison.rows}


def run_pair(tmp_path, current: dict, baseline: dict | None = None, **kwargs):
    base = write_run(tmp_path / "base", baseline or {"vae": base_values()})
    cur = write_run(tmp_path / "cur", current, **kwargs)
    return load_snapshot(base), load_snapshot(cur)


@pytest.mark.parametrize("metric", ["psnr", "ssim", "lpips"])  # higher, higher, lower is better
@pytest.mark.parametrize(
    "move, verdict, code", [("none", Verdict.PASS, 0), ("worse", Verdict.REGRESSED, 1), ("better", Verdict.IMPROVED, 0)]
)
def test_pass_regress_improve_for_every_direction(tmp_path, metric, move, verdict, code):
    values = base_values()
    higher = {"psnr": True, "ssim": True, "lpips": False}[metric]
    step = {"none": 0.0, "worse": -1.0, "better": 1.0}[move] * (1 if higher else -1)
    moved = dict(values, **{metric: values[metric] + step * 0.05 * np.abs(values[metric]).mean()})
    b, c = run_pair(tmp_path, {"vae": moved}, {"vae": values})
    result = compare(b, c)
    assert verdicts(result)[("vae", metric)] is verdict
    assert result.exit_code == code
    others = [v for (_, m), v in verdicts(result).items() if m != metric]
    assert others == [Verdict.PASS, Verdict.PASS]


def test_move_beyond_tolerance_but_within_the_noise(tmp_path):
    values = base_values(n=12)
    rng = np.random.default_rng(5)
    noisy = dict(values, psnr=values["psnr"] + rng.normal(0, 1.0, 12) - 0.05)  # mean moves, per image it is noise
    b, c = run_pair(tmp_path, {"vae": noisy}, {"vae": values})
    row = next(r for r in compare(b, c).rows if r.metric == "psnr")
    assert abs(row.delta) > row.allowed and row.p_value > 0.05
    assert row.verdict is Verdict.NOISE
    strict = compare(b, c, parse_tolerances({"alpha": None}))
    assert verdicts(strict)[("vae", "psnr")] in (Verdict.REGRESSED, Verdict.IMPROVED)


def test_per_vae_tolerance_and_improvements_that_fail(tmp_path):
    values = base_values()
    better = dict(values, psnr=values["psnr"] + 0.05)
    b, c = run_pair(tmp_path, {"a": better, "b": better}, {"a": values, "b": values})
    tol = parse_tolerances({"vaes": {"a": {"psnr": {"abs": 0.1}}}, "improvements": "fail"})
    result = compare(b, c, tol)
    assert verdicts(result)[("a", "psnr")] is Verdict.PASS
    assert verdicts(result)[("b", "psnr")] is Verdict.IMPROVED
    assert result.exit_code == 1 and any("update the baseline" in n for n in result.notes)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda p: p["dataset"].update(resolution=255), "dataset.resolution"),
        (lambda p: p.update(quantize=False), "quantize"),
        (lambda p: p["dataset"].update(name="coco"), "dataset.name"),
        (lambda p: p["metrics"]["ssim"].update(window="gaussian, sigma=2.0, 11x11"), "metrics.ssim.window"),
        (lambda p: p["metrics"]["lpips"].update(higher_is_better=True), "metrics.lpips.higher_is_better"),
    ],
)
def test_protocol_mismatch_is_never_compared(tmp_path, change, fragment):
    protocol = copy.deepcopy(PROTOCOL)
    change(protocol)
    b, c = run_pair(tmp_path, {"vae": base_values()}, protocol=protocol)
    result = compare(b, c)
    assert result.exit_code == 2 and result.status == "unusable"
    assert any(m.startswith(fragment) for m in result.mismatches)
    assert all(r.verdict is Verdict.MISMATCH for r in result.rows)


def test_root_and_implementation_changes_are_not_mismatches(tmp_path):
    protocol = copy.deepcopy(PROTOCOL)
    protocol["dataset"]["root"] = "/elsewhere/kodak"
    protocol["metrics"]["ssim"]["implementation"] = "torchmetrics float64"
    b, c = run_pair(tmp_path, {"vae": base_values()}, protocol=protocol)
    result = compare(b, c)
    assert result.exit_code == 0 and not result.mismatches
    assert any("metrics.ssim.implementation" in n for n in result.notes)


def test_n_and_image_set_mismatch(tmp_path):
    values = base_values(n=12)
    fewer = {m: v[:11] for m, v in values.items()}
    b, c = run_pair(tmp_path, {"vae": fewer})
    result = compare(b, c)
    assert result.exit_code == 2 and "N differs: 12 in the baseline, 11 now" in result.rows[0].detail
    renamed = [f"other{i:02d}.png" for i in range(12)]
    b, c = run_pair(tmp_path / "2", {"vae": values}, images=renamed)
    result = compare(b, c)
    assert result.exit_code == 2 and "image sets differ" in result.rows[0].detail


def test_missing_failed_and_new_results(tmp_path):
    values = base_values()
    b, c = run_pair(
        tmp_path,
        {"a": {"psnr": values["psnr"], "ssim": values["ssim"]}, "new": values},
        {"a": values, "b": values},
        vaes=[
            {"vae": "a", "status": "ok"},
            {"vae": "b", "status": "failed", "error": "weights unavailable"},
            {"vae": "new", "status": "ok"},
        ],
    )
    result = compare(b, c)
    v = verdicts(result)
    assert v[("a", "lpips")] is Verdict.MISSING and v[("b", "psnr")] is Verdict.MISSING
    assert v[("new", "psnr")] is Verdict.NEW and v[("a", "psnr")] is Verdict.PASS
    assert "b failed now: weights unavailable" in next(r.detail for r in result.rows if r.vae == "b")
    assert result.exit_code == 2


def test_set_level_metric_without_per_image_values(tmp_path):
    values = {"vae": {"psnr": base_values()["psnr"]}}
    base = write_run(tmp_path / "b", values, extra_summary=[set_level_row("vae", "rfid", 2.0)])
    cur = write_run(tmp_path / "c", values, extra_summary=[set_level_row("vae", "rfid", 2.5)])
    result = compare(load_snapshot(base), load_snapshot(cur))
    row = next(r for r in result.rows if r.metric == "rfid")
    assert row.verdict is Verdict.REGRESSED and row.higher_is_better is False  # direction from the known table
    assert row.p_value is None and row.noise == "no per-image values"
    assert result.exit_code == 1


def test_speed_verdicts(tmp_path):
    base = write_bench(
        tmp_path / "b",
        [
            bench_row(op="decode", median=10.0, iqr=0.5),
            bench_row(op="encode", median=10.0, iqr=0.5),
            bench_row(op="roundtrip", median=10.0, iqr=5.0),
            bench_row(vae="big", median=50.0, status="ok"),
            bench_row(vae="mem", peak_mem_mb=1000.0),
            bench_row(vae="nan", nonfinite=0),
        ],
    )
    cur = write_bench(
        tmp_path / "c",
        [
            bench_row(op="decode", median=14.0, iqr=0.6),  # +40% > 30% and > IQR
            bench_row(op="encode", median=6.0, iqr=0.5),  # faster
            bench_row(op="roundtrip", median=14.0, iqr=6.0),  # +40% but within the IQR
            bench_row(vae="big", median=math.nan, status="oom"),
            bench_row(vae="mem", peak_mem_mb=1200.0),
            bench_row(vae="nan", nonfinite=3),
        ],
    )
    result = compare(load_snapshot(base), load_snapshot(cur))
    v = {(r.vae, r.case.split()[0], r.metric): r.verdict for r in result.rows}
    assert v[("tiny", "decode", "ms_per_image")] is Verdict.REGRESSED
    assert v[("tiny", "encode", "ms_per_image")] is Verdict.IMPROVED
    assert v[("tiny", "roundtrip", "ms_per_image")] is Verdict.NOISE
    assert v[("big", "decode", "status")] is Verdict.REGRESSED
    assert v[("mem", "decode", "peak_mem_mb")] is Verdict.REGRESSED
    assert v[("nan", "decode", "nonfinite")] is Verdict.REGRESSED
    assert result.exit_code == 1


def test_speed_device_mismatch_and_missing_case(tmp_path):
    base = write_bench(tmp_path / "b", [bench_row(op="decode"), bench_row(op="encode")])
    cur = write_bench(tmp_path / "c", [bench_row(op="decode", device="NVIDIA A100")])
    result = compare(load_snapshot(base), load_snapshot(cur))
    assert [r.verdict for r in result.rows] == [Verdict.MISMATCH, Verdict.MISSING]
    assert result.exit_code == 2


def test_baseline_file_round_trip(tmp_path):
    values = base_values(n=24)
    run = write_run(tmp_path / "run", {"vae": values})
    bench = write_bench(tmp_path / "bench", [bench_row()])
    snap = merge([load_snapshot(run), load_snapshot(bench)])
    path = write_baseline(snap, tmp_path / "baselines" / "b.json", reason="first")
    data = json.loads(path.read_text())
    assert data["format"] == "evalvae-baseline/1" and data["reason"] == "first"
    assert "root" not in data["protocol"]["dataset"] and "source" not in data["vaes"]["vae"]
    psnr = data["results"]["vae"]["psnr"]
    assert psnr["mean"] == pytest.approx(values["psnr"].mean(), rel=1e-15)  # means at full precision
    assert all(len(f"{v:.15g}".replace(".", "").lstrip("0")) <= 6 for v in psnr["values"].values())
    assert psnr["values"]["img03.png"] == pytest.approx(values["psnr"][3], rel=1e-5)
    assert data["speed"][0]["ms_per_image_median"] == 10.0 and data["speed"][0]["resolution"] == "512"
    result = compare(load_snapshot(path), snap)
    assert result.exit_code == 0 and all(r.verdict is Verdict.PASS for r in result.rows)
    assert all(r.p_value == 1.0 for r in result.rows if r.kind == "quality")  # rounding is not a difference


def test_baseline_write_is_atomic(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", {"vae": base_values()})
    path = write_baseline(load_snapshot(run), tmp_path / "b.json")
    before = path.read_bytes()

    def crash(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[:100])
        raise OSError("disk full")

    monkeypatch.setattr(type(path), "write_text", crash)
    with pytest.raises(OSError, match="disk full"):
        write_baseline(load_snapshot(run), path, reason="again")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["b.json"]


def test_unusable_inputs(tmp_path):
    with pytest.raises(UnusableInput, match="does not exist"):
        load_snapshot(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnusableInput, match="neither summary.csv"):
        load_snapshot(tmp_path / "empty")
    (tmp_path / "other.json").write_text('{"format": "something"}')
    with pytest.raises(UnusableInput, match="not an evalvae baseline"):
        load_snapshot(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text(
        '{"format": "evalvae-baseline/1", "results": {"v": {"psnr": {"mean": 1.0}}}, "speed": [{"vae": "v"}]}'
    )
    with pytest.raises(UnusableInput, match="malformed evalvae baseline"):
        load_snapshot(tmp_path / "broken.json")
    run = write_run(tmp_path / "run", {"vae": base_values()})
    (run / "metrics.json").unlink()
    with pytest.raises(UnusableInput, match="no metrics.json"):
        load_snapshot(run)
    with pytest.raises(UnusableInput, match="hold quality results"):
        merge([load_snapshot(write_run(tmp_path / f"r{i}", {"vae": base_values()})) for i in range(2)])


@pytest.mark.parametrize(
    "now, verdict", [({"precision": "bf16", "dtype": "bf16"}, Verdict.MISMATCH), ({"precision": "fp32"}, Verdict.PASS)]
)
def test_precision_is_protocol(tmp_path, now, verdict):
    """A VAE run in bf16 (or TF32) is not compared with its fp32 baseline; a baseline written before the precision
    was recorded reads its dtype (fp32) as the precision, so an fp32 run compares."""
    old = [{"vae": v, "status": "ok", "dtype": "fp32", "device": "cpu"} for v in ("a", "b")]
    base = write_run(tmp_path / "base", {"a": base_values(), "b": base_values()}, vaes=old)
    cur = write_run(tmp_path / "cur", {"a": base_values(), "b": base_values()}, vaes=[{**old[0], **now}, old[1]])
    result = compare(load_snapshot(base), load_snapshot(cur))
    rows = verdicts(result)
    assert {rows[("a", m)] for m in ("psnr", "ssim", "lpips")} == {verdict}
    assert {rows[("b", m)] for m in ("psnr", "ssim", "lpips")} == {Verdict.PASS}
    if verdict is Verdict.MISMATCH:
        assert result.exit_code == 2
        assert result.mismatches == ["a: precision fp32 in the baseline, bf16 now: its numbers are not compared"]
        assert {r.detail for r in result.rows if r.vae == "a"} == {"another precision (vaes.json)"}
    else:
        assert result.exit_code == 0 and not result.mismatches
