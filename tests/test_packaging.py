"""conf/ reaches a non-editable install, so `python -m evalvae run` works from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from tests.helpers import REPO


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
    r = subprocess.run(
        [sys.executable, "-P", "-m", "evalvae", "run", f"hydra.run.dir={work}/out"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, r.stderr
    assert "no VAE selected" in r.stderr and "sdxl-fp16-fix" in r.stderr
    probe = subprocess.run(
        [sys.executable, "-P", "-c", "import evalvae; print(evalvae.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip().startswith(str(site)), "the test must exercise the installed wheel, not the checkout"
