"""The report's benchmark parts, read from the ``bench.csv`` files among its inputs (``evalvae bench``).

Each bench file gets a section: a table with one row per configuration (VAE, resolution, batch, dtype,
memory mode) and the median milliseconds per image of each op, the largest peak memory, the plots the
bench drew beside it, and a recommendation. Where a bench's VAEs and resolution match an evaluation
section, its speed and memory join the overview, one bench row per VAE: the op of
:data:`~evalvae.report.tables.SPEED_OPS` it measured first (decode, what generation pays per image), at
the section's resolution, in the untiled configuration of the VAE's run dtype that ran fastest. What the overview
leaves out (VAEs without bench rows, other resolutions, other ops, configurations that did not pass)
is said under it.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evalvae.report.sections import Section
from evalvae.report.tables import SPEED_OPS
from evalvae.report.verdict import join
from evalvae.vocab import BENCH_OPS

KEYS = ("vae", "resolution", "batch", "dtype", "mode")  # one configuration, all its ops
PLOT = re.compile(r"^bench_(time|memory)_b\d+\.png$")  # the plots evalvae bench writes beside bench.csv


def ms(value: float) -> str:
    """Milliseconds with three significant digits, at most: 2.15, 37.7, 377, 3,770."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def mib(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:,.0f}"


def passing(bench: pd.DataFrame) -> pd.DataFrame:
    """Rows that were measured: status ok (where the file has a status) and a finite time per image."""
    rows = bench
    if "status" in rows:
        rows = rows[rows["status"].astype(str).str.lower() == "ok"]
    times = pd.to_numeric(rows.get("ms_per_image_median"), errors="coerce")
    return rows[times.notna() & (times > 0)]


def speed_op(rows: pd.DataFrame) -> str | None:
    """The op the overview shows: the first of SPEED_OPS measured, else the first op in the file."""
    ops = list(dict.fromkeys(rows["op"].astype(str))) if "op" in rows and not rows.empty else []
    return next((o for o in SPEED_OPS if o in ops), ops[0] if ops else None)


def fastest(rows: pd.DataFrame, vae: str, dtype: str = "") -> pd.Series | None:
    """``vae``'s fastest row among ``rows``: untiled (mode plain) where it has such rows, and in ``dtype``
    where it has one."""
    mine = rows[rows["vae"].astype(str) == vae]
    if "mode" in mine and (mine["mode"] == "plain").any():
        mine = mine[mine["mode"] == "plain"]
    if dtype and "dtype" in mine and (mine["dtype"] == dtype).any():
        mine = mine[mine["dtype"] == dtype]
    if mine.empty:
        return None
    return mine.loc[pd.to_numeric(mine["ms_per_image_median"]).idxmin()]


def configuration(row: pd.Series) -> str:
    """``fp32, plain, batch 1, NVIDIA H200``: the bench row's configuration."""
    device = row.get("device_name") if pd.notna(row.get("device_name", math.nan)) else row.get("device")
    parts = [str(row[k]) for k in ("dtype", "mode") if k in row and pd.notna(row[k])]
    parts += [f"batch {int(row['batch'])}"] if "batch" in row and pd.notna(row["batch"]) else []
    return ", ".join(parts + ([str(device)] if device is not None and pd.notna(device) else []))


def _px(values) -> str:
    return join([f"{int(v)}" for v in sorted(set(values))]) + " px"


