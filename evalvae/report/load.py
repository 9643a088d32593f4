"""Reading run directories (and bench results) into tidy frames, with what was wrong with each.

A run directory holds ``metrics.json`` (the protocol), ``per_image.parquet`` (one row per
(vae, image)), ``summary.csv`` (one row per (vae, metric), set-level metrics included),
``timings.csv``, ``skipped.csv``, ``vaes.json`` and ``config.yaml``. A directory without
``metrics.json`` whose sub-directories have one (a Hydra multirun) stands for those jobs; a
directory with only ``bench.csv`` contributes speed measurements.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evalvae.results import ID_COLUMNS, SIZE_COLUMNS, read_per_image

log = logging.getLogger(__name__)

CATEGORY = "category"
NON_METRIC = (
    set(ID_COLUMNS) | set(SIZE_COLUMNS) | {CATEGORY, "prompt_id", "prompt", "seed"}
)  # with task=t2i's prompt columns


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
        return [
            c
            for c in self.per_image.columns
            if c not in NON_METRIC and pd.api.types.is_numeric_dtype(self.per_image[c])
        ]

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
    return Run(
        path,
        label,
        protocol,
        per_image,
        summary,
        _read_csv(path / "timings.csv"),
        _read_csv(path / "skipped.csv"),
        vaes,
    )


def _expand(path: Path) -> tuple[list[Path], list[Path], str | None]:
    """Run directories and bench files under ``path``, or the reason there are none."""
    if not path.exists():
        return [], [], f"{path}: no such directory"
    if not path.is_dir():
        return [], [], f"{path}: not a directory"
    bench = [path / "bench.csv"] if (path / "bench.csv").is_file() else []
    if (path / "metrics.json").is_file():
        return [path], bench, None
    jobs = sorted((p.parent for p in path.glob("*/metrics.json")), key=lambda p: (len(p.name), p.name))
    if jobs or bench:
        return jobs, bench + sorted(path.glob("*/bench.csv")), None
    return [], [], f"{path}: no evalvae results here (no metrics.json, bench.csv, or job folders holding them)"


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
    run_dirs: list[Path] = []
    bench_files: list[Path] = []
    problems: list[str] = []
    for p in map(Path, paths):
        runs, bench, problem = _expand(p.expanduser())
        run_dirs += [r for r in runs if r.resolve() not in {d.resolve() for d in run_dirs}]
        bench_files += bench
        if problem:
            problems.append(problem)
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
