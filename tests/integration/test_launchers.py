"""Hydra launchers (conf/hydra/launcher, the cluster extra) and ``evalvae report`` on their sweep folders."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from evalvae.report import NothingToReport, write_report
from evalvae.report.load import load_inputs
from evalvae.report.sections import group_sections
from tests.helpers import REPO, evalvae_main
from tests.prerequisites import require_module

SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher"
# Two stand-in VAEs as config-group options, so that a sweep can select one per job: +vae=sa,sb
STANDINS = {"sa": 1.0, "sb": 0.9}  # name -> gain (sa reconstructs exactly, sb does not)
SMALL = ["dataset=builtin", "dataset.limit=2", "dataset.resolution=32", "metrics=default", "device=cpu", "workers=0"]


def plugin(name: str):
    return require_module(f"hydra_plugins.{name}", 'the cluster extra: pip install "evalvae[cluster]"')


def composed(overrides: list[str], config_name: str = "run"):
    """The packaged config with Hydra's own node, as a launcher sees it."""
    with initialize_config_module(config_module="evalvae.conf", version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True)


def standin_conf(root: Path) -> Path:
    for name, gain in STANDINS.items():
        (root / "vae").mkdir(parents=True, exist_ok=True)
        (root / "vae" / f"{name}.yaml").write_text(
            f"{name}:\n  _target_: tests.run_standins.Identity\n  gain: {gain}\n"
        )
    return root


def multirun(tmp: Path, sweep: Path, *launcher: str, vaes: str = "sa,sb"):
    args = ["run", "-m", f"+vae={vaes}", f"hydra.searchpath=[file://{standin_conf(tmp / 'conf')}]", *SMALL]
    args += ["report=false", *launcher, f"hydra.sweep.dir={sweep}"]
    # a launcher's job processes import the stand-ins by name, as their own interpreters
    return evalvae_main(args, cwd=tmp, env={"PYTHONPATH": str(REPO)})


