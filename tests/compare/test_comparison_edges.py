"""compare at the edges: reruns with rFID/KID (reference provenance is not protocol) and PSNR = +inf."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from evalvae.compare import compare, load_snapshot, to_junit, to_markdown
from evalvae.compare.cli import run_compare
from evalvae.compare.render import to_json
from evalvae.compare.verdict import Verdict
from evalvae.run import run
from tests.compare_helpers import base_values, identity_vae, write_run
from tests.helpers import compose_run, evalvae_main


def strict_json(text: str):
    """json.loads that refuses the non-standard NaN/Infinity tokens Python would otherwise write and read."""

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def evaluate(out, image_dir, *extra, noise=0.02):
    """A real run of an identity stand-in (with ``noise``, reconstructions are close but not exact)."""
    cfg = compose_run(
        [
            *identity_vae("v", noise),
            "dataset=folder",
            f"dataset.path={image_dir}",
            "dataset.resolution=32",
            "workers=0",
            *extra,
        ]
    )
    return run(cfg, out_dir=out).out_dir


def set_level(cache, *extra):
    return [
        "metrics=all",
        "metrics.fid.extractor=tests.helpers.TinyExtractor",
        "metrics.fid.kid_subsets=10",
        f"cache_dir={cache}",
        *extra,
    ]


def reference(run_dir, metric="rfid"):
    return json.loads((run_dir / "metrics.json").read_text())["metrics"][metric]["reference"]


def test_reruns_with_rfid_and_kid_compare_clean_with_or_without_a_shared_cache(tmp_path, image_dir):
    first = evaluate(tmp_path / "first", image_dir, *set_level(tmp_path / "cache"))
    again = evaluate(
        tmp_path / "again", image_dir, *set_level(tmp_path / "cache")
    )  # reference statistics from the cache
    apart = evaluate(tmp_path / "apart", image_dir, *set_level(tmp_path / "other-cache"))  # computed again elsewhere
    assert reference(first)["source"] == "computed" and reference(again)["source"] == "cache"
    assert reference(first)["path"] != reference(apart)["path"] and reference(first)["key"] == reference(apart)["key"]

    proc = evalvae_main(["compare", str(first), str(again), "--format", "md"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "protocol mismatch" not in proc.stderr and "| v | rfid ↓ |" in proc.stdout
    for a, b in ((first, apart), (apart, again)):
        result = compare(load_snapshot(a), load_snapshot(b))
        assert result.exit_code == 0 and not result.mismatches
        verdicts = {r.metric: r.verdict for r in result.rows}
        assert verdicts["rfid"] is Verdict.PASS and verdicts["kid"] is Verdict.PASS and verdicts["psnr"] is Verdict.PASS

    baseline = tmp_path / "baseline.json"
    assert run_compare(baseline, [first], update=True) == 0
    assert (
        json.loads(baseline.read_text())["protocol"]["metrics"]["rfid"]["reference"]["source"] == "computed"
    )  # recorded
    assert run_compare(baseline, [again]) == 0
    # what the statistics are stays protocol: other KID settings, and the reference key
    other = evaluate(tmp_path / "subsets", image_dir, *set_level(tmp_path / "cache", "metrics.fid.kid_subsets=5"))
    assert compare(load_snapshot(first), load_snapshot(other)).mismatches == [
        "metrics.kid.subsets: 10 in the baseline, 5 now"
    ]
    data = json.loads((other / "metrics.json").read_text())
    data["metrics"] = {**data["metrics"], "kid": json.loads((first / "metrics.json").read_text())["metrics"]["kid"]}
    data["metrics"]["rfid"]["reference"]["key"] = "0" * 64
    (other / "metrics.json").write_text(json.dumps(data))
    assert compare(load_snapshot(first), load_snapshot(other)).mismatches[0].startswith("metrics.rfid.reference.key: ")


@pytest.mark.slow
def test_reruns_with_the_real_networks_read_from_other_files_compare_clean(tmp_path, image_dir, real_weights):
    """Real LPIPS-alex and FID Inception; the second run reads the LPIPS backbone from a copy elsewhere."""
    copy = tmp_path / "elsewhere" / "alex.pth"
    copy.parent.mkdir()
    shutil.copy(real_weights / "lpips" / "alexnet_features.pth", copy)

    def real(out, lpips_file):
        return evaluate(
            tmp_path / out,
            image_dir,
            "metrics=all",
            f"metrics.lpips.backbone_weights={lpips_file}",
            f"metrics.fid.weights={real_weights / 'fid' / 'pt_inception-2015-12-05_torch-fidelity.pth'}",
            f"cache_dir={tmp_path / out / 'cache'}",
            "dataset.limit=4",
        )

    a, b = real("a", real_weights / "lpips" / "alexnet_features.pth"), real("b", copy)
    proto_a, proto_b = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (a, b))
    assert proto_a["lpips"] != proto_b["lpips"], "the weights file read is recorded"
    assert proto_a["rfid"]["reference"] != proto_b["rfid"]["reference"]
    result = compare(load_snapshot(a), load_snapshot(b))
    assert result.exit_code == 0 and not result.mismatches, to_markdown(result)
    assert {r.metric for r in result.rows if r.verdict is Verdict.PASS} == {
        "psnr",
        "ssim",
        "lpips",
        "rfid",
        "kid",
        "bpp",
    }


def test_exact_runs_compare_as_unchanged_everywhere_and_moves_to_or_from_them_as_changes(tmp_path, image_dir):
    exact = evaluate(tmp_path / "exact", image_dir, noise=0.0)
    again = evaluate(tmp_path / "again", image_dir, noise=0.0)
    assert load_snapshot(exact).results["v"]["psnr"].mean == np.inf

    proc = evalvae_main(
        ["compare", str(exact), str(again), "--format", "json", "--junit", str(tmp_path / "junit.xml")], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["metric"]: r for r in strict_json(proc.stdout)["rows"]}
    assert rows["psnr"]["verdict"] == "pass" and rows["psnr"]["baseline"] == rows["psnr"]["current"] == "inf"
    assert rows["psnr"]["delta"] == 0 and "6 image(s) ∞ on both sides" in rows["psnr"]["detail"]
    assert ET.parse(tmp_path / "junit.xml").getroot().get("failures") == "0"

    result = compare(load_snapshot(exact), load_snapshot(again))
    psnr = next(line for line in to_markdown(result).splitlines() if line.startswith("| v | psnr"))
    assert "| ∞ | ∞ | +0 |" in psnr and "✅ pass" in psnr

    baseline = tmp_path / "baseline.json"
    assert run_compare(baseline, [exact], update=True) == 0
    stored = strict_json(baseline.read_text())["results"]["v"]["psnr"]
    assert stored["mean"] == "inf" and set(stored["values"].values()) == {"inf"} and stored["std"] is None
    assert load_snapshot(baseline).results["v"]["psnr"].values == load_snapshot(exact).results["v"]["psnr"].values
    assert run_compare(baseline, [again]) == 0

    # a move to or from an exact reconstruction: infinitely worse or better
    close = evaluate(tmp_path / "close", image_dir, noise=0.02)
    lost = compare(load_snapshot(exact), load_snapshot(close))
    psnr = next(r for r in lost.rows if r.metric == "psnr")
    assert psnr.verdict is Verdict.REGRESSED and psnr.delta == -np.inf and lost.exit_code == 1
    assert psnr.detail.startswith("worse: img00.png ∞ -> ") and "and 3 more" in psnr.detail
    gained = compare(load_snapshot(close), load_snapshot(exact))
    assert next(r for r in gained.rows if r.metric == "psnr").verdict is Verdict.IMPROVED and gained.exit_code == 0
    assert strict_json(to_json(gained))["rows"][0]["delta"] == "inf"
    assert "+∞" in to_junit(gained)


def with_exact(values: dict, images: list[int]) -> dict:
    psnr = values["psnr"].copy()
    psnr[images] = np.inf
    return dict(values, psnr=psnr)


def test_a_mean_of_inf_does_not_hide_the_other_images(tmp_path):
    """Hand-made runs: image 0 exact on both sides; the others regress, or one more image loses its +inf."""
    values = base_values()
    base = write_run(tmp_path / "base", {"v": with_exact(values, [0])})
    worse = dict(values, psnr=values["psnr"] - 0.3)
    result = compare(load_snapshot(base), load_snapshot(write_run(tmp_path / "worse", {"v": with_exact(worse, [0])})))
    psnr = next(r for r in result.rows if r.metric == "psnr")
    assert psnr.baseline == psnr.current == np.inf and psnr.delta == 0
    assert psnr.verdict is Verdict.REGRESSED and result.exit_code == 1
    assert "1 image(s) ∞ on both sides; the 11 finite on both" in psnr.detail and psnr.noise.endswith("n=11")
    assert psnr.allowed == pytest.approx(0.01)

    two = write_run(tmp_path / "two", {"v": with_exact(values, [0, 5])})
    result = compare(load_snapshot(two), load_snapshot(base))
    psnr = next(r for r in result.rows if r.metric == "psnr")
    assert psnr.baseline == psnr.current == np.inf and psnr.verdict is Verdict.REGRESSED
    assert f"worse: img05.png ∞ -> {values['psnr'][5]:.6g}" in psnr.detail

    # a baseline without per-image values compares the means alone
    baseline = tmp_path / "means.json"
    assert run_compare(baseline, [base], update=True) == 0
    data = strict_json(baseline.read_text())
    for r in data["results"]["v"].values():
        r.pop("values")
    baseline.write_text(json.dumps(data))
    assert compare(load_snapshot(baseline), load_snapshot(two)).exit_code == 0
    finite = write_run(tmp_path / "finite", {"v": values})
    result = compare(load_snapshot(baseline), load_snapshot(finite))
    assert next(r for r in result.rows if r.metric == "psnr").verdict is Verdict.REGRESSED


def test_images_that_turn_non_finite_are_a_regression_not_a_protocol_change(tmp_path, image_dir):
    def standin_run(out, *params):
        cfg = compose_run(
            [
                "+vae.v._target_=tests.run_standins.Identity",
                "+vae.v.gain=0.98",
                *params,
                "dataset=folder",
                f"dataset.path={image_dir}",
                "dataset.resolution=32",
                "workers=0",
            ]
        )
        return run(cfg, out_dir=out).out_dir

    good = standin_run(tmp_path / "good")
    broken = standin_run(tmp_path / "broken", "+vae.v.nan_images=[1,4]")
    result = compare(load_snapshot(good), load_snapshot(broken))
    psnr = next(r for r in result.rows if r.metric == "psnr")
    assert psnr.verdict is Verdict.REGRESSED and result.exit_code == 1
    assert psnr.detail.startswith("2 image(s) now reconstructed non-finite") and "img01.jpg" in psnr.detail
    # and a baseline file written from the broken run keeps those images as non-finite, not as absent
    baseline = tmp_path / "baseline.json"
    assert run_compare(baseline, [broken], update=True) == 0
    assert run_compare(baseline, [broken]) == 0
    fixed = compare(load_snapshot(baseline), load_snapshot(good))
    psnr = next(r for r in fixed.rows if r.metric == "psnr")
    assert (
        fixed.exit_code == 0 and psnr.verdict is Verdict.IMPROVED and "finite now (img01.jpg, img04.png)" in psnr.detail
    )
