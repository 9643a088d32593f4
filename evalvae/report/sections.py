"""Grouping runs into comparable sections, and what a reader must know next to each number.

Runs land in one section only when their numbers mean the same thing: the same dataset (its
description, the set of image ids scored and the number of images evaluated), geometry and
quantization, and, for every metric both measured, the same settings in ``metrics.json`` (LPIPS
backbone and weights, rFID resize and extractor, KID subsets, the reference statistics' content
key...). Provenance (which file the weights were read from, whether reference statistics came
from the cache) and a metric's implementation (the same definition computed by another library)
do not separate runs; a metric only one run measured does not either, and neither does a metric's
info (title, decimals, default tolerance: how its numbers read, taken from the first run that
records the metric, :func:`evalvae.metrics.info.recorded_info`). Sections that share a
dataset and size get titles naming what differs. Within a section each (run, VAE) pair is an
:class:`Entry` with a label unique in that section.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evalvae.compare.comparison import flatten, is_info_field, is_noted, is_provenance_field
from evalvae.metrics.info import MetricInfo, recorded_info
from evalvae.report.format import metric_name, num
from evalvae.report.load import CATEGORY, Run

# summary.csv note parts that restate the protocol shown beside the table, not caveats on a number.
RESTATED = re.compile(
    r"^(extractor \S+|\d+ subsets of \d+|paired estimator over \d+ image pairs"
    r"|independent-samples estimator \(as torch-fidelity, clean-fid\)|std over subsets, ddof \d+)$"
)


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
    cell_notes: dict[tuple[str, str], list[str]] = field(
        default_factory=dict
    )  # (entry, metric) -> caveats on that value
    infos: dict[str, MetricInfo] = field(default_factory=dict)  # as metrics.json records them

    def info(self, metric: str) -> MetricInfo:
        """How ``metric`` reads: its recorded info, else the registered metric's of that name, else neutral."""
        return self.infos.get(metric) or recorded_info(metric, self.metric_protocols.get(metric))

    @property
    def runs(self) -> list[Run]:
        return list({id(e.run): e.run for e in self.entries}.values())

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]

    def direction(self, metric: str) -> bool | None:
        """True if higher is better, False if lower is, None if unknown."""
        return self.info(metric).higher_is_better

    def is_quality(self, metric: str) -> bool:
        """Whether ``metric`` is a quality to rank, test and plot (not a fact such as bpp or a region count)."""
        return self.info(metric).quality

    @property
    def quality_metrics(self) -> list[str]:
        """The per-image metrics that are qualities, in order."""
        return [m for m in self.metrics if self.is_quality(m)]

    @property
    def primary_metric(self) -> str | None:
        """The first per-image quality with a known direction (PSNR under the default metrics)."""
        return next((m for m in self.quality_metrics if self.direction(m) is not None), None)

    def whole_set_subsets(self, metric: str, n) -> int | None:
        """The subset size of a set-level metric scored on subsets (KID) where ``n`` images are not
        more than it, so that every subset is the whole set; else None."""
        size = (self.metric_protocols.get(metric) or {}).get("subset_size")
        if isinstance(size, bool) or not isinstance(size, int | float) or not n or pd.isna(n):
            return None
        return int(size) if n <= size else None

    def scored(self, metric: str) -> dict[str, set[str]]:
        """The images each entry has a value of per-image ``metric`` for (entries without any left out)."""
        if metric not in self.per_image:
            return {}
        rows = self.per_image[self.per_image[metric].notna()]
        sets = rows.groupby("entry", sort=False)["image"].agg(lambda s: set(s.astype(str))).to_dict()
        return {lab: sets[lab] for lab in self.labels if lab in sets}

    def shared_images(self, metric: str) -> set[str]:
        """The images every entry with a value of ``metric`` scored: what its VAEs are ranked on."""
        sets = list(self.scored(metric).values())
        return set.intersection(*sets) if sets else set()


