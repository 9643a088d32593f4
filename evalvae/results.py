"""Tidy result tables of a run, written atomically so a crash never leaves half a file.

* ``per_image.parquet`` / ``per_image.csv``: one row per (vae, image). ``nonfinite`` marks an
  image whose reconstruction held NaN or inf: its metric cells are NaN and it is left out of
  every mean and set-level metric, with the count in the summary's note for that VAE.
  ``image_sha256`` is the sha256 of the original's 8-bit pixels as scored (after decoding, the
  geometry and the crop to the VAE's factor) and ``file_sha256`` that of the file it was read
  from (empty for a streamed dataset), so that results on same-named but different images never
  pass for comparable (``compare``).
* ``summary.csv``: one row per (vae, metric) with mean, sample std (ddof=1), n and a note (why a
  metric is unavailable, how many images were too small for it, or a caveat such as a rank-deficient
  rFID). Set-level metrics (rFID, KID) are rows too: rFID has no std; KID's std is over its subsets.
* ``per_region.parquet``, ``summary_by_region_size.csv`` (with region metrics: text, faces): one row
  per scored region (a row's ``regions`` records), and mean, std and n over regions per (vae, metric,
  size bin).
* ``timings.csv``: one row per VAE, seconds per stage.
* ``skipped.csv``: files left out, with the reason.
* ``vaes.json``: what each VAE was (source, hashes, latent space) and whether it ran.

Rows of the VAE in progress are appended to ``per_image.partial.csv`` batch by batch, so they
survive a kill; the file is removed once the final tables hold them.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from evalvae.io import atomic_path, atomic_write_text

ID_COLUMNS = ["vae", "image"]
# per-image facts that are not metrics; image_sha256 identifies the scored original's pixels
# (evalvae.data.transforms.rgb8_sha256), file_sha256 the file it was read from
SIZE_COLUMNS = ["height", "width", "upscaled", "nonfinite", "image_sha256", "file_sha256"]
SUMMARY_COLUMNS = ["vae", "metric", "mean", "std", "n", "note"]
BY_SIZE_COLUMNS = ["vae", "metric", "bin", "mean", "std", "n"]
REGIONS = "regions"  # a row's per-region records (equal to evalvae.metrics.regions.REGIONS, which needs torch)


def read_per_image(run_dir: str | Path) -> pd.DataFrame | None:
    """A run's per-image table (parquet, else CSV; image ids kept as text), or None if it has none."""
    run_dir = Path(run_dir)
    if (run_dir / "per_image.parquet").is_file():
        return pd.read_parquet(run_dir / "per_image.parquet")
    if (run_dir / "per_image.csv").is_file():
        return pd.read_csv(run_dir / "per_image.csv", dtype={"image": str})
    return None


def nonfinite_note(count: int) -> str:
    """The note a VAE's summary rows carry when ``count`` of its reconstructions were not finite."""
    return f"{count} non-finite reconstruction(s) excluded" if count else ""


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def nonfinite_counts(per_image: pd.DataFrame) -> dict[str, int]:
    """Per VAE, how many images had a non-finite reconstruction (empty without a ``nonfinite`` column)."""
    if "nonfinite" not in per_image.columns or per_image.empty:
        return {}
    flagged = per_image["nonfinite"].eq(True)
    return {str(v): int(c) for v, c in flagged.groupby(per_image["vae"], sort=False).sum().items() if c}


def below_min_side(group: pd.DataFrame, metric: str, min_side: int) -> int:
    """How many rows of ``group`` have no ``metric`` because a side of the scored image is below ``min_side``."""
    if min_side <= 1 or not {"height", "width"} <= set(group.columns):
        return 0
    small = group[["height", "width"]].astype(float).min(axis=1) < min_side
    return int((small & group[metric].isna()).sum())


