"""``python -m evalvae compare BASELINE CURRENT...``: the regression gate for CI.

Exit status: 0 nothing regressed, 1 a regression, 2 unusable input (missing results, protocol
mismatch, unreadable files). argparse rather than Hydra: the command takes file paths, not a
configuration, and its tolerances come from a file (defaults in ``conf/compare/tolerances.yaml``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from evalvae.compare.baseline import Snapshot, load_snapshot, merge, write_baseline
from evalvae.compare.comparison import Comparison, compare
from evalvae.compare.render import FORMATS, describe, headline, render, to_junit, to_markdown
from evalvae.compare.tolerances import load_tolerances
from evalvae.errors import EvalvaeError
from evalvae.io import atomic_write_text, check_creatable

log = logging.getLogger("evalvae.compare")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evalvae compare",
        description="Compare evaluation results against a baseline; exit 0 when nothing regressed, 1 on a regression, 2 on unusable input.",
    )
    p.add_argument("baseline", type=Path, help="baseline .json (or a run/bench directory)")
    p.add_argument("current", type=Path, nargs="+", help="run directory and/or bench directory (or a baseline .json)")
    tolerances = "YAML or JSON laid over conf/compare/tolerances.yaml"
    p.add_argument("--tolerances", type=Path, metavar="FILE", help=tolerances)
    formats = "what to print on stdout: text (an A/B table, the default), md (markdown), json or junit"
    p.add_argument("--format", choices=FORMATS, default="text", help=formats)
    p.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML to FILE")
    p.add_argument(
        "--update-baseline", action="store_true", help="write BASELINE (a .json) from CURRENT after comparing"
    )
    p.add_argument("--reason", help="why the baseline changes; stored in it (with --update-baseline)")
    force = "with --update-baseline: replace it even on a protocol mismatch or missing results"
    p.add_argument("--force", action="store_true", help=force)
    return p


def publish(comparison: Comparison, fmt: str, junit: Path | None = None) -> None:
    """Print the report; write JUnit; append the markdown to $GITHUB_STEP_SUMMARY when set."""
    sys.stdout.write(render(comparison, fmt))
    sys.stdout.flush()
    if junit is not None:
        atomic_write_text(junit, to_junit(comparison))
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a", encoding="utf-8") as f:
            f.write(to_markdown(comparison) + "\n")
    for row in comparison.rows:
        if comparison.failed(row) or row.verdict.is_error:
            log.error("%s", describe(row))
    for mismatch in comparison.mismatches:
        log.error("protocol mismatch: %s", mismatch)


def _counts(snap: Snapshot) -> str:
    n = sum(len(m) for m in snap.results.values())
    return f"{len(snap.results)} VAE(s), {n} (vae, metric) result(s), {len(snap.speed)} bench case(s)"


def run_compare(
    baseline: Path,
    current: list[Path],
    tolerances: Path | None = None,
    fmt: str = "md",
    junit: Path | None = None,
    update: bool = False,
    reason: str | None = None,
    force: bool = False,
) -> int:
    """The whole command; returns its exit status."""
    if junit is not None:
        check_creatable(junit.parent, "--junit")
    if update:
        check_creatable(baseline.parent, "BASELINE")
    tol = load_tolerances(tolerances)
    cur = merge([load_snapshot(p) for p in current])
    if update and cur.empty:
        raise EvalvaeError(
            f"{cur.source} holds no results to write into a baseline (failed: {', '.join(cur.failed) or 'none'})"
        )
    if update and not baseline.exists():
        for vae, error in cur.failed.items():
            log.warning("%s failed in %s and is left out of the baseline: %s", vae, cur.source, error)
        write_baseline(cur, baseline, reason)
        log.info("wrote baseline %s from %s: %s", baseline, cur.source, _counts(cur))
        return 0
    if update and baseline.is_dir():
        raise EvalvaeError(f"--update-baseline writes a .json file, but {baseline} is a directory")
    comparison = compare(load_snapshot(baseline), cur, tol)
    publish(comparison, fmt, junit)
    if not update:
        log.info("evalvae compare: %s (exit status %d)", headline(comparison), comparison.exit_code)
        return comparison.exit_code
    if comparison.exit_code == 2 and not force:
        log.error(
            "refusing to update %s: the inputs differ in protocol or coverage (above); pass --force to replace it anyway",
            baseline,
        )
        return 2
    write_baseline(cur, baseline, reason)
    log.info("updated baseline %s from %s: %s", baseline, cur.source, _counts(cur))
    return 0


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    if (args.reason or args.force) and not args.update_baseline:
        p.error("--reason and --force go with --update-baseline")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    a = args
    try:
        code = run_compare(a.baseline, a.current, a.tolerances, a.format, a.junit, a.update_baseline, a.reason, a.force)
    except (EvalvaeError, OSError) as e:  # OSError: a file that cannot be read or written
        log.error("evalvae: %s", e)
        code = 2
    sys.exit(code)