def image_set(run: Run) -> str | None:
    """A fingerprint of the image ids the run scored (None for a run without per-image rows)."""
    if run.per_image.empty:
        return None
    ids = sorted(set(run.per_image["image"].astype(str)))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def identity(run: Run) -> dict:
    """What must be equal for two runs to share a section, metrics aside: dataset, N, image set, quantization.

    The number of files listed is left out (files skipped as unreadable do not change what was
    scored), and so is the dataset's folder when ``metrics.json`` holds a content fingerprint.
    """
    dataset = {k: v for k, v in (run.protocol.get("dataset") or {}).items() if k != "n_files"}
    if dataset.get("fingerprint"):
        dataset.pop("root", None)
    return {"dataset": dataset, "quantize": run.protocol.get("quantize"), "images": image_set(run)}


def metric_settings(spec: dict, noted: bool = False) -> dict | None:
    """A metric's settings as flat dotted keys, without provenance and info (and without how it was
    computed, its implementation, SSIM backend and code version, unless ``noted``); None for a metric
    the run could not compute."""
    if not isinstance(spec, dict) or spec.get("available") is False:
        return None
    return {
        k: v
        for k, v in flatten(spec).items()
        if not is_provenance_field(k) and not is_info_field(k) and (noted or not is_noted(k))
    }


def protocol_key(run: Run) -> str:
    """The run's identity as a string (runs in one section share it; their metrics must agree too)."""
    return json.dumps(identity(run), sort_keys=True, default=str)


def run_settings(run: Run) -> dict[str, dict]:
    out = {}
    for m, spec in (run.protocol.get("metrics") or {}).items():
        settings = metric_settings(spec)
        if settings is not None:
            out[m] = settings
    return out


def scored_sizes(runs: list[Run]) -> list[tuple[int, int]]:
    """The image sizes (width, height) the runs' per-image rows were scored at, largest first: the
    resolution itself, or less where it is not a multiple of a VAE's downsampling factor."""
    sizes = set()
    for run in runs:
        df = run.per_image
        if not df.empty and {"width", "height"} <= set(df.columns):
            sizes |= {(int(w), int(h)) for w, h in df[["width", "height"]].dropna().drop_duplicates().to_numpy()}
    return sorted(sizes, reverse=True)


def section_title(dataset: dict, sizes: list[tuple[int, int]] = ()) -> str:
    """``name · W×H``: the size scored (``sizes``, from :func:`scored_sizes`), else the resolution asked for."""
    name = str(dataset.get("name") or "dataset")
    root = str(dataset.get("root") or "")
    if name == "folder" and root:
        name = Path(root).name or name
    res = dataset.get("resolution")
    if not res:
        return f"{name} · native size"
    return f"{name} · " + (", ".join(f"{w}×{h}" for w, h in sizes) if sizes else f"{res}×{res}")


def _named(runs: list[Run]) -> str:
    """``"NAME · "`` where every run of a section was started with the published protocol preset ``protocol=NAME``,
    else ``""``. Runs share a section by their settings, whatever preset (or none) they were started with."""
    names = {(run.protocol.get("named_protocol") or {}).get("name") for run in runs}
    return f"{names.pop()} · " if len(names) == 1 and None not in names else ""


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


def _unavailable_notes(entries: list[Entry], infos: dict[str, MetricInfo]) -> list[str]:
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
        f"{metric_name(infos.get(metric, metric))} unavailable for "
        f"{'every VAE' if len(labels) == every else ', '.join(labels)}: {note}"
        for (metric, note), labels in reasons.items()
    ]