def summarize(
    per_image: pd.DataFrame,
    metrics: list[str],
    notes: dict[str, str] | None = None,
    min_sides: dict[str, tuple[int, Callable[[int], str]]] | None = None,
) -> pd.DataFrame:
    """Mean, sample std and count of each metric per VAE, ignoring NaN (unavailable) values and
    images flagged ``nonfinite`` (their count goes into the note).

    ``min_sides`` maps a metric to the smallest image side it is defined on and the note for a count
    of images below it (they have NaN, so ``n`` leaves them out and the note says why).
    """
    notes, min_sides = notes or {}, min_sides or {}
    bad = nonfinite_counts(per_image)
    rows = []
    for vae, group in per_image.groupby("vae", sort=False):
        if bad.get(str(vae)):
            group = group[~group["nonfinite"].eq(True)]
        for metric in metrics:
            values = group[metric].astype(float).dropna()
            n = int(values.size)
            side, size_note = min_sides.get(metric, (1, None))
            small = below_min_side(group, metric, side)
            std = float(values.std(ddof=1)) if n > 1 and np.isfinite(values).all() else math.nan  # none for +inf
            note = join_notes(
                notes.get(metric, ""), size_note(small) if small else "", nonfinite_note(bad.get(str(vae), 0))
            )
            rows.append(
                dict(vae=vae, metric=metric, mean=float(values.mean()) if n else math.nan, std=std, n=n, note=note)
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summarize_by_size(per_region: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean, sample std and count over regions of each value per (VAE, size bin), bins from small to large.

    The values are the records' entries named like a per-image metric (``text_ned`` of a text line).
    """
    values = [m for m in metrics if m in per_region.columns]
    rows = []
    if not per_region.empty:
        order = per_region.groupby("bin", sort=False)["size_px"].min().sort_values(kind="stable")
        for vae, group in per_region.groupby("vae", sort=False):
            for metric in values:
                for b in order.index:
                    v = group.loc[group["bin"] == b, metric].astype(float).dropna()
                    if v.size:
                        std = float(v.std(ddof=1)) if v.size > 1 else math.nan
                        rows.append(dict(vae=vae, metric=metric, bin=b, mean=float(v.mean()), std=std, n=v.size))
    return pd.DataFrame(rows, columns=BY_SIZE_COLUMNS)


def console_table(summary: pd.DataFrame, labels: dict[str, str] | None = None, show_n: bool = True) -> str:
    """VAE x metric table of ``mean ± std``, in the order VAEs were run.

    ``labels`` maps a row's note to the text shown instead of its value (e.g. ``(reference)``).
    """
    if summary.empty:
        return "(no results)"
    labels = labels or {}

    def fmt(r) -> str:
        if r["note"] in labels:
            return labels[r["note"]]
        if r["n"] == 0 or pd.isna(r["mean"]):
            return "unavailable"
        return f"{r['mean']:.4f} ± {r['std']:.4f}" if pd.notna(r["std"]) else f"{r['mean']:.4f}"

    cell = summary.apply(fmt, axis=1)
    table = summary.assign(cell=cell).pivot(index="vae", columns="metric", values="cell")
    table = table.reindex(index=list(dict.fromkeys(summary["vae"])), columns=list(dict.fromkeys(summary["metric"])))
    if show_n:
        table = table.assign(n=summary.groupby("vae", sort=False)["n"].max())
    return table.to_string()


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    """``frame`` into ``path`` atomically: parquet for a ``.parquet`` file, else CSV (no index)."""
    with atomic_path(path) as tmp:
        (frame.to_parquet if path.suffix == ".parquet" else frame.to_csv)(tmp, index=False)


class Records:
    """What every task writes beside its results: ``vaes.json`` and ``timings.csv``, as
    :meth:`evalvae.jobs.task.Task.each_vae` and :mod:`evalvae.jobs.failures` record them."""

    def __init__(self, out: str | Path):
        self.out, self.vaes, self.timings = Path(out), [], []

    def add_vae(self, info: dict) -> None:
        self.vaes.append(info)

    def add_timing(self, row: dict) -> None:
        self.timings.append(row)

    def discard(self, vae: str) -> int:
        """Drop what ``vae`` recorded (a VAE that failed part-way); return how many result rows went."""
        self.timings = [t for t in self.timings if t.get("vae") != vae]
        return 0

    def write_json(self, name: str, obj) -> None:
        atomic_write_text(self.out / name, json.dumps(obj, indent=2, default=str) + "\n")

    def flush(self) -> None:
        write_frame(self.out / "timings.csv", pd.DataFrame(self.timings))
        self.write_json("vaes.json", self.vaes)


class RunWriter(Records):
    """Collects a run's rows and rewrites every result file after each VAE."""

    def __init__(self, out_dir: str | Path, metrics: list[str], facts: list[str] = ()):
        super().__init__(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.metrics = list(metrics)
        self.columns = ID_COLUMNS + self.metrics + list(facts) + SIZE_COLUMNS  # facts: per-image counts, not summarised
        self.rows: list[dict] = []
        self.set_rows: list[dict] = []
        self.notes: dict[str, str] = {}  # metric -> why it is unavailable
        self.min_sides: dict[str, tuple[int, Callable[[int], str]]] = {}  # metric -> (smallest side, note of a count)
        self.skipped: dict[str, str] = {}
        self._partial = self.out / "per_image.partial.csv"

    def add_rows(self, rows: list[dict]) -> None:
        """Record rows and append them to the partial file at once."""
        self.rows.extend(rows)
        new = not self._partial.exists()
        with open(self._partial, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows(rows)

    def add_set_rows(self, vae: str, rows: list[dict]) -> None:
        """Set-level results: dicts with metric, mean, std, n and note."""
        self.set_rows.extend({"vae": vae, **row} for row in rows)

    def add_skipped(self, items: list[tuple[str, str]]) -> None:
        for file, reason in items:
            self.skipped.setdefault(file, reason)

    def discard(self, vae: str) -> int:
        """Drop every row of ``vae`` (a VAE that failed part-way), so it contributes to no table; the rows dropped."""
        before = len(self.rows)
        self.rows = [r for r in self.rows if r["vae"] != vae]
        self.set_rows = [r for r in self.set_rows if r["vae"] != vae]
        super().discard(vae)
        return before - len(self.rows)

    def per_image(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)

    def summary(self) -> pd.DataFrame:
        """Per-image summaries then set-level rows, grouped by VAE in run order."""
        per_image = self.per_image()
        per = summarize(per_image, self.metrics, self.notes, self.min_sides)
        if not self.set_rows:
            return per
        sets = pd.DataFrame(self.set_rows, columns=SUMMARY_COLUMNS)
        bad = nonfinite_counts(per_image)
        if bad:
            sets["note"] = [
                join_notes(str(note) if pd.notna(note) else "", nonfinite_note(bad.get(str(v), 0)))
                for v, note in zip(sets["vae"], sets["note"])
            ]
        both = pd.concat([per, sets], ignore_index=True)
        order = {v: i for i, v in enumerate(dict.fromkeys(both["vae"]))}
        return both.sort_values("vae", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)

    def per_region(self) -> pd.DataFrame | None:
        """One row per region of every image a region metric scored (None if none did): ``vae, image``, then
        the record's ``metric, bin, size_px``, its values and strings (:mod:`evalvae.metrics.regions`)."""
        if not any(REGIONS in r for r in self.rows):
            return None
        records = [{"vae": r["vae"], "image": r["image"], **rec} for r in self.rows for rec in r.get(REGIONS) or ()]
        first = [*ID_COLUMNS, "metric", "bin", "size_px"]
        table = pd.DataFrame(records)
        return table.reindex(columns=[*first, *(c for c in table.columns if c not in first)])

    def _write(self, name: str, frame: pd.DataFrame) -> None:
        write_frame(self.out / name, frame)

    def flush(self) -> pd.DataFrame:
        """Rewrite all tables from what has been collected; return the summary."""
        per_image = self.per_image()
        self._write("per_image.parquet", per_image)
        self._write("per_image.csv", per_image)
        self._write("summary.csv", summary := self.summary())
        if (regions := self.per_region()) is not None:
            self._write("per_region.parquet", regions)
            self._write("summary_by_region_size.csv", summarize_by_size(regions, self.metrics))
        self._write("skipped.csv", pd.DataFrame(sorted(self.skipped.items()), columns=["file", "reason"]))
        super().flush()
        self._partial.unlink(missing_ok=True)
        return summary
