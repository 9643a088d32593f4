"""The report's robustness section, read from ``robustness.csv`` and the ``robustness-<vae>.png`` beside it.

One section per robustness run found in the inputs (the folder itself or up to three levels below):
a table per check (rows: VAE and setting; columns: its metrics, in the file's order), each distinct
note once under it, and every VAE's plot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from evalvae.report.verdict import robustness_recommendation

FILE = "robustness.csv"
DEPTH = 3
TITLES = {
    "tiled": "Tiled vs untiled decode",
    "precision": "Reduced precision vs fp32",
    "resolution": "Resolution sweep",
}


def find(paths: Sequence[str | Path]) -> list[Path]:
    """Every ``robustness.csv`` in ``paths`` or up to :data:`DEPTH` folder levels below (not in hidden folders
    or reports), in order, each once."""
    found: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        if (p / FILE).is_file():
            found.append(p / FILE)
            return
        if depth and p.is_dir():
            for child in sorted(c for c in p.iterdir() if c.is_dir()):
                if not child.name.startswith(".") and child.name != "report":
                    walk(child, depth - 1)

    for p in map(Path, paths):
        walk(p.expanduser(), DEPTH)
    return list(dict.fromkeys(found))


def cell(value: float, metric: str) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if metric.startswith("nonfinite"):
        return f"{value:.0f}"
    if metric == "psnr":
        return f"{value:.2f}"
    return f"{value:.4g}"


def section(path: Path, slug: str) -> dict:
    """The view of one ``robustness.csv``: its tables, notes and plots."""
    df = pd.read_csv(path, dtype={"setting": str, "note": str}, keep_default_na=False, na_values=[""])
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    tables, notes = [], []
    for check in dict.fromkeys(df["check"]):
        part = df[df["check"] == check]
        metrics = list(dict.fromkeys(part["metric"]))
        rows = []
        for (vae, setting), g in part.groupby(["vae", "setting"], sort=False):
            values = dict(zip(g["metric"], g["value"]))
            rows.append([vae, setting] + [cell(values.get(m, math.nan), m) for m in metrics])
        tables.append({"title": TITLES.get(check, check), "header": ["VAE", "setting", *metrics], "rows": rows})
        for (vae, setting, note), _ in part.groupby(["vae", "setting", "note"], sort=False, dropna=True):
            if str(note).strip():
                notes.append(f"{vae} · {check} {setting}: {note}")
    pngs = {vae: path.parent / f"robustness-{re.sub(r'[^A-Za-z0-9._-]+', '_', str(vae))}.png" for vae in df["vae"]}
    plots = [{"vae": vae, "path": png} for vae, png in pngs.items() if png.is_file()]
    view = dict(title=f"Robustness · {path.parent.name}", slug=slug, source=str(path), tables=tables)
    view |= dict(recommendation=robustness_recommendation(df), vaes=df["vae"].nunique())
    return view | dict(notes=list(dict.fromkeys(notes)), plots=plots)


def robustness_sections(paths: Sequence[str | Path]) -> tuple[list[dict], list[str]]:
    """The sections of every robustness run under ``paths``, and the files that could not be read."""
    views, problems = [], []
    for i, path in enumerate(find(paths)):
        try:
            views.append(section(path, f"robustness-{i}"))
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{path}: unreadable ({type(e).__name__}: {e})")
    return views, problems