@dataclass
class Speed:
    """The bench columns of the overview: a header, a cell per (section slug, entry label), and what was left out."""

    header: list[str]
    cells: dict[tuple[str, str], dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def overview_speed(sections: list[Section], bench: pd.DataFrame) -> Speed | None:
    """The bench's speed and peak memory for each (section, VAE) it measured at the section's resolution."""
    if bench.empty or "vae" not in bench or not sections:
        return None
    ok = passing(bench)
    op = speed_op(ok) or speed_op(bench)
    if op is None:
        return None
    shown = ok[ok["op"].astype(str) == op]
    speed = Speed([f"{op} ms/image (bench)", "peak MiB (bench)"])
    notes: list[str] = []
    absent: list[str] = []  # VAEs the bench never measured
    for s in sections:
        res = s.dataset.get("resolution")
        vaes = list(dict.fromkeys(e.vae for e in s.entries))
        if res is None:
            notes.append(f"{s.title} is at each image's native size: no bench resolution matches it")
            continue
        here = (
            shown[pd.to_numeric(shown["resolution"], errors="coerce") == int(res)] if "resolution" in shown else shown
        )
        matched = set()
        for e in s.entries:
            row = fastest(here, e.vae, e.dtype)
            if row is None:
                continue
            matched.add(e.vae)
            speed.cells[(s.slug, e.label)] = {
                "ms": ms(float(row["ms_per_image_median"])),
                "mem": mib(float(row.get("peak_mem_mb", math.nan))),
                "detail": f"{op} at {int(res)} px, {configuration(row)}",
            }
        for vae in (v for v in vaes if v not in matched):
            mine = bench[bench["vae"].astype(str) == vae]
            elsewhere = shown[shown["vae"].astype(str) == vae]
            if mine.empty:
                absent.append(vae)
            elif not elsewhere.empty:
                notes.append(
                    f"bench has {op} rows for {vae} at {_px(elsewhere['resolution'])} only, none at {int(res)} px "
                    f"({s.title})"
                )
            else:
                statuses = ", ".join(sorted(set(mine.get("status", pd.Series(["?"])).astype(str))))
                notes.append(f"bench has no passing {op} row for {vae} (status: {statuses})")
    if absent:
        notes.insert(0, f"bench has no rows for {join(list(dict.fromkeys(absent)))}")
    if not speed.cells:
        speed.header = []
    evaluated = {e.vae for s in sections for e in s.entries}
    sizes = {int(s.dataset["resolution"]) for s in sections if s.dataset.get("resolution") is not None}
    others = [v for v in dict.fromkeys(bench["vae"].astype(str)) if v not in evaluated]
    if others:
        notes.append(
            f"bench rows for {join(others)} not shown: no run here evaluated {'it' if len(others) == 1 else 'them'}"
        )
    if "resolution" in bench:
        mine = bench[bench["vae"].astype(str).isin(evaluated)]
        unused = sorted(set(pd.to_numeric(mine["resolution"], errors="coerce").dropna().astype(int)) - sizes)
        if unused:
            notes.append(f"bench rows at {_px(unused)} not shown: no section here is at that size")
    other_ops = [o for o in dict.fromkeys(bench["op"].astype(str)) if o != op] if "op" in bench else []
    if other_ops and speed.cells:
        notes.append(
            f"bench {join(other_ops)} rows not shown here (the overview shows {op}; all are in the bench section)"
        )
    failed = bench[~bench.index.isin(ok.index)]
    if not failed.empty:
        statuses = failed["status"].astype(str) if "status" in failed else pd.Series(["unmeasured"] * len(failed))
        counts = statuses.value_counts()
        said = ", ".join(f"{n} {s}" for s, n in counts.items())
        notes.append(f"{len(failed)} bench row(s) that did not pass are not used ({said})")
    speed.notes = list(dict.fromkeys(notes))
    return speed if speed.cells or speed.notes else None


def _table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    keys = [k for k in KEYS if k in df]
    ops = [o for o in BENCH_OPS if o in set(df["op"])] + sorted(set(df["op"].astype(str)) - set(BENCH_OPS))
    header = ["VAE", "px", "batch", "dtype", "mode"][: len(keys)] if keys == list(KEYS) else keys
    header = header + [f"{op} ms/image" for op in ops] + ["peak MiB"]
    rows = []
    for key, g in df.groupby(keys, sort=False, dropna=False):
        cells = []
        for op in ops:
            r = g[g["op"].astype(str) == op]
            if r.empty:
                cells.append("–")
            elif str(r.iloc[0].get("status", "ok")).lower() != "ok":
                cells.append(str(r.iloc[0]["status"]))
            else:
                cells.append(ms(float(r.iloc[0]["ms_per_image_median"])))
        good = passing(g)
        peak = pd.to_numeric(good.get("peak_mem_mb"), errors="coerce").max() if not good.empty else math.nan
        rows.append([str(k) for k in (key if isinstance(key, tuple) else (key,))] + cells + [mib(peak)])
    return header, rows


def _notes(df: pd.DataFrame) -> list[str]:
    notes = []
    if "status" in df:
        bad = df[df["status"].astype(str).str.lower() != "ok"]
        for (vae, status), g in bad.groupby(["vae", "status"], sort=False):
            where = [f"{r.op} at {r.resolution} px, {configuration(pd.Series(r._asdict()))}" for r in g.itertuples()]
            error = next((str(e) for e in g.get("error", []) if isinstance(e, str) and e.strip()), "")
            more = f", and {len(where) - 3} more" if len(where) > 3 else ""
            notes.append(f"{vae}: {status} for {'; '.join(where[:3])}{more}" + (f" ({error[:160]})" if error else ""))
    if "nonfinite" in df:
        flagged = df[df["nonfinite"].astype(str).str.lower() == "true"]
        for vae, g in flagged.groupby("vae", sort=False):
            notes.append(f"{vae}: non-finite output in {len(g)} configuration(s), e.g. {g.iloc[0]['dtype']}")
    return notes


def bench_recommendation(df: pd.DataFrame) -> str:
    """The fastest VAE and the one with the least peak memory at each resolution, or one VAE described."""
    ok = passing(df)
    op = speed_op(ok)
    if op is None:
        return "No configuration was measured (see the notes)."
    rows = ok[ok["op"].astype(str) == op]
    vaes = list(dict.fromkeys(df["vae"].astype(str)))
    sizes = sorted(set(pd.to_numeric(rows["resolution"], errors="coerce").dropna().astype(int)))
    basis = (
        f"Based on the median {op} time per image and its peak memory (fastest passing untiled configuration per VAE)"
    )
    if len(vaes) == 1:
        times = []
        for r in sizes:
            row = fastest(rows[rows["resolution"] == r], vaes[0])
            peak = mib(float(row.get("peak_mem_mb")))
            times.append(f"{ms(float(row['ms_per_image_median']))} ms at {r} px ({peak} MiB)")
        return f"One VAE, so nothing to compare: {vaes[0]} takes {', '.join(times)} to {op} an image."

    def winners(column: str, fmt) -> str:
        """Per resolution, the VAE(s) with the lowest ``column`` (equal as shown with ``fmt``: a tie)."""
        by: dict[tuple[str, ...], list[int]] = {}
        for r in sizes:
            at = rows[rows["resolution"] == r]
            values = {}
            for v in vaes:
                best = fastest(at, v)
                if best is not None and pd.notna(best.get(column)):
                    values[v] = float(best[column])
            if values:
                low = fmt(min(values.values()))
                by.setdefault(tuple(v for v, x in values.items() if fmt(x) == low), []).append(r)
        if len(by) == 1 and len(sizes) > 1 and len(next(iter(by.values()))) == len(sizes):
            return f"{join(list(next(iter(by))))} at every resolution ({_px(sizes)})"
        return "; ".join(f"{join(list(w))} at {_px(at)}" for w, at in by.items())

    parts = [f"fastest: {winners('ms_per_image_median', ms)}"]
    if "peak_mem_mb" in rows and rows["peak_mem_mb"].notna().any():
        parts.append(f"least memory: {winners('peak_mem_mb', mib)}")
    if "status" in df:
        oom = df[df["status"].astype(str) == "oom"]
        for vae, g in oom.groupby("vae", sort=False):
            parts.append(f"{vae} ran out of memory at {_px(pd.to_numeric(g['resolution']))}")
    return f"{basis}: " + "; ".join(parts) + "."


def bench_sections(bench: pd.DataFrame, plot_dir: Path) -> list[dict]:
    """One section per bench file: its table, notes, the plots beside it (copied into ``plot_dir``)."""
    views = []
    if bench.empty:
        return views
    for i, (source, df) in enumerate(bench.groupby("source", sort=False)):
        folder = Path(source).parent
        header, rows = _table(df)
        plots = []
        for png in sorted(p for p in folder.iterdir() if PLOT.match(p.name)) if folder.is_dir() else []:
            dst = plot_dir / f"bench-{i}-{png.name}"
            plot_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, dst)
            title = "Time per image" if "_time_" in png.name else "Peak memory"
            plots.append({"title": f"{title} vs resolution", "path": dst, "caption": png.name, "wide": True})
        devices = df.get("device_name", df.get("device", pd.Series(dtype=str))).dropna().astype(str).unique()
        view = dict(title=f"Benchmark · {folder.resolve().name}", slug=f"bench-{i}", source=str(source))
        view |= dict(device=", ".join(devices) or "?", header=header, rows=rows, plots=plots, notes=_notes(df))
        views.append(view | dict(recommendation=bench_recommendation(df), vaes=df["vae"].nunique()))
    return views
