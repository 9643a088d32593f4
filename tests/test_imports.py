"""What a run imports: the libraries of metrics, VAE families and the report it does not use stay unloaded.

Each import check runs a fresh interpreter (this process has imported everything already; slow) and reads
its ``sys.modules`` as it exits; no timings are asserted (benchmarks/startup.py measures them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalvae.errors import WeightsUnavailable
from evalvae.vae import sources
from tests.helpers import REPO, evalvae_main, save_tiny_kl

# Seconds each to import; loaded only by the metric, VAE family or report that uses them.
LAZY = (
    "torchmetrics",
    "skimage.metrics",
    "scipy.signal",
    "matplotlib",
    "transformers",
    "diffusers",
    "accelerate",
    "lpips",
    "torch_fidelity",
    "torchvision",
    "jinja2",
)
BUILD_RUN = """
import json, sys
from evalvae.cli import run_app
from evalvae.run import run
from evalvae.config import compose
from evalvae.jobs.schema import validate
from evalvae.jobs.task import task_class
from evalvae.metrics import build_metrics, split_metrics

cfg = compose(["+vae=ft-mse"])
validate(cfg, "run")
assert task_class(cfg).__name__ == "ReconTask"
built = split_metrics(build_metrics(cfg.metrics))
assert [m.key for m in built.pair] == ["psnr", "ssim"]
print(json.dumps(sorted(sys.modules)))
"""


def loaded(modules, names=LAZY) -> list[str]:
    """The ``names`` among ``modules``, or any of their submodules."""
    return sorted({n for n in names for m in modules if m == n or m.startswith(n + ".")})


def run_python(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# ``python -m evalvae ARGS`` (runpy, as -m does), writing the modules it loaded to $MODULES_OUT at exit.
MAIN_RECORDING_MODULES = """
import atexit, json, os, runpy, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["evalvae", *sys.argv[1:]]
runpy.run_module("evalvae", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_building_a_run_imports_no_metric_vae_or_report_library(tmp_path):
    """The entry, the composed and validated config, the recon task's module and the default metrics."""
    r = run_python(["-c", BUILD_RUN], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    modules = json.loads(r.stdout)
    assert "torch" in modules and "evalvae.recon.task" in modules and "evalvae.metrics.pixel" in modules
    assert loaded(modules, (*LAZY, "skimage", "scipy")) == []  # no dataset is read yet: not even skimage.data


@pytest.mark.slow
def test_offline_hub_vae_fails_in_one_line_before_torch_is_imported(tmp_path):
    """``evalvae run +vae=ft-mse`` offline with empty caches: its one error line, and not even torch imported."""
    hf = tmp_path / "hf"
    out = tmp_path / "modules.json"
    env = {"HF_HOME": str(hf), "HF_HUB_CACHE": str(hf / "hub"), "EVALVAE_CACHE": str(tmp_path / "cache")}
    r = run_python(
        ["-c", MAIN_RECORDING_MODULES, "run", "+vae=ft-mse"], cwd=tmp_path, env={**env, "MODULES_OUT": str(out)}
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr + r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("evalvae:")]
    assert len(errors) == 1
    assert "could not load hub id 'stabilityai/sd-vae-ft-mse'" in errors[0] and "(OSError)" in errors[0]
    assert "huggingface-cli download stabilityai/sd-vae-ft-mse" in errors[0] and "vae.ft-mse.source=" in errors[0]
    (log,) = (tmp_path / "outputs" / "run").glob("*/evalvae-run.log")  # complete: written out at exit
    assert "could not load hub id" in log.read_text().splitlines()[-1]
    modules = json.loads(out.read_text())
    assert "evalvae.hub" in modules and "huggingface_hub" in modules  # the local Hugging Face cache was asked
    assert loaded(modules, (*LAZY, "torch", "evalvae.recon")) == []


def test_a_run_with_one_loadable_vae_goes_ahead_and_records_the_unloadable_one(
    hub_cache, tmp_path, tiny_ae_dir, image_dir
):
    """Offline, ``ft-mse`` (an uncached hub id) beside a local VAE: the run evaluates the local one and
    records ft-mse's failure with the loader's message (exit status 3: incomplete)."""
    args = ["run", "+vae=[ft-mse,taesd]", f"vae.taesd.source={tiny_ae_dir}", "dataset=folder"]
    args += [f"dataset.path={image_dir}", "dataset.resolution=32", "report=false", f"hydra.run.dir={tmp_path / 'r'}"]
    r = evalvae_main(args, cwd=tmp_path)
    assert r.returncode == 3, r.stderr[-2000:]
    vaes = {v["vae"]: v for v in json.loads((tmp_path / "r" / "vaes.json").read_text())}
    assert vaes["ft-mse"]["status"] == "failed" and "could not load hub id" in vaes["ft-mse"]["error"]
    assert vaes["taesd"].get("status", "ok") != "failed"


def test_unloadable_offline_names_every_vae_only_when_none_can_load(hub_cache, monkeypatch, tmp_path):
    from evalvae import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    save_tiny_kl(fake_hub_cache(hub_cache, "org/cached"))
    missing = {"_target_": "x", "source": "org/missing"}
    assert list(hub.unloadable_offline({"a": missing, "b": {**missing, "source": "org/other"}})) == ["a", "b"]
    assert "could not load hub id 'org/missing'" in hub.unloadable_offline({"a": missing})["a"]
    assert hub.unloadable_offline({"a": missing, "c": {"_target_": "x", "source": "org/cached"}}) == {}
    assert hub.unloadable_offline({"a": missing, "d": {"_target_": "x", "source": str(tmp_path)}}) == {}
    assert hub.unloadable_offline({"a": missing, "e": {"_target_": "x"}}) == {}  # no source: only a load can tell
    assert hub.unloadable_offline({"a": missing, "f": {"_target_": "x", "source": "/no/such/dir"}}) == {}
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    assert hub.unloadable_offline({"a": missing}) == {}  # online: the loader downloads it


def fake_hub_cache(root: Path, repo_id: str, commit: str = "a" * 40) -> Path:
    """The Hugging Face cache layout of one downloaded repository: refs/main and its snapshot folder."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_not_in_hub_cache(hub_cache):
    snapshot = fake_hub_cache(hub_cache, "org/vae")
    (snapshot / "vae").mkdir()
    (snapshot / "vae" / "config.json").write_text("{}")
    assert not sources.not_in_hub_cache("org/vae", "config.json", subfolder="vae")
    assert not sources.not_in_hub_cache("org/vae", "config.json", subfolder="vae", revision="a" * 40)
    assert sources.not_in_hub_cache("org/vae", "config.json")  # not at the top of the repository
    assert sources.not_in_hub_cache("org/vae", "config.json", subfolder="vae", revision="b" * 40)
    assert sources.not_in_hub_cache("org/other", "config.json")
    assert not sources.not_in_hub_cache("not a repo id!", "config.json")  # unanswerable: the loader decides


def test_hub_id_in_the_local_cache_still_loads_offline(hub_cache, monkeypatch):
    save_tiny_kl(fake_hub_cache(hub_cache, "org/tiny-kl"))
    monkeypatch.setattr(sources, "hub_reachable", lambda: False)
    model, weights = sources.diffusers_model("AutoencoderKL", "tiny", "org/tiny-kl")
    assert type(model).__name__ == "AutoencoderKL" and model.config.latent_channels == 4
    assert weights.kind == "hub" and weights.location == "org/tiny-kl"
    with pytest.raises(WeightsUnavailable) as e:
        sources.diffusers_model("AutoencoderKL", "tiny", "org/missing")
    message = str(e.value)
    assert "could not load hub id 'org/missing'" in message and "vae.tiny.source=" in message
