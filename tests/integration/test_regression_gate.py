"""The project's own regression gate: the committed TAEF2/Kodak baseline and its tolerances."""

from __future__ import annotations

import pytest

from evalvae.compare import load_snapshot, load_tolerances
from evalvae.compare.baseline import round_value
from tests.helpers import REPO, compose_run

BASELINE = REPO / "reports" / "baselines" / "taef2-kodak-256.json"
TOLERANCES = REPO / "reports" / "baselines" / "taef2-kodak-256.tolerances.yaml"


def test_committed_baseline_is_taef2_on_kodak_at_256():
    snap = load_snapshot(BASELINE)
    assert snap.protocol["dataset"]["name"] == "kodak" and snap.protocol["dataset"]["n_files"] == 24
    assert snap.protocol["dataset"]["resolution"] == 256 and snap.protocol["quantize"] is True
    assert set(snap.results) == {"taef2"} and set(snap.results["taef2"]) == {"psnr", "ssim"}
    for result in snap.results["taef2"].values():
        assert result.n == 24 and sorted(result.values) == [f"kodim{i:02d}.png" for i in range(1, 25)]
        assert result.higher_is_better is True
        assert result.mean == pytest.approx(sum(result.values.values()) / 24, abs=1e-5)
    sha = compose_run(["+vae=taef2"]).vae.taef2.sha256
    assert snap.vaes["taef2"]["weight_files"] == {"taef2_encoder.pth": sha.encoder, "taef2_decoder.pth": sha.decoder}
    assert snap.vaes["taef2"]["dtype"] == "fp32" and snap.vaes["taef2"]["device"] == "cpu"
    tol = load_tolerances(TOLERANCES)
    assert tol.alpha is None and tol.improvements == "fail"
    assert tol.get("taef2", "psnr").abs == 0.001 and tol.get("taef2", "ssim").abs == 5e-6


@pytest.mark.assets
def test_first_kodak_images_reproduce_the_baseline(tmp_path, taef2_dir, assets):
    """A quick slice of the CI gate: two images, each within the gate's tolerance of its baseline value."""
    from evalvae.run import run

    cfg = compose_run(
        [
            "+vae=taef2",
            f"vae.taef2.source={taef2_dir}",
            "dataset=folder",
            "dataset.name=kodak",
            f"dataset.path={assets / 'images' / 'kodak'}",
            "dataset.limit=2",
            "device=cpu",
            "workers=0",
        ]
    )
    current = load_snapshot(run(cfg, out_dir=tmp_path).out_dir)
    baseline, tol = load_snapshot(BASELINE), load_tolerances(TOLERANCES)
    for metric in ("psnr", "ssim"):
        now = current.results["taef2"][metric].values
        assert sorted(now) == ["kodim01.png", "kodim02.png"]
        for image, value in now.items():
            assert round_value(value) == pytest.approx(
                baseline.results["taef2"][metric].values[image], abs=tol.get("taef2", metric).abs
            )


def test_workflow_example_commands_parse():
    """The workflow users copy calls evalvae with overrides and flags that exist."""
    import shlex

    import yaml

    from evalvae.compare.cli import parser

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "vae-regression.yml").read_text())
    job = workflow["jobs"]["vae-regression"]
    env, steps = job["env"], {s.get("name"): s for s in job["steps"]}
    assert {"HF_HOME", "EVALVAE_CACHE"} <= set(env)
    cache = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache"))
    assert ".cache/huggingface" in cache["with"]["path"] and ".cache/evalvae" in cache["with"]["path"]

    def words(step: str) -> list[str]:
        command = steps[step]["run"]
        for key, value in env.items():
            command = command.replace(f'"${key}"', value).replace(f"${key}", value)
        return shlex.split(command)

    evaluate = words("Evaluate")
    assert evaluate[:4] == ["python", "-m", "evalvae", "run"]
    cfg = compose_run([w for w in evaluate[4:] if not w.startswith("hydra.")])
    assert set(cfg.vae) == {"ft-mse"} and cfg.device == "cpu" and cfg.dataset.resolution == 256
    run_dir = next(w.split("=", 1)[1] for w in evaluate if w.startswith("hydra.run.dir="))
    compare = words("Compare with the baseline")
    assert compare[:4] == ["python", "-m", "evalvae", "compare"]
    args = parser().parse_args(compare[4:])
    assert str(args.baseline) == env["BASELINE"] and [str(p) for p in args.current] == [run_dir]
    assert args.junit is not None and str(args.tolerances) == env["TOLERANCES"]