def _summary_notes(entries: list[Entry]) -> dict[tuple[str, str], list[str]]:
    """Caveats summary.csv notes on values that exist (non-standard weights, images excluded, a biased rFID)."""
    out: dict[tuple[str, str], list[str]] = {}
    for e in entries:
        s = e.run.summary
        if "note" not in s:
            continue
        rows = s[(s["vae"] == e.vae) & s["mean"].notna() & s["note"].notna()]
        for metric, note in zip(rows["metric"], rows["note"].astype(str)):
            parts = [p.strip() for p in note.split(";")]
            out.setdefault((e.label, metric), []).extend(p for p in parts if p and not RESTATED.match(p))
    return {k: v for k, v in out.items() if v}


def _nonfinite_notes(
    per_image: pd.DataFrame, metrics: list[str], infos: dict[str, MetricInfo]
) -> dict[tuple[str, str], list[str]]:
    """For each (entry, metric) with infinite per-image values: how many, and what that does to the mean."""
    out: dict[tuple[str, str], list[str]] = {}
    if per_image.empty:
        return out
    for label, frame in per_image.groupby("entry", sort=False):
        for m in metrics:
            if m not in frame:
                continue
            values = frame[m].to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            k = int(np.isinf(values).sum())
            if not k:
                continue
            what = " (exact reconstructions)" if m == "psnr" and np.all(values[np.isinf(values)] > 0) else ""
            info = infos.get(m, m)
            inf = (
                "±∞"
                if np.any(values == np.inf) and np.any(values == -np.inf)
                else num(info, float(values[np.isinf(values)][0]))
            )
            out[(label, m)] = [
                f"{metric_name(info)} is {inf} on {k} of {values.size} images{what}: "
                f"the mean is {num(info, float(values.mean()))}, "
                "with no std or CI; plots leave those images out"
            ]
    return out


def build_section(runs: list[Run], title: str, slug: str) -> Section:
    """Entries, tidy frames and protocol notes of runs that share one protocol."""
    pairs = [(run, vae) for run in runs for vae in run.vae_names]
    dtypes = [Entry("", vae, run).dtype for run, vae in pairs]
    entries = [Entry(label, vae, run) for label, (run, vae) in zip(_entry_labels(pairs, dtypes), pairs)]

    metrics: list[str] = []
    protocols: dict[str, dict] = {}
    infos: dict[str, MetricInfo] = {}
    notes: list[str] = []
    frames, set_rows = [], []
    for e in entries:
        run = e.run
        for m, spec in (run.protocol.get("metrics") or {}).items():
            if m not in infos:
                infos[m] = recorded_info(m, spec, f"{run.path / 'metrics.json'}: metrics.{m}.info")
            if m in protocols and metric_settings(protocols[m], noted=True) != metric_settings(spec, noted=True):
                first, now = (metric_settings(x, noted=True) or {} for x in (protocols[m], spec))
                changed = {k: now.get(k) for k in sorted(first.keys() | now.keys()) if first.get(k) != now.get(k)}
                notes.append(
                    f"{metric_name(infos[m])} in run {run.label} differs in {changed} (first seen: { ({k: first.get(k) for k in changed}) })"
                )
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

    notes += _unavailable_notes(entries, infos)
    cell_notes = _summary_notes(entries)
    for key, more in _nonfinite_notes(per_image, metrics, infos).items():
        cell_notes.setdefault(key, []).extend(more)
    first = runs[0].protocol
    section = Section(
        title=title,
        slug=slug,
        dataset=dict(first.get("dataset") or {}),
        quantize=first.get("quantize"),
        pixels=str(first.get("pixels") or ""),
        entries=entries,
        per_image=per_image,
        set_level=set_level,
        metrics=metrics,
        set_metrics=set_metrics,
        metric_protocols=protocols,
        notes=notes,
        cell_notes=cell_notes,
        infos=infos,
    )
    section.notes += image_set_notes(section)
    return section


