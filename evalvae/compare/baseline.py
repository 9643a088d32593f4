"""Results to compare, from a run directory, a bench directory or a baseline file, in one shape.

A baseline file is a small JSON meant to be committed next to the code it guards::

    {"format": "evalvae-baseline/1", "created": ..., "reason": ...,
     "protocol": {"dataset": {...}, "quantize": true, "metrics": {"psnr": {...}}},
     "vaes": {"taef2": {weights, dtype, ...}},
     "results": {"taef2": {"psnr": {"higher_is_better": true, "mean": .., "std": .., "n": 24,
                                     "values": {"kodim01.png": 27.6455, ...}}}},
     "info": {"psnr": {"title": "PSNR (dB)", "higher_is_better": true, "decimals": 2,
                       "tolerance": {"abs": 0.01, "rel": 0.0}, ...}},
     "images": {"taef2": {"kodim01.png": "<sha256 of the scored pixels>", ...}},
     "files": {"kodim01.png": "<sha256 of the file>", ...},
     "speed": [{"vae": .., "op": .., ..., "ms_per_image_median": .., "ms_per_image_iqr": ..}]}

``info`` is each metric's :class:`~evalvae.metrics.info.MetricInfo` as the results recorded it
(``metrics.json``), so a baseline compares with its directions and default tolerances without the
run directory.
``images`` holds, per VAE, the sha256 of each original's pixels as scored (``per_image.image_sha256``),
and ``files`` the sha256 of each image's file (``per_image.file_sha256``; none for a stream), so
that images changed under the same names are told apart from a change of the VAE (both are absent
from results written before evalvae recorded them).

Means and stds are stored at full precision (they are what tolerances apply to); per-image
values, kept for the paired test, are rounded to :data:`VALUE_DIGITS` significant digits.
A missing value (NaN) is written as ``null``; an infinite one (the PSNR of an exact
reconstruction, and the mean of a set holding one) as the string ``"inf"`` or ``"-inf"``, so the
file stays strict JSON.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from evalvae.bench.schema import KEY_COLUMNS, MEASURE_COLUMNS
from evalvae.errors import EvalvaeError
from evalvae.io import atomic_write_text, json_ready
from evalvae.metrics.info import MetricInfo, recorded_info
from evalvae.results import read_per_image

IMAGE_SHA256 = "image_sha256"  # per_image's column: the sha256 of each original's pixels as scored
FILE_SHA256 = "file_sha256"  # ... and of the file it was read from

log = logging.getLogger(__name__)

FORMAT = "evalvae-baseline/1"
VALUE_DIGITS = 6  # per-image values: 6 significant digits (PSNR to 1e-4 dB, SSIM to 1e-6)
SPEED_KEY = tuple(KEY_COLUMNS)  # bench.csv's key and measurements
SPEED_VALUES = tuple(MEASURE_COLUMNS)
VAE_FIELDS_DROPPED = ("vae", "status", "source")  # where weights sat on one machine says nothing about them


class UnusableInput(EvalvaeError):
    """A path holds nothing that can be compared, or holds it in a shape evalvae cannot read."""


@dataclass
class MetricResult:
    """One (vae, metric): summary statistics and, for per-image metrics, the values by image id."""

    mean: float
    std: float
    n: int
    info: MetricInfo  # as the results record it
    values: dict[str, float] | None = None

    @property
    def higher_is_better(self) -> bool | None:
        return self.info.higher_is_better


@dataclass
class SpeedResult:
    """One bench.csv row: medians and spreads of one (vae, op, resolution, batch, dtype, mode)."""

    device: str
    status: str
    values: dict[str, float]


@dataclass
class Snapshot:
    """Everything ``compare`` needs from one side, whatever file it came from."""

    source: str
    protocol: dict = field(default_factory=dict)
    results: dict[str, dict[str, MetricResult]] = field(default_factory=dict)
    speed: dict[tuple[str, ...], SpeedResult] = field(default_factory=dict)
    vaes: dict[str, dict] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # vae -> error, for VAEs that did not run
    images: dict[str, dict[str, str]] = field(default_factory=dict)  # vae -> image -> sha256 of its scored pixels
    files: dict[str, str] = field(default_factory=dict)  # image -> sha256 of its file
    reason: str | None = None

    @property
    def empty(self) -> bool:
        return not self.results and not self.speed


def _float(x) -> float:
    """A stored number: None/NaN -> NaN; ``"inf"``/``"-inf"`` (as :func:`json_ready` writes them) -> ±inf."""
    return math.nan if x is None or pd.isna(x) else float(x)


def round_value(x: float) -> float:
    """A per-image value at the precision a baseline file keeps."""
    return float(f"{x:.{VALUE_DIGITS}g}")


def value_resolution(values) -> float:
    """The spacing of rounded values as large as the largest of ``values`` (their last kept digit)."""
    top = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    return 10.0 ** (math.floor(math.log10(top)) - VALUE_DIGITS + 1) if top > 0 else 0.0


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UnusableInput(f"cannot read {path}: {e}") from e


def _quality_from_run(run: Path, snap: Snapshot) -> None:
    if not (run / "metrics.json").is_file():
        raise UnusableInput(
            f"{run} has summary.csv but no metrics.json, so its protocol is unknown; pass a directory written by evalvae run"
        )
    meta = _read_json(run / "metrics.json")
    dataset = {k: v for k, v in meta.get("dataset", {}).items() if k != "root"}
    snap.protocol = {**meta, "dataset": dataset}
    entries = meta.get("metrics", {})
    infos: dict[str, MetricInfo] = {}
    summary = pd.read_csv(run / "summary.csv", dtype={"vae": str, "metric": str})
    per_image = read_per_image(run)
    if per_image is not None and IMAGE_SHA256 in per_image.columns:
        hashed = per_image[per_image[IMAGE_SHA256].notna()]
        for vae, rows in hashed.groupby(hashed["vae"].astype(str), sort=False):
            snap.images[vae] = dict(zip(rows["image"].astype(str), rows[IMAGE_SHA256].astype(str)))
    if per_image is not None and FILE_SHA256 in per_image.columns:
        hashed = per_image[per_image[FILE_SHA256].notna()]
        snap.files = dict(zip(hashed["image"].astype(str), hashed[FILE_SHA256].astype(str)))
    for row in summary.itertuples(index=False):
        values = None
        if per_image is not None and row.metric in per_image.columns:
            rows = per_image[per_image["vae"] == row.vae]
            # images whose reconstruction was non-finite stay, as NaN, so compare can tell them from absent ones
            flagged = rows["nonfinite"].fillna(False).astype(bool) if "nonfinite" in rows.columns else False
            rows = rows[rows[row.metric].notna() | flagged]
            values = {str(i): float(v) for i, v in zip(rows["image"], rows[row.metric])}
        if row.metric not in infos:
            where = f"{run / 'metrics.json'}: metrics.{row.metric}.info"
            infos[row.metric] = recorded_info(row.metric, entries.get(row.metric), where)
        snap.results.setdefault(row.vae, {})[row.metric] = MetricResult(
            _float(row.mean), _float(row.std), int(row.n), infos[row.metric], values
        )
    if (run / "vaes.json").is_file():
        for info in _read_json(run / "vaes.json"):
            if info.get("status") == "failed":
                snap.failed[info["vae"]] = info.get("error", "failed")
            else:
                snap.vaes[info["vae"]] = {k: v for k, v in info.items() if k not in VAE_FIELDS_DROPPED}


def read_bench(path: Path) -> dict[tuple[str, ...], SpeedResult]:
    """``bench.csv`` rows keyed by :data:`SPEED_KEY` (as strings, exactly as written)."""
    table = pd.read_csv(path, dtype=dict.fromkeys((*SPEED_KEY, "device", "status"), str))
    missing = [c for c in (*SPEED_KEY, "device", "ms_per_image_median", "ms_per_image_iqr") if c not in table.columns]
    if missing:
        raise UnusableInput(
            f"{path} lacks column(s) {', '.join(missing)}; expected the bench.csv written by evalvae bench"
        )
    out = {}
    for rec in table.to_dict("records"):
        key = tuple(str(rec[k]) for k in SPEED_KEY)
        if key in out:
            raise UnusableInput(f"{path} holds two rows for {dict(zip(SPEED_KEY, key))}")
        out[key] = _speed(rec, "ok" if pd.isna(rec.get("status")) else str(rec["status"]))
    return out


def _speed(rec: dict, status: str) -> SpeedResult:
    return SpeedResult(str(rec["device"]), status, {k: _float(rec.get(k)) for k in SPEED_VALUES if k in rec})


def from_directory(path: Path) -> Snapshot:
    """A run directory (summary.csv, metrics.json, per_image.*) and/or a bench directory (bench.csv)."""
    snap = Snapshot(str(path))
    if (path / "summary.csv").is_file():
        _quality_from_run(path, snap)
    if (path / "bench.csv").is_file():
        snap.speed = read_bench(path / "bench.csv")
    if snap.empty and not snap.failed:
        raise UnusableInput(f"{path} holds neither summary.csv (evalvae run) nor bench.csv (evalvae bench)")
    return snap


def from_baseline_file(path: Path) -> Snapshot:
    """A baseline JSON written by :func:`write_baseline`."""
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UnusableInput(f"{path} is not an evalvae baseline (format={found!r}; expected {FORMAT!r})")
    try:
        return _parse_baseline(path, data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UnusableInput(
            f"{path} is a malformed evalvae baseline ({type(e).__name__}: {e}); regenerate it with --update-baseline"
        ) from e


def _parse_baseline(path: Path, data: dict) -> Snapshot:
    snap = Snapshot(str(path), protocol=data.get("protocol", {}), vaes=data.get("vaes", {}), reason=data.get("reason"))
    snap.images = {
        str(v): {str(i): str(h) for i, h in hashes.items()} for v, hashes in (data.get("images") or {}).items()
    }
    snap.files = {str(i): str(h) for i, h in (data.get("files") or {}).items()}
    stated = data.get("info") or {}
    for vae, metrics in data.get("results", {}).items():
        for metric, r in metrics.items():
            info = recorded_info(metric, {"info": stated.get(metric)}, f"{path}: info.{metric}")
            values = {k: _float(v) for k, v in r["values"].items()} if r.get("values") is not None else None
            mean, std = _float(r["mean"]), _float(r.get("std"))
            snap.results.setdefault(vae, {})[metric] = MetricResult(mean, std, int(r["n"]), info, values)
    for rec in data.get("speed", []):
        snap.speed[tuple(str(rec[k]) for k in SPEED_KEY)] = _speed(rec, str(rec.get("status", "ok")))
    return snap


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a run/bench directory or a baseline ``.json`` file."""
    path = Path(path)
    if path.is_dir():
        return from_directory(path)
    if path.is_file():
        return from_baseline_file(path)
    raise UnusableInput(f"{path} does not exist; pass a run directory, a bench directory or a baseline .json")


