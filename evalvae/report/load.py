"""Reading run directories (and bench results) into tidy frames, with what was wrong with each.

A run directory holds ``metrics.json`` (the protocol), ``per_image.parquet`` (one row per
(vae, image)), ``summary.csv`` (one row per (vae, metric), set-level metrics included),
``timings.csv``, ``skipped.csv``, ``vaes.json`` and ``config.yaml``. A directory without
``metrics.json`` stands for the runs found in the folders below it (a Hydra multirun's sweep
folder, whose numbered job folders are runs, or a folder of such sweeps); their VAEs are reported
side by side as if one run had evaluated them all. A job folder that has no results yet is named as
a problem. A directory with only ``bench.csv`` contributes speed measurements.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evalvae.metrics.info import RATE_FACTS
from evalvae.report import robustness
from evalvae.results import ID_COLUMNS, SIZE_COLUMNS, read_per_image

log = logging.getLogger(__name__)

CATEGORY = "category"
# with task=t2i's prompt columns and a codec's rate facts
NON_METRIC = set(ID_COLUMNS) | set(SIZE_COLUMNS) | {CATEGORY, "prompt_id", "prompt", "seed"} | set(RATE_FACTS)


@dataclass
class Run:
    """One run directory's results; ``label`` is its short, unique name in the report."""

    path: Path
    label: str
    protocol: dict
    per_image: pd.DataFrame
    summary: pd.DataFrame
    timings: pd.DataFrame
    skipped: pd.DataFrame
    vaes: list[dict]

    @property
    def vae_names(self) -> list[str]:
        """VAEs with results, in run order (per-image rows first, then set-level-only ones)."""
        names = list(dict.fromkeys(self.per_image["vae"])) if not self.per_image.empty else []
        if not self.summary.empty:
            has_value = self.summary[self.summary["mean"].notna()]
            names += [v for v in dict.fromkeys(has_value["vae"]) if v not in names]
        return names

    @property
    def metric_columns(self) -> list[str]:
        """Per-image metric columns: every numeric column that is not an id, size or category."""
        df = self.per_image
        return [c for c in df.columns if c not in NON_METRIC and pd.api.types.is_numeric_dtype(df[c])]

    @property
    def failed_vaes(self) -> dict[str, str]:
        return {v.get("vae", "?"): v.get("error", "") for v in self.vaes if v.get("status") == "failed"}


@dataclass
class Inputs:
    runs: list[Run]
    bench: pd.DataFrame  # rows of every bench.csv found, with a ``source`` column
    problems: list[str]


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def read_run(path: Path, label: str) -> Run:
    """Load one run directory; raises ``ValueError`` naming the file that cannot be read."""
    try:
        protocol = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path / 'metrics.json'} is unreadable ({e})") from None
    try:
        per_image = read_per_image(path)
        per_image = pd.DataFrame() if per_image is None else per_image
        summary = _read_csv(path / "summary.csv")
        vaes = json.loads((path / "vaes.json").read_text(encoding="utf-8")) if (path / "vaes.json").is_file() else []
    except (OSError, ValueError) as e:
        raise ValueError(f"results in {path} are unreadable ({type(e).__name__}: {e})") from None
    if not per_image.empty:
        per_image["image"] = per_image["image"].astype(str)
    if summary.empty:
        summary = pd.DataFrame(columns=["vae", "metric", "mean", "std", "n"])
    timings, skipped = _read_csv(path / "timings.csv"), _read_csv(path / "skipped.csv")
    return Run(path, label, protocol, per_image, summary, timings, skipped, vaes)


SWEEP_DEPTH = 3  # folder levels searched below an input for job folders (a sweep of sweeps, a date/time layout)