def image_set_notes(section: Section) -> list[str]:
    """Where VAEs were scored on different images: what each mean is over, and what ranks them.

    Means in the table are over each VAE's own images; best marks and findings compare means over
    the images every VAE scored, paired statistics the images both VAEs of a pair scored. Set-level
    metrics are one value over each VAE's own images, so with different numbers of images they are
    not ranked at all. Metrics in the same situation share one note.
    """
    by_text: dict[str, list[str]] = {}
    for m in section.quality_metrics:
        sets = section.scored(m)
        if len(sets) < 2 or len({frozenset(v) for v in sets.values()}) == 1:
            continue
        shared = len(set.intersection(*sets.values()))
        counts = ", ".join(f"{lab}: {len(v)}" for lab, v in sets.items())
        rank = (
            f"best marks and findings compare the means over the {shared} image(s) every VAE scored"
            if shared
            else "no image was scored by every VAE, so none is marked best"
        )
        text = (
            f"VAEs were scored on different images ({counts}); each mean in the table is over its VAE's own "
            f"images; {rank}; paired statistics use the images both VAEs of a pair scored"
        )
        by_text.setdefault(text, []).append(metric_name(section.info(m)))
    for m in section.set_metrics:
        if not section.is_quality(m):
            continue
        rows = section.set_level[(section.set_level["metric"] == m) & section.set_level["mean"].notna()]
        counts = rows.groupby("entry", sort=False)["n"].last()
        if counts.nunique() > 1:
            text = (
                "VAEs were scored on different numbers of images ("
                + ", ".join(f"{k}: {int(v)}" for k, v in counts.items())
                + "); one value per VAE over its own images cannot be ranked on shared images, so none is marked best"
            )
            by_text.setdefault(text, []).append(metric_name(section.info(m)))
        whole = sorted({(int(n), section.whole_set_subsets(m, n)) for n in counts if section.whole_set_subsets(m, n)})
        if whole:
            n, size = whole[0]
            text = (
                f"N = {n} images is not more than the subset size {size}, so every subset is the whole set: "
                "one estimate per VAE with no spread across subsets to tell VAEs apart, so none is marked best"
            )
            by_text.setdefault(text, []).append(metric_name(section.info(m)))
    return [f"{', '.join(names)}: {text}" for text, names in by_text.items()]


@dataclass
class _Group:
    identity: str
    settings: dict[str, dict]
    runs: list[Run]

    def admits(self, identity: str, settings: dict[str, dict]) -> bool:
        return identity == self.identity and all(
            self.settings[m] == s for m, s in settings.items() if m in self.settings
        )

    def describe(self) -> dict[str, object]:
        """Flat facts that can tell this group from another with the same title."""
        ident = json.loads(self.identity)
        out: dict[str, object] = {
            "N": ident["dataset"].get("n_evaluated"),
            "images": ident["images"],
            "quantize": ident["quantize"],
        }
        out.update({f"dataset.{k}": v for k, v in ident["dataset"].items() if k != "n_evaluated"})
        out.update({f"{m}:{k}": v for m, s in self.settings.items() for k, v in s.items()})
        return out


def _short(value) -> str:
    text = str(value)
    if re.fullmatch(r"[0-9a-f]{32,}", text):
        return text[:8]
    if len(text) > 32:
        return "…" + text[-30:] if "/" in text else text[:30] + "…"
    return text


def _rank(key: str) -> int:
    if key in ("N", "images", "quantize"):
        return ("N", "images", "quantize").index(key)
    if key.startswith("dataset."):
        return 3
    field = key.split(":", 1)[1]
    if field in ("net", "extractor.name", "weights.standard", "resize"):
        return 4
    return 6 if field.endswith("sha256") or field.startswith("reference.") else 5


def _label(key: str, metrics: list[MetricInfo | str], value) -> str:
    if key == "N":
        return f"N = {value}"
    if key == "images":
        return f"image set {str(value)[:8]}"
    if key == "quantize":
        return "quantized" if value else "not quantized"
    if key.startswith("dataset."):
        return f"{key.split('.', 1)[1]} {_short(value)}"
    field = key.split(":", 1)[1]
    names = "/".join(metric_name(m) for m in metrics)
    if field == "weights.standard":
        return f"{names} {'standard' if value else 'non-standard'} weights"
    return f"{names} {field.replace('.', ' ')} {_short(value)}"


