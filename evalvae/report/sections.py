"""Grouping runs into comparable sections: same dataset, same geometry, same pixel convention.

Runs whose protocols differ (another dataset, resolution, crop or quantization) land in separate
sections and are never averaged or paired together. Within a section each (run, VAE) pair is an
:class:`Entry` with a label unique in that section.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evalvae.report.format import metric_name
from evalvae.report.load import CATEGORY, Run
from evalvae.results import known_direction

# Dataset fields that describe the set of images rather than how they are scored.
NOT_PROTOCOL = {"n_files", "n_evaluated"}


@dataclass
class Entry:
    """One VAE of one run, as it appears in a section."""

    label: str
    vae: str
    run: Run

    @property
    def timing(self) -> dict:
        t = self.run.timings
        rows = t[t["vae"] == self.vae].to_dict("records") if not t.empty and "vae" in t else []
        return rows[-1] if rows else {}

    @property
    def info(self) -> dict:
        rows = [v for v in self.run.vaes if v.get("vae") == self.vae]
        return rows[-1] if rows else {}

    @property
    def dtype(self) -> str:
        return str(self.info.get("dtype") or self.timing.get("dtype") or "")


@dataclass
class Section:
    title: str
    slug: str
    dataset: dict
    quantize: bool | None
    pixels: str
    entries: list[Entry]
    per_image: pd.DataFrame  # entry, image, [category], one column per per-image metric
    set_level: pd.DataFrame  # entry, metric, mean, std, n
    metrics: list[str]
    set_metrics: list[str]
    metric_protocols: dict[str, dict]
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return list({id(e.run): e.run for e in self.entries}.values())

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]

    def direction(self, metric: str) -> bool | None:
        """True if higher is better, False if lower is, None if unknown."""
        value = self.metric_protocols.get(metric, {}).get("higher_is_better")
        return bool(value) if value is not None else known_direction(metric)

    @property
    def primary_metric(self) -> str | None:
        """The first per-image metric with a known direction (PSNR under the default metrics)."""
        return next((m for m in self.metrics if self.direction(m) is not None), None)


def protocol_key(run: Run) -> str:
    dataset = {k: v for k, v in (run.protocol.get("dataset") or {}).items() if k not in NOT_PROTOCOL}
    return json.dumps({"dataset": dataset, "quantize": run.protocol.get("quantize")}, sort_keys=True, default=str)


def section_title(dataset: dict) -> str:
    name = str(dataset.get("name") or "dataset")
    root = str(dataset.get("root") or "")
    if name == "folder" and root:
        name = Path(root).name or name
    res = dataset.get("resolution")
    return f"{name} · {res}×{res}" if res else f"{name} · native size"


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower().replace("×", "x")).strip("-") or "section"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _entry_labels(pairs: list[tuple[Run, str]], dtypes: list[str]) -> list[str]:
    """The VAE name where unique; else name plus dtype where that tells them apart; else plus the run."""
    names = [v for _, v in pairs]
    labels = []
    for (run, vae), dtype in zip(pairs, dtypes):
        if names.count(vae) == 1:
            labels.append(vae)
        elif dtype and sum(1 for (_, v), d in zip(pairs, dtypes) if v == vae and d == dtype) == 1:
            labels.append(f"{vae} · {dtype}")
        else:
            labels.append(f"{vae} · {run.label}")
    return labels


def _unavailable_notes(entries: list[Entry]) -> list[str]:
    """Why metrics are unavailable, from summary.csv's ``note`` column (one line per metric and reason)."""
    reasons: dict[tuple[str, str], list[str]] = {}
    for e in entries:
        s = e.run.summary
        if "note" not in s:
            continue
        rows = s[(s["vae"] == e.vae) & s["mean"].isna() & s["note"].notna() & (s["note"].astype(str) != "")]
        for metric, note in zip(rows["metric"], rows["note"].astype(str)):
            reasons.setdefault((metric, note), []).append(e.label)
    every = len(entries)
    return [
        f"{metric_name(metric)} unavailable for {'every VAE' if len(labels) == every else ', '.join(labels)}: {note}"
        for (metric, note), labels in reasons.items()
    ]


def build_section(runs: list[Run], title: str, slug: str) -> Section:
    """Entries, tidy frames and protocol notes of runs that share one protocol."""
    pairs = [(run, vae) for run in runs for vae in run.vae_names]
    dtypes = [Entry("", vae, run).dtype for run, vae in pairs]
    entries = [Entry(label, vae, run) for label, (run, vae) in zip(_entry_labels(pairs, dtypes), pairs)]

    metrics: list[str] = []
    protocols: dict[str, dict] = {}
    notes: list[str] = []
    frames, set_rows = [], []
    for e in entries:
        run = e.run
        for m, spec in (run.protocol.get("metrics") or {}).items():
            if m in protocols and protocols[m] != spec:
                notes.append(f"{m} was computed with different settings in run {run.label}: {spec} (first seen: {protocols[m]})")
            protocols.setdefault(m, spec)
        cols = run.metric_columns
        metrics += [c for c in cols if c not in metrics]
        rows = run.per_image[run.per_image["vae"] == e.vae] if not run.per_image.empty else run.per_image
        if not rows.empty:
            keep = ["image"] + ([CATEGORY] if CATEGORY in rows else []) + cols
            frames.append(rows[keep].assign(entry=e.label))
    for e in entries:  # set-level: summary rows of metrics that no run of the section scored per image
        summary = e.run.summary[(e.run.summary["vae"] == e.vae) & ~e.run.summary["metric"].isin(metrics)]
        set_rows += [{"entry": e.label, **r} for r in summary[["metric", "mean", "std", "n"]].to_dict("records")]
    per_image = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["entry", "image"])
    per_image = per_image[["entry", "image"] + [c for c in per_image.columns if c not in ("entry", "image")]]
    set_level = pd.DataFrame(set_rows, columns=["entry", "metric", "mean", "std", "n"])
    set_metrics = list(dict.fromkeys(set_level["metric"]))

    notes += _unavailable_notes(entries)
    counts = per_image.groupby("entry", sort=False)["image"].nunique() if not per_image.empty else pd.Series(dtype=int)
    if counts.nunique() > 1:
        notes.append(
            "VAEs were scored on different numbers of images (" + ", ".join(f"{k}: {v}" for k, v in counts.items())
            + "); each mean uses its own images, paired statistics use the images both VAEs scored"
        )  # fmt: skip
    first = runs[0].protocol
    return Section(
        title=title, slug=slug, dataset=dict(first.get("dataset") or {}), quantize=first.get("quantize"),
        pixels=str(first.get("pixels") or ""), entries=entries, per_image=per_image, set_level=set_level,
        metrics=metrics, set_metrics=set_metrics, metric_protocols=protocols, notes=notes,
    )  # fmt: skip


def group_sections(runs: list[Run]) -> list[Section]:
    """One section per distinct protocol, in the order runs were given."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(protocol_key(run), []).append(run)
    titles = [section_title(g[0].protocol.get("dataset") or {}) for g in groups.values()]
    taken: set[str] = set()
    sections = []
    for title, group in zip(titles, groups.values()):
        if titles.count(title) > 1:  # same dataset and size, other crop or quantization
            title = f"{title} · runs {', '.join(r.label for r in group)}"
        sections.append(build_section(group, title, _slug(title, taken)))
    return sections
