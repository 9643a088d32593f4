"""Where ``evalvae bench`` found non-finite outputs in a reduced precision, and the override that upcasts them.

A run never reads these findings: the bench logs, for each VAE and dtype, where an output held NaN or
inf and the override that makes a run evaluate it in fp32 (``vae.<name>.upcast=always``,
:mod:`evalvae.jobs.policy`), and writes the same into ``bench.json`` (``nonfinite``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


def nonfinite_findings(rows: Iterable[dict]) -> list[dict]:
    """One entry per (VAE, reduced dtype) with a non-finite output in an ``ok`` row: where, and the override."""
    found: dict[tuple[str, str], dict] = {}
    for row in rows:
        if row["status"] != "ok" or row["dtype"] == "fp32" or not row["nonfinite"]:
            continue
        entry = found.setdefault(
            (row["vae"], row["dtype"]),
            {"vae": row["vae"], "dtype": row["dtype"], "nonfinite": [], "override": f"vae.{row['vae']}.upcast=always"},
        )
        entry["nonfinite"].append({"op": row["op"], "resolution": int(row["resolution"]), "mode": row["mode"]})
    return list(found.values())


def log_findings(findings: list[dict]) -> None:
    for f in findings:
        where = ", ".join(f"{w['op']} at {w['resolution']} px ({w['mode']})" for w in f["nonfinite"][:3])
        more = f" and {len(f['nonfinite']) - 3} more" if len(f["nonfinite"]) > 3 else ""
        what = "VAE '%s' gave non-finite %s outputs (%s%s); to evaluate it in fp32 when %s is asked for, run with %s"
        log.warning(what, f["vae"], f["dtype"], where, more, f["dtype"], f["override"])


def __getattr__(name: str):
    # a job's loading policy lives in evalvae.jobs.policy; kept importable here
    if name == "load_for_run":
        from evalvae.jobs.policy import load_for_run

        return load_for_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