def _families(keys: list[str], facts: list[dict], ref: dict, other: dict) -> list[list[str]]:
    """Keys where ``other`` differs from ``ref``, by rank, the same field of several metrics as one family."""
    families: dict[tuple, list[str]] = {}
    for k in sorted(keys, key=_rank):
        if (
            k in ref
            and k in other
            and json.dumps(ref[k], sort_keys=True, default=str) != json.dumps(other[k], sort_keys=True, default=str)
        ):
            field = k.split(":", 1)[1] if ":" in k else k
            families.setdefault((field, json.dumps(ref[k], default=str), json.dumps(other[k], default=str)), []).append(
                k
            )
    out = list(families.values())
    if any(ks[0] == "N" for ks in out):  # another N is another image set: saying so twice adds nothing
        out = [ks for ks in out if ks[0] != "images"]
    return out


def _differences(groups: list[_Group], most: int = 2) -> list[str]:
    """For groups that share a title: a few words per group naming what sets it apart.

    Every group after the first names how it differs from the first (at most ``most`` facts); the
    first names its own values of the facts the others cite most.
    """
    facts = [g.describe() for g in groups]
    keys = list(dict.fromkeys(k for f in facts for k in f))
    infos: list[dict[str, MetricInfo]] = []  # each group's own (PSNR's title says whether it is of luma)
    for g in groups:
        infos.append({})
        for run in g.runs:
            for m, spec in (run.protocol.get("metrics") or {}).items():
                if m not in infos[-1]:
                    infos[-1][m] = recorded_info(m, spec, f"{run.path / 'metrics.json'}: metrics.{m}.info")

    def words(i: int, families: list[list[str]]) -> str:
        return " · ".join(
            _label(ks[0], [infos[i].get(m, m) for m in (k.split(":", 1)[0] for k in ks if ":" in k)], facts[i][ks[0]])
            for ks in families[:most]
        )

    cited: dict[tuple[str, ...], int] = {}
    labels = [""]
    for i, f in enumerate(facts[1:], start=1):
        families = _families(keys, facts, facts[0], f)[:most]
        for ks in families:
            cited[tuple(ks)] = cited.get(tuple(ks), 0) + 1
        labels.append(words(i, families))
    first = sorted(cited, key=lambda ks: (-cited[ks], _rank(ks[0])))
    labels[0] = words(0, [list(ks) for ks in first])
    return labels


def group_sections(runs: list[Run]) -> list[Section]:
    """One section per set of mutually comparable runs (see the module docstring), in the order runs were given."""
    groups: list[_Group] = []
    for run in runs:
        ident, settings = protocol_key(run), run_settings(run)
        group = next((g for g in groups if g.admits(ident, settings)), None)
        if group is None:
            groups.append(_Group(ident, dict(settings), [run]))
        else:
            group.runs.append(run)
            group.settings.update({m: s for m, s in settings.items() if m not in group.settings})
    titles = [
        _named(g.runs) + section_title(g.runs[0].protocol.get("dataset") or {}, scored_sizes(g.runs)) for g in groups
    ]
    for title in list(dict.fromkeys(titles)):
        same = [i for i, t in enumerate(titles) if t == title]
        if len(same) > 1:
            for i, words in zip(same, _differences([groups[i] for i in same])):
                titles[i] = f"{title} · {words}" if words else title
    taken: set[str] = set()
    sections = []
    for title, group in zip(titles, groups):
        if titles.count(title) > 1:  # nothing recorded tells them apart in a few words
            title = f"{title} · runs {', '.join(r.label for r in group.runs)}"
        sections.append(build_section(group.runs, title, _slug(title, taken)))
    return sections
