"""``evalvae compare`` as CI runs it: exit codes, markdown, JUnit, step summary, baseline updates."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from evalvae.compare import compare, load_snapshot, to_junit, to_markdown, to_text
from evalvae.compare.cli import run_compare
from evalvae.errors import ConfigError
from tests.compare_helpers import PROTOCOL, base_values, bench_row, write_bench, write_run
from tests.helpers import evalvae_main


@pytest.fixture()
def dirs(tmp_path):
    """A baseline run, a run that regressed PSNR, one at another resolution, and a bench directory."""
    values = base_values()
    protocol = copy.deepcopy(PROTOCOL)
    protocol["dataset"]["resolution"] = 512
    worse = dict(values, psnr=values["psnr"] - 0.2)
    return {
        "base": write_run(tmp_path / "base", {"sd-vae": values}),
        "same": write_run(tmp_path / "same", {"sd-vae": values}),
        "worse": write_run(tmp_path / "worse", {"sd-vae": worse}),
        "other": write_run(tmp_path / "other", {"sd-vae": values}, protocol=protocol),
        "bench": write_bench(tmp_path / "bench", [bench_row(vae="sd-vae", median=12.0)]),
        "tmp": tmp_path,
    }


def test_markdown_table_content(dirs):
    result = compare(load_snapshot(dirs["base"]), load_snapshot(dirs["worse"]))
    md = to_markdown(result)
    assert md.startswith("### evalvae compare: ❌ failed (1 regression)")
    assert "| VAE | metric | baseline | current | Δ | Δ % | allowed | noise | verdict |" in md
    psnr = next(line for line in md.splitlines() if line.startswith("| sd-vae | psnr ↑"))
    cells = [c.strip() for c in psnr.strip("|").split("|")]
    assert float(cells[2]) == pytest.approx(base_values()["psnr"].mean(), abs=1e-4)
    assert cells[4] == "-0.2" and cells[6] == "±0.01" and cells[8] == "❌ regressed"
    assert cells[7].startswith("p=") and cells[7].endswith("n=12")
    assert "| sd-vae | lpips ↓ |" in md and "✅ pass" in md
    assert "Protocol: dataset `kodak` (12 files) at 256 px, quantize=True." in md


def test_markdown_lists_protocol_mismatches(dirs):
    md = to_markdown(compare(load_snapshot(dirs["base"]), load_snapshot(dirs["other"])))
    assert "⚠️ unusable input" in md and "**Protocol mismatch: the results were not compared.**" in md
    assert "- `dataset.resolution: 256 in the baseline, 512 now`" in md
    assert "| -- |" not in md and "⚠️ mismatch (protocol differs)" in md


def test_junit_parses_with_one_testcase_per_row(dirs):
    cur = load_snapshot(dirs["worse"])
    cur.speed = load_snapshot(dirs["bench"]).speed
    base = load_snapshot(dirs["base"])
    base.speed = load_snapshot(
        write_bench(dirs["tmp"] / "b2", [bench_row(vae="sd-vae", median=12.0), bench_row(vae="sd-vae", op="encode")])
    ).speed
    result = compare(base, cur)
    root = ET.fromstring(to_junit(result))
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"evalvae.compare.protocol", "evalvae.compare.quality", "evalvae.compare.speed"}
    quality = {c.get("name"): c for c in suites["evalvae.compare.quality"].findall("testcase")}
    assert set(quality) == {"psnr", "ssim", "lpips"}
    assert all(c.get("classname") == "evalvae.compare.quality.sd-vae" for c in quality.values())
    failure = quality["psnr"].find("failure")
    assert failure is not None and "regressed" in failure.get("message") and "allowed ±0.01" in failure.get("message")
    assert quality["ssim"].find("failure") is None
    speed = suites["evalvae.compare.speed"].findall("testcase")
    assert len(speed) == len([r for r in result.rows if r.kind == "speed"]) == 3  # ms, peak memory, missing encode
    assert sum(c.find("error") is not None for c in speed) == 1
    for suite in suites.values():
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases)
        assert int(suite.get("errors")) == sum(c.find("error") is not None for c in cases)
    assert int(root.get("tests")) == 1 + 3 + 3 and int(root.get("failures")) == 1 and int(root.get("errors")) == 1


@pytest.mark.parametrize(
    "current, code, word",
    [("same", 0, "passed"), ("worse", 1, "failed (1 regression)"), ("other", 2, "unusable input")],
)
def test_cli_exit_codes_and_step_summary(dirs, monkeypatch, current, code, word):
    summary = dirs["tmp"] / "step-summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = dirs["tmp"] / "reports" / "junit.xml"
    proc = evalvae_main(["compare", str(dirs["base"]), str(dirs[current]), "--junit", str(junit)], cwd=dirs["tmp"])
    assert proc.returncode == code, proc.stderr
    result = compare(load_snapshot(dirs["base"]), load_snapshot(dirs[current]))
    assert proc.stdout == to_text(result)  # the A/B table
    assert proc.stdout.startswith(f"A (baseline): {dirs['base']}\nB (current):  {dirs[current]}\n")
    assert proc.stderr.splitlines()[-1] == f"evalvae compare: {word} (exit status {code})"
    md = to_markdown(result)
    text = summary.read_text()  # the step summary is markdown, whatever stdout shows
    assert text.startswith("earlier step\n### evalvae compare:") and md in text and word in md.splitlines()[0]
    ET.parse(junit)
    if code == 1:
        assert "sd-vae psnr regressed: " in proc.stderr
    if code == 2:
        assert "protocol mismatch: dataset.resolution" in proc.stderr


def test_text_is_an_ab_table_of_every_metric(dirs):
    c = compare(load_snapshot(dirs["base"]), load_snapshot(dirs["worse"]))
    lines = to_text(c).splitlines()
    assert lines[:2] == [f"A (baseline): {dirs['base']}", f"B (current):  {dirs['worse']}"]
    header = next(i for i, line in enumerate(lines) if line.startswith("VAE "))
    assert lines[header].split() == ["VAE", "metric", "A", "B", "Δ", "Δ", "%", "tolerance", "noise", "verdict"]
    rows = {line.split()[1]: line for line in lines[header + 1 : header + 4]}
    assert set(rows) == {"psnr", "ssim", "lpips"}
    psnr = rows["psnr"]
    base = base_values()["psnr"].mean()
    cells = psnr.split()
    assert float(cells[3]) == pytest.approx(base, abs=1e-4) and float(cells[4]) == pytest.approx(base - 0.2, abs=1e-4)
    assert cells[5:8] == ["-0.2", "-0.69%", "±0.01"] and psnr.endswith("FAIL regressed")
    assert rows["ssim"].endswith("  pass") and "FAIL" not in rows["ssim"]
    # aligned: numbers end where their heading does, text starts where its heading does
    table = lines[header : header + 4]
    assert len({line.index("±") + len(line.split("±")[1].split()[0]) + 1 for line in table[1:]}) == 1
    assert {line.index("p=") for line in table[1:]} == {table[0].index("noise")}
    at = table[0].index("verdict")
    assert [line[at - 1] + line[at:] for line in table[1:]] == [" pass", " FAIL regressed", " pass"]
    assert "|" not in "\n".join(lines) and "✅" not in "\n".join(lines)  # plain text, not markdown


def test_cli_json_format_and_usage_errors(dirs):
    out = evalvae_main(["compare", str(dirs["base"]), str(dirs["worse"]), "--format", "json"], cwd=dirs["tmp"])
    data = json.loads(out.stdout)
    assert out.returncode == 1 and data["exit_code"] == 1 and data["status"] == "failed"
    assert {r["metric"]: r["verdict"] for r in data["rows"]} == {"psnr": "regressed", "ssim": "pass", "lpips": "pass"}
    missing = evalvae_main(["compare", str(dirs["tmp"] / "nope.json"), str(dirs["same"])], cwd=dirs["tmp"])
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    usage = evalvae_main(["compare", str(dirs["base"]), str(dirs["same"]), "--reason", "x"], cwd=dirs["tmp"])
    assert usage.returncode == 2 and "--reason and --force go with --update-baseline" in usage.stderr


def test_junit_on_stdout_and_tolerance_files(dirs, capsys):
    assert run_compare(dirs["base"], [dirs["same"]], fmt="junit") == 0
    assert ET.fromstring(capsys.readouterr().out).get("failures") == "0"
    tol = dirs["tmp"] / "tol.yaml"
    tol.write_text("metrics: {psnr: {absolute: 1}}\n")
    with pytest.raises(ConfigError, match="metrics.psnr key='absolute'; choose one of abs, rel"):
        run_compare(dirs["base"], [dirs["same"]], tol)
    tol.write_text("metrics: {psnr: {abs: 0.5}}\n")
    assert run_compare(dirs["base"], [dirs["worse"]], tol) == 0
    assert "✅ pass" in capsys.readouterr().out


def test_update_baseline(dirs, capsys):
    path = dirs["tmp"] / "baselines" / "sd-vae.json"
    assert run_compare(path, [dirs["base"], dirs["bench"]], update=True, reason="first") == 0
    first = json.loads(path.read_text())
    assert first["reason"] == "first" and len(first["speed"]) == 1 and first["results"]["sd-vae"]["psnr"]["n"] == 12
    assert run_compare(path, [dirs["base"], dirs["bench"]]) == 0
    assert f"Baseline `{path}` (first), current" in capsys.readouterr().out
    # a regression is accepted on purpose: compared, reported, then written
    assert run_compare(path, [dirs["worse"], dirs["bench"]], update=True, reason="new decoder") == 0
    updated = json.loads(path.read_text())
    assert updated["reason"] == "new decoder"
    assert updated["results"]["sd-vae"]["psnr"]["mean"] == pytest.approx(
        first["results"]["sd-vae"]["psnr"]["mean"] - 0.2
    )
    # a protocol change is refused unless forced; the file is left as it was
    before = path.read_bytes()
    proc = evalvae_main(
        ["compare", str(path), str(dirs["other"]), str(dirs["bench"]), "--update-baseline"], cwd=dirs["tmp"]
    )
    assert proc.returncode == 2 and "refusing to update" in proc.stderr and path.read_bytes() == before
    proc = evalvae_main(
        ["compare", str(path), str(dirs["other"]), str(dirs["bench"]), "--update-baseline", "--force"], cwd=dirs["tmp"]
    )
    assert proc.returncode == 0 and json.loads(path.read_text())["protocol"]["dataset"]["resolution"] == 512
    assert sorted(p.name for p in path.parent.iterdir()) == ["sd-vae.json"]  # no temporary files left


def test_update_baseline_needs_a_json_path(dirs):
    proc = evalvae_main(
        ["compare", str(dirs["tmp"] / "b.yaml"), str(dirs["same"]), "--update-baseline"], cwd=dirs["tmp"]
    )
    assert proc.returncode == 2 and "must end in .json" in proc.stderr
    proc = evalvae_main(["compare", str(dirs["same"]), str(dirs["same"]), "--update-baseline"], cwd=dirs["tmp"])
    assert proc.returncode == 2 and "is a directory" in proc.stderr


def test_noise_free_real_run_against_its_own_baseline(golden_recon, tmp_path):
    """A real run directory (tiny models) makes a baseline that it passes; another resolution is refused."""
    base = golden_recon["r32"]
    baseline = tmp_path / "b.json"
    assert run_compare(baseline, [base], update=True) == 0
    result = compare(load_snapshot(baseline), load_snapshot(base))
    assert result.exit_code == 0 and [r.verdict.value for r in result.rows] == ["pass"] * 6  # psnr, ssim, bpp of 2
    assert all(r.p_value == 1.0 for r in result.rows)  # the baseline file keeps what the run wrote
    assert compare(load_snapshot(baseline), load_snapshot(golden_recon["r48"])).mismatches == [
        "dataset.resolution: 32 in the baseline, 48 now"
    ]
    per_image = load_snapshot(base).results["taef2"]["psnr"].values
    assert len(per_image) == 6 and np.isfinite(list(per_image.values())).all()
