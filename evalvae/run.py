"""``run(cfg)``: the entry every Hydra app calls; the task ``cfg.task._target_`` names does the work.

The task (recon, t2i, bench, ref) returns its outcome; this entry then writes the run's report
(``report=true``) from the result files the task left, so a report failure never costs results.
The names below are re-exported for scripts that import them from here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from evalvae.io import cache_argument, cache_dir, writable_dir
from evalvae.jobs.failures import VAE_FAILURES, is_out_of_memory, log_failures, record_failure, record_load_failure
from evalvae.jobs.runtime import RunOutcome, loader_workers, output_dir, progress_bar
from evalvae.jobs.schema import validate
from evalvae.jobs.selection import apply
from evalvae.jobs.task import execute
from evalvae.jobs.vaes import NoVAESelected, available_vaes, selected_vaes

__all__ = [
    "VAE_FAILURES",
    "NoVAESelected",
    "RunOutcome",
    "available_vaes",
    "is_out_of_memory",
    "loader_workers",
    "log_failures",
    "output_dir",
    "progress_bar",
    "record_failure",
    "record_load_failure",
    "run",
    "selected_vaes",
    "write_run_report",
]
log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: str | Path | None = None):
    """Run the task ``cfg`` selects (``evalvae run``: recon by default, or ``task=t2i``); write its report."""
    task = cfg.get("task")
    name = task.get("name") if isinstance(task, DictConfig) else None
    app = name if name in ("bench", "ref", "latents", "robustness") else "run"
    validate(cfg, app)  # as the CLI does: configs composed in Python get the same checks
    writable_dir(cache_dir(cfg.get("cache_dir")), cache_argument(cfg.get("cache_dir")))
    if out_dir is not None:
        writable_dir(out_dir, "out_dir")
    selection = apply(cfg)  # named variants, the default selection, vae_dir: into cfg.vae (and config.yaml)
    if selection.default:
        log.info(
            "no VAE selected: evaluating the default selection %s (task.default_vaes)", ", ".join(selection.default)
        )
    outcome = execute(cfg, out_dir)
    wants_report = getattr(outcome, "report", False) and not outcome.summary.empty
    if wants_report and not write_run_report(outcome.out_dir):
        outcome.missing.append("the report was not written (reason above)")
    if selection.default:
        log.info("%s", default_note(selection.default, cfg, outcome))
    return outcome


def default_note(names: list[str], cfg: DictConfig, outcome) -> str:
    """What the default selection evaluated, and how to choose VAEs instead."""
    summary = getattr(outcome, "summary", None)
    n = int(summary["n"].max()) if summary is not None and not summary.empty and "n" in summary else 0
    dataset = (cfg.get("dataset") or {}).get("name", "the dataset")
    return (
        f"no VAE selected: evaluated the default selection {', '.join(names)} on {n} image(s) of dataset "
        f"{dataset}; choose VAEs with +vae=NAME or +vae=[A,B] (python -m evalvae vaes lists them)"
    )


def write_run_report(out: Path) -> bool:
    """The HTML/markdown report of this run, in ``<run dir>/report``; results stay valid if it fails
    (False, with a line saying why)."""
    from evalvae.report import write_report

    try:
        log.info("report: %s", write_report([out], out / "report"))
    except Exception as e:  # the result tables are already written; say why there is no report
        log.error("evalvae: no report for %s: %s: %s", out, type(e).__name__, e)
        return False
    return True