# -- composition ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "launcher, package, target",
    [
        ("submitit_slurm", "hydra_submitit_launcher", f"{SUBMITIT}.SlurmLauncher"),
        ("submitit_local", "hydra_submitit_launcher", f"{SUBMITIT}.LocalLauncher"),
        ("joblib", "hydra_joblib_launcher", f"{JOBLIB}.JoblibLauncher"),
    ],
)
def test_plugin_launchers_compose_with_the_packaged_config(launcher, package, target):
    plugin(package)
    cfg = composed(["+vae=taesd", f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_ == target
    assert cfg.hydra.runtime.choices["hydra/launcher"] == launcher
    basic = composed(["+vae=taesd"])
    assert basic.hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    # the launcher is Hydra's business: the job's own config is the same under any of them
    job = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hydra"}
    assert job == {k: v for k, v in OmegaConf.to_container(basic).items() if k != "hydra"}


def test_joblib_n_jobs_override():
    plugin("hydra_joblib_launcher")
    cfg = composed(["+vae=taesd", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert cfg.hydra.launcher.n_jobs == 2 and cfg.hydra.launcher.prefer == "processes"


@pytest.mark.parametrize("config_name, job_name", [("run", "evalvae-run"), ("bench", "evalvae-bench")])
def test_slurm_gpu_preset_is_the_plugin_launcher_with_one_gpu_per_job(config_name, job_name):
    plugin("hydra_submitit_launcher")
    cfg = composed(["hydra/launcher=slurm-gpu"], config_name)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == f"{SUBMITIT}.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb) == (240, 8, 32)
    assert launcher.name == job_name  # ${hydra.job.name}, resolved per application
    assert launcher.partition is None and launcher.account is None
    assert launcher.array_parallelism == 256  # the plugin's keys the preset does not set keep its defaults
    changed = composed(
        ["hydra/launcher=slurm-gpu", "hydra.launcher.partition=gpu", "hydra.launcher.account=proj", "+vae=taesd"],
        config_name,
    ).hydra.launcher
    assert (changed.partition, changed.account, changed.gpus_per_node) == ("gpu", "proj", 1)


def test_unknown_launcher_lists_the_plugins_and_the_preset():
    plugin("hydra_submitit_launcher")
    plugin("hydra_joblib_launcher")
    with pytest.raises(MissingConfigException) as e:
        composed(["hydra/launcher=slurm_gpu"])
    available = str(e.value)
    assert "slurm_gpu" in available
    for name in ("slurm-gpu", "submitit_slurm", "submitit_local", "joblib", "basic"):
        assert name in available, available


# -- launching ------------------------------------------------------------------------------------
def fake_slurm(bin_dir: Path, record: Path) -> str:
    """``sbatch`` that keeps the script it is given and refuses it; ``srun`` that submitit only looks for."""
    bin_dir.mkdir(parents=True)
    scripts = {
        "sbatch": f'#!/bin/sh\ncp "$1" "{record}"\necho "sbatch: error: test stand-in, nothing queued" >&2\nexit 1\n',
        "srun": "#!/bin/sh\nexit 1\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IXUSR)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def test_slurm_multirun_submits_one_array_task_per_vae_with_the_preset(tmp_path, monkeypatch):
    plugin("hydra_submitit_launcher")
    record = tmp_path / "submitted.sh"
    sweep = tmp_path / "sweep"
    launcher = ["hydra/launcher=slurm-gpu", "hydra.launcher.partition=gpu", "hydra.launcher.account=proj"]
    monkeypatch.setenv("PATH", fake_slurm(tmp_path / "bin", record))  # the command reads os.environ
    r = multirun(tmp_path, sweep, *launcher, vaes="sa,sb,sa")
    assert r.returncode != 0 and "test stand-in, nothing queued" in r.stderr  # the stand-in sbatch refuses
    script = record.read_text()
    lines = set(script.splitlines())
    for flag in (
        "--array=0-2%3",  # one array task per job of the sweep, all allowed to run at once
        "--gpus-per-node=1",
        "--ntasks-per-node=1",
        "--nodes=1",
        "--cpus-per-task=8",
        "--mem=32GB",
        "--time=240",
        "--partition=gpu",
        "--account=proj",
        "--job-name=evalvae-run",
        f"--output={sweep}/.submitit/%A_%a/%A_%a_0_log.out",
    ):
        assert f"#SBATCH {flag}" in lines, script
    # nothing ran yet: the report says so instead of reporting an empty comparison
    with pytest.raises(NothingToReport, match="Hydra sweep folder with no job folders yet"):
        write_report([sweep], tmp_path / "report")


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory):
    """A real two-job multirun, one stand-in VAE per job, on two joblib (loky) worker processes."""
    plugin("hydra_joblib_launcher")
    tmp = tmp_path_factory.mktemp("joblib")
    sweep = tmp / "sweep"
    r = multirun(tmp, sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in r.stdout + r.stderr, r.stdout[-3000:]
    return sweep


@pytest.mark.slow  # worker processes
def test_joblib_multirun_gives_one_run_folder_per_vae(joblib_sweep):
    assert (joblib_sweep / "multirun.yaml").is_file()
    jobs = sorted(p.name for p in joblib_sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    assert [set(pd.read_csv(joblib_sweep / j / "summary.csv").vae) for j in jobs] == [{"sa"}, {"sb"}]


@pytest.mark.slow  # worker processes
def test_report_of_a_sweep_folder_puts_its_vaes_side_by_side_as_one_run_would(joblib_sweep, tmp_path):
    inputs = load_inputs([joblib_sweep])
    assert [r.label for r in inputs.runs] == ["0", "1"] and inputs.problems == []  # multirun.yaml is no input
    (section,) = group_sections(inputs.runs)
    assert section.labels == ["sa", "sb"] and section.metrics[:2] == ["psnr", "ssim"]

    # the same two VAEs evaluated by one run: the same section, value for value
    one = tmp_path / "one"
    args = ["run", "+vae=[sa,sb]", f"hydra.searchpath=[file://{standin_conf(tmp_path / 'conf')}]", *SMALL]
    r = evalvae_main([*args, "report=false", f"hydra.run.dir={one}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (single,) = group_sections(load_inputs([one]).runs)
    assert single.labels == section.labels
    merged, alone = (s.per_image.sort_values(["entry", "image"]).reset_index(drop=True) for s in (section, single))
    assert merged[["entry", "image"]].equals(alone[["entry", "image"]])
    for m in ("psnr", "ssim"):
        np.testing.assert_allclose(merged[m], alone[m], rtol=1e-9)
    assert np.isinf(merged.loc[merged.entry == "sa", "psnr"]).all()  # gain 1: exact reconstructions
    assert np.isfinite(merged.loc[merged.entry == "sb", "psnr"]).all()

    # the CLI: one report, one section, both VAEs in its table
    out = tmp_path / "report"
    res = evalvae_main(["report", str(joblib_sweep), "--out", str(out)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.count("\n## ") == 1 and "from 2 run(s)" in md
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| s")]
    assert rows[:2] == ["sa", "sb"], md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'class="l vae">sa<' in html and 'class="l vae">sb<' in html


def copy_job(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report"))
    return dst


@pytest.mark.slow  # worker processes
def test_report_finds_jobs_below_sweep_folders_and_names_those_without_results(joblib_sweep, tmp_path):
    root = tmp_path / "multirun"
    # a date/time layout with eleven jobs: found two levels down, in number order (10 after 9)
    sweep = root / "2026-01-01" / "12-00-00"
    for i in range(11):
        copy_job(joblib_sweep / str(i % 2), sweep / str(i))
    shutil.copy(joblib_sweep / "multirun.yaml", sweep / "multirun.yaml")
    # neither submitit's folder nor a report written into the sweep holds runs, whatever they contain
    copy_job(joblib_sweep / "0", sweep / ".submitit" / "4242_0")
    copy_job(joblib_sweep / "0", sweep / "report" / "0")
    inputs = load_inputs([root])
    assert [r.path for r in inputs.runs] == [sweep / str(i) for i in range(11)]
    assert [r.label for r in inputs.runs] == [str(i) for i in range(11)] and inputs.problems == []

    # a job that has not written results (failed, cancelled, queued) is named, and the others reported
    (sweep / "11" / ".hydra").mkdir(parents=True)
    inputs = load_inputs([sweep])
    assert len(inputs.runs) == 11
    (problem,) = inputs.problems
    assert "1 job folder(s) without results (11)" in problem and "no metrics.json" in problem

    # a folder with no run anywhere below it: its own message, not an empty report
    only = tmp_path / "queued"
    (only / "0" / ".hydra").mkdir(parents=True)
    (only / "1" / ".hydra").mkdir(parents=True)
    with pytest.raises(NothingToReport, match=r"2 job folder\(s\) without results \(0, 1\)"):
        write_report([only], tmp_path / "r1")
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    with pytest.raises(NothingToReport, match="no evalvae results here"):
        write_report([tmp_path / "empty"], tmp_path / "r2")


@pytest.mark.slow  # worker processes
def test_submitit_local_multirun_runs_a_job_and_the_report_skips_its_logs(tmp_path):
    plugin("hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    r = multirun(tmp_path, sweep, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", vaes="sb")
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(pd.read_csv(sweep / "0" / "summary.csv").vae) == {"sb"}
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # submitit's own logs, per job
    inputs = load_inputs([sweep])
    assert [r.path for r in inputs.runs] == [sweep / "0"] and inputs.problems == []
