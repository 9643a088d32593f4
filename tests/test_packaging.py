"""conf/ and TAEF2's weights reach a non-editable install, so `python -m evalvae run` works from any directory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO
from tests.integration.test_default_run import UPSTREAM_SHA256


@pytest.mark.slow  # builds and installs a wheel
def test_wheel_carries_the_configs_and_runs_from_elsewhere(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = wheels.glob("evalvae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "evalvae/conf/run.yaml" in names and "evalvae/conf/vae/taef2.yaml" in names
    assert "evalvae/conf/dataset/folder.yaml" in names and "evalvae/conf/hydra/job_logging/evalvae.yaml" in names
    assert "evalvae/report/templates/report.html.j2" in names
    assert "evalvae/t2i/builtin_prompts.csv" in names and "evalvae/conf/task/t2i.yaml" in names
    shipped = {f"evalvae/vae/weights/taef2/{n}" for n in ("taef2_encoder.pth", "taef2_decoder.pth", "LICENSE")}
    assert shipped <= set(names), shipped - set(names)
    with zipfile.ZipFile(wheel) as z:
        assert z.read("evalvae/vae/weights/taef2/LICENSE").startswith(b"MIT License")
        for part, sha in UPSTREAM_SHA256.items():
            assert hashlib.sha256(z.read(f"evalvae/vae/weights/taef2/{part}")).hexdigest() == sha

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    # -I would drop PYTHONPATH; -P keeps the current directory off sys.path.
    # nothing selected: the default selection, TAEF2 read from the installed package (one photo at 32 px)
    small = ["dataset.limit=1", "dataset.resolution=32", "workers=0", "report=false"]
    r = subprocess.run(
        [sys.executable, "-P", "-m", "evalvae", "run", *small, f"hydra.run.dir={work}/out"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "no VAE selected: evaluated the default selection taef2" in r.stderr
    (taef2,) = [v for v in json.loads((work / "out" / "vaes.json").read_text()) if v["vae"] == "taef2"]
    assert taef2["source"].startswith(str(site)) and taef2["weight_files"] == UPSTREAM_SHA256
    probe = subprocess.run(
        [sys.executable, "-P", "-c", "import evalvae; print(evalvae.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip().startswith(str(site)), "the test must exercise the installed wheel, not the checkout"
