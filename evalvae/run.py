"""``run(cfg)``: the entry for configs composed in Python; the task ``cfg.task._target_`` names does the work.

``run`` checks the config against its schema and calls :func:`evaluate`, which every Hydra app calls
once it has checked the config itself (:mod:`evalvae.cli`). The task (recon, t2i, bench, ref) returns
its outcome; :func:`evaluate` then writes the run's report (``report=true``) from the result files the
task left, so a report failure never costs results.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from evalvae.io import cache_argument, cache_dir, writable_dir
from evalvae.jobs.schema import validate
from evalvae.jobs.selection import apply
from evalvae.jobs.task import execute

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: str | Path | None = None):
    """Check ``cfg`` against the schema of its command, as the CLI does, and :func:`evaluate` it."""
    return evaluate(validate(cfg), out_dir)


def evaluate(cfg: DictConfig, out_dir: str | Path | None = None):
    """Run the task a checked ``cfg`` selects (``evalvae run``: recon by default, or ``task=t2i``); write its report."""
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