def merge(snapshots: list[Snapshot]) -> Snapshot:
    """One snapshot from several (say a run directory and a bench directory); each part from one source only."""
    if len(snapshots) == 1:
        return snapshots[0]
    out = Snapshot(" + ".join(s.source for s in snapshots))
    for s in snapshots:
        if s.results and out.results:
            raise UnusableInput(f"both {out.source} and {s.source} hold quality results; pass one run directory")
        if s.speed and out.speed:
            raise UnusableInput(f"both {out.source} and {s.source} hold bench results; pass one bench directory")
        if s.results or s.failed:
            out.protocol, out.results, out.vaes, out.failed = s.protocol, s.results, s.vaes, s.failed
            out.images, out.files = s.images, s.files
        out.speed = out.speed or s.speed
    return out


def _result_dict(r: MetricResult) -> dict:
    out = {"higher_is_better": r.higher_is_better, "mean": r.mean, "std": r.std, "n": r.n}
    if r.values is not None:
        out["values"] = {k: round_value(v) for k, v in sorted(r.values.items())}
    return out


def baseline_dict(snap: Snapshot, reason: str | None = None) -> dict:
    """The baseline-file form of ``snap``."""
    results = {vae: {metric: _result_dict(r) for metric, r in metrics.items()} for vae, metrics in snap.results.items()}
    infos = {m: r.info.to_dict() for metrics in snap.results.values() for m, r in metrics.items()}
    speed = [
        {**dict(zip(SPEED_KEY, key)), "device": s.device, "status": s.status, **s.values}
        for key, s in sorted(snap.speed.items())
    ]
    return json_ready(
        {
            "format": FORMAT,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reason": reason,
            "protocol": snap.protocol,
            "vaes": snap.vaes,
            "results": results,
            "info": dict(sorted(infos.items())),
            **({"images": {v: dict(sorted(h.items())) for v, h in snap.images.items()}} if snap.images else {}),
            **({"files": dict(sorted(snap.files.items()))} if snap.files else {}),
            "speed": speed,
        }
    )


def write_baseline(snap: Snapshot, path: str | Path, reason: str | None = None) -> Path:
    """Write ``snap`` as a baseline JSON at ``path``, atomically (a crash leaves the old file whole)."""
    path = Path(path)
    if path.suffix != ".json":
        raise UnusableInput(f"baseline path {path} must end in .json")
    atomic_write_text(path, json.dumps(baseline_dict(snap, reason), indent=1, allow_nan=False) + "\n")
    return path