def _natural(path: Path) -> list:
    """Sort key putting job folders in number order: 0, 1, ..., 9, 10 (not 0, 1, 10, 2)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path.name) if t]


def _jobs(path: Path, depth: int) -> tuple[list[Path], list[Path], list[Path]]:
    """Run folders, bench files and Hydra job folders without results below ``path``.

    A folder holding ``metrics.json`` is a run and is not searched further; hidden folders
    (``.hydra``, submitit's ``.submitit``) and reports written into a sweep are not searched;
    files such as Hydra's ``multirun.yaml`` are not inputs.
    """
    runs, bench, unfinished = [], [], []
    children = sorted((c for c in path.iterdir() if c.is_dir()), key=_natural) if path.is_dir() else []
    for child in children:
        if child.name.startswith(".") or child.name == "report":
            continue
        if (child / "metrics.json").is_file():
            runs.append(child)
            continue
        if (child / "bench.csv").is_file():
            bench.append(child / "bench.csv")
        elif (child / robustness.FILE).is_file():
            continue  # a robustness run: evalvae.report.robustness reads it
        elif (child / ".hydra").is_dir():
            unfinished.append(child)
        elif depth > 1:
            more = _jobs(child, depth - 1)
            runs, bench, unfinished = runs + more[0], bench + more[1], unfinished + more[2]
    return runs, bench, unfinished


def _unfinished(path: Path, jobs: list[Path]) -> str:
    names = ", ".join(str(j.relative_to(path)) for j in jobs[:8]) + (", ..." if len(jobs) > 8 else "")
    return (
        f"{path}: {len(jobs)} job folder(s) without results ({names}): no metrics.json, as for a job that failed, "
        "was cancelled, or is still queued or running; see its log (<job>/*.log, and .submitit/ for Slurm jobs)"
    )


def _expand(path: Path) -> tuple[list[Path], list[Path], list[str]]:
    """Run directories and bench files under ``path`` (a run, a multirun's sweep folder, or folders
    of them), and what is wrong there."""
    if not path.exists():
        return [], [], [f"{path}: no such directory"]
    if not path.is_dir():
        return [], [], [f"{path}: not a directory"]
    bench = [path / "bench.csv"] if (path / "bench.csv").is_file() else []
    if (path / "metrics.json").is_file():
        return [path], bench, []
    if (path / "latents.csv").is_file():  # an `evalvae latents` run: its section comes from evalvae.report.latents
        return [], bench, []
    runs, more, unfinished = _jobs(path, SWEEP_DEPTH)
    problems = [_unfinished(path, unfinished)] if unfinished else []
    if runs or bench or more:
        return runs, bench + more, problems
    if unfinished:
        return [], [], problems
    if robustness.find([path]):
        return [], [], []
    if (path / "multirun.yaml").is_file():
        return [], [], [f"{path}: a Hydra sweep folder with no job folders yet (jobs still queued, or none launched)"]
    return (
        [],
        [],
        [f"{path}: no evalvae results here (no metrics.json or bench.csv in it or {SWEEP_DEPTH} levels below)"],
    )


def _labels(paths: list[Path]) -> list[str]:
    """The shortest trailing path parts that tell the runs apart ('k256', or 'sweep/0')."""
    depth = 1
    while True:
        labels = ["/".join(p.resolve().parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels) or depth > 8:
            return labels
        depth += 1


def load_inputs(paths: list[str | Path]) -> Inputs:
    """Every run and bench file under ``paths``; problems are collected as messages, not raised."""
    run_dirs, bench_files, problems = [], [], []
    for p in map(Path, paths):
        runs, bench, found = _expand(p.expanduser())
        run_dirs += [r for r in runs if r.resolve() not in {d.resolve() for d in run_dirs}]
        bench_files += bench
        problems += found
    runs = []
    for path, label in zip(run_dirs, _labels(run_dirs)):
        try:
            run = read_run(path, label)
        except ValueError as e:
            problems.append(str(e))
            continue
        for vae, error in run.failed_vaes.items():
            problems.append(f"run {label}: VAE {vae} failed: {error}")
        if not run.vae_names:
            problems.append(f"run {label} ({path}): no VAE produced results")
            continue
        runs.append(run)
    frames = []
    for f in dict.fromkeys(bench_files):
        df = _read_csv(f)
        if df.empty or "vae" not in df.columns:
            problems.append(f"{f}: no bench rows")
            continue
        frames.append(df.assign(source=str(f)))
    bench = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Inputs(runs, bench, problems)
