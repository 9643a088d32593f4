"""``compare(baseline, current, tolerances)``: one verdict per (vae, metric) and per bench case."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from evalvae.compare.baseline import SPEED_KEY, MetricResult, Snapshot, SpeedResult, round_value, value_resolution
from evalvae.compare.tolerances import Tolerances, default_tolerances
from evalvae.compare.verdict import Verdict, judge, paired_test
from evalvae.metrics.info import MetricInfo, Tolerance

# Protocol fields that do not change what a number means: where the images sat on disk, and the
# prose restatement of `quantize`.
IGNORED = ("dataset.root", "pixels")
# What the numbers were computed with, not what they mean: software versions and the machine. A
# difference is noted (it may explain a move), never refused: checking that the numbers hold on
# other software and hardware is what a regression gate is for. `image_hashes` says what the
# per-image hashes are of; the hashes themselves are compared image by image (:func:`content_differences`).
RECORDED = ("software", "environment", "image_hashes")
# Fields of a metric's entry that say how its number was computed, not what it is: the library that
# computed one definition (`implementation`; the SSIM `backend` that ran and the one asked for) and
# the version of evalvae's code for it (`version`, `features_version`). A metric's implementation is
# noted, not refused: the same definition computed by another library (say on a GPU) is exactly
# what a regression gate checks. The later fields are absent from results written before evalvae
# recorded them, and only a change between two recorded values is noted.
NOTED = ("implementation", "backend", "backend_requested", "version", "features_version")
RECORDED_LATER = ("backend", "backend_requested", "version", "features_version")
# Provenance inside a metric's entry: where something was found, not what it is. The weights file a
# network was read from (`provenance`), whether the reference statistics came from the cache or were
# computed and where they are stored, and why a metric was unavailable (a message naming local
# paths). The reference statistics' `key` and `n` stay protocol: the key is a sha256 of the image
# files' contents, the geometry and the extractor, equal wherever the same images are scored alike.
PROVENANCE = ("provenance", "reference.source", "reference.path", "reason")
# A metric's info (title, decimals, default tolerance) says how its numbers read and are gated, not
# what they mean; its direction is protocol through the entry's own `higher_is_better`.
INFO = "info"


def is_provenance_field(field: str) -> bool:
    """Whether a flattened field of one metric's entry (``reference.path``) records provenance, not protocol."""
    return any(field == p or field.startswith(p + ".") for p in PROVENANCE)


def is_noted(key: str) -> bool:
    """Whether a flattened protocol key records how a number was computed (noted when it differs, not refused)."""
    return key.split(".")[-1] in NOTED


def is_recorded(key: str) -> bool:
    """Whether a flattened protocol key records the software or machine a run used."""
    return key.split(".")[0] in RECORDED


def is_info_field(field: str) -> bool:
    """Whether a flattened field of one metric's entry (``info.decimals``) is its metric info, not protocol."""
    return field == INFO or field.startswith(INFO + ".")


def _metric_field(key: str) -> str:
    """The field of a flattened protocol key ``metrics.<name>.<field...>`` (``""`` for other keys)."""
    parts = key.split(".")
    return ".".join(parts[2:]) if parts[0] == "metrics" and len(parts) > 2 else ""


def number(x: float | None, fmt: str = ".6g") -> str:
    """A value as compare prints it: empty for a missing one, ∞ and -∞ for infinities."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and math.isinf(x):
        return ("+∞" if "+" in fmt else "∞") if x > 0 else "-∞"
    return format(x, fmt)


@dataclass
class Row:
    """One compared (vae, metric), or one (vae, bench case, measure)."""

    kind: str  # quality | speed
    vae: str
    metric: str
    verdict: Verdict
    baseline: float | None = None
    current: float | None = None
    higher_is_better: bool | None = None
    case: str = ""  # the bench case, for speed rows
    allowed: float | None = None
    tolerance: str = ""
    p_value: float | None = None
    noise: str = ""  # what the move was weighed against: "p=0.003, n=24" or "IQR 0.8"
    detail: str = ""

    @property
    def delta(self) -> float | None:
        """``current - baseline``; 0 for equal values, infinities included (+inf vs +inf is unchanged)."""
        if self.baseline is None or self.current is None:
            return None
        return 0.0 if self.current == self.baseline else self.current - self.baseline

    @property
    def name(self) -> str:
        return f"{self.metric}[{self.case}]" if self.case else self.metric


@dataclass
class Comparison:
    baseline: str
    current: str
    rows: list[Row] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)  # protocol differences
    notes: list[str] = field(default_factory=list)
    protocol: dict = field(default_factory=dict)  # the baseline's
    reason: str | None = None  # why the baseline was last written
    improvements: str = "pass"

    def failed(self, row: Row) -> bool:
        return row.verdict is Verdict.REGRESSED or (row.verdict is Verdict.IMPROVED and self.improvements == "fail")

    @property
    def exit_code(self) -> int:
        """2: unusable input (missing results, protocol mismatch); 1: a regression; 0: none."""
        if self.mismatches or any(r.verdict.is_error for r in self.rows):
            return 2
        return 1 if any(self.failed(r) for r in self.rows) else 0

    @property
    def status(self) -> str:
        return {0: "passed", 1: "failed", 2: "unusable"}[self.exit_code]


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """Nested dicts as one level of dotted keys (an empty dict stays a value)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def protocol_differences(baseline: dict, current: dict) -> tuple[list[str], list[str]]:
    """(mismatches, notes) between two protocols; metrics present on one side only are left out."""
    common = set(baseline.get("metrics", {})) & set(current.get("metrics", {}))

    def flat(p: dict) -> dict:
        p = {**p, "metrics": {m: s for m, s in p.get("metrics", {}).items() if m in common}}
        return {
            k: v
            for k, v in flatten(p).items()
            if k not in IGNORED
            and not is_recorded(k)
            and not is_provenance_field(f := _metric_field(k))
            and not is_info_field(f)
        }

    b, c = flat(baseline), flat(current)
    mismatches, notes = [], []
    for key in sorted(set(b) | set(c)):
        if b.get(key, "(absent)") == c.get(key, "(absent)"):
            continue
        if key.split(".")[-1] in RECORDED_LATER and (key not in b or key not in c):
            continue  # recorded on one side only: results written before evalvae recorded it
        line = f"{key}: {b.get(key, '(absent)')!r} in the baseline, {c.get(key, '(absent)')!r} now"
        (notes if is_noted(key) else mismatches).append(line)
    return mismatches, notes


def recorded_differences(baseline: dict, current: dict) -> list[str]:
    """The software versions and machine facts two protocols both record and that differ."""
    b, c = ({k: v for k, v in flatten(p).items() if is_recorded(k)} for p in (baseline, current))
    return [f"{k}: {b[k]!r} in the baseline, {c[k]!r} now" for k in sorted(b.keys() & c.keys()) if b[k] != c[k]]


def _named(ids: list[str]) -> str:
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def content_differences(baseline: Snapshot, current: Snapshot) -> tuple[dict[str, str], list[str]]:
    """Images of the same name whose scored pixels differ (``per_image.image_sha256``).

    Per VAE, why its results are of other images: other files (``per_image.file_sha256``), or other
    pixels where a side did not hash the files. And notes for images whose files are the baseline's
    but were decoded or resized to other pixels (by other software): those are compared.
    """
    mismatches, notes = {}, []
    pillow = [f"Pillow {(p.get('software') or {}).get('Pillow')}" for p in (baseline.protocol, current.protocol)]
    for vae in sorted(baseline.images.keys() & current.images.keys()):
        b, c = baseline.images[vae], current.images[vae]
        shared = b.keys() & c.keys()
        changed = sorted(i for i in shared if b[i] != c[i])
        known = [i for i in changed if i in baseline.files and i in current.files]
        other_files = [i for i in known if baseline.files[i] != current.files[i]]
        decoded = [i for i in known if baseline.files[i] == current.files[i]]
        unknown = [i for i in changed if i not in known]
        what = []
        if other_files:
            what.append(f"{len(other_files)} are other files ({_named(other_files)}; per_image.file_sha256)")
        if unknown:
            what.append(f"{len(unknown)} have other pixels ({_named(unknown)}; per_image.image_sha256)")
        if what:
            mismatches[vae] = (
                f"{vae}: of {len(shared)} image(s) also in the baseline, {' and '.join(what)} under the same "
                "name: these are other images, so their numbers are not compared"
            )
        if decoded:
            why = f" ({pillow[0]} in the baseline, {pillow[1]} now)" if pillow[0] != pillow[1] else ""
            notes.append(
                f"{vae}: {len(decoded)} image(s) are the baseline's files but were decoded or resized to other "
                f"pixels{why} ({_named(decoded)}; per_image.image_sha256): compared, and their numbers may move "
                "for that reason"
            )
    return mismatches, notes


def precision_of(facts: dict) -> str | None:
    """A VAE's arithmetic as ``vaes.json`` records it: ``precision`` (fp32, tf32, bf16, fp16), else its dtype
    (results written before evalvae recorded the precision, when fp32 meant float32 weights)."""
    return facts.get("precision") or facts.get("dtype")


def precision_differences(baseline: Snapshot, current: Snapshot) -> dict[str, str]:
    """Per VAE that ran in another precision than in the baseline, why its numbers are not compared: bf16 or
    TF32 move a VAE's outputs beyond any tie, so a precision is protocol, as a metric's definition is."""
    out = {}
    for vae in sorted(baseline.vaes.keys() & current.vaes.keys()):
        b, c = precision_of(baseline.vaes[vae]), precision_of(current.vaes[vae])
        if b and c and b != c:
            out[vae] = f"{vae}: precision {b} in the baseline, {c} now: its numbers are not compared"
    return out


def metric_info(metric: str, *results: MetricResult) -> MetricInfo:
    """The info a (vae, metric) is judged by, as its results record it: the first side's (the baseline's) that
    knows the direction."""
    return next((r.info for r in results if r.info.higher_is_better is not None), results[0].info)


def _no_longer_finite(b: MetricResult, c: MetricResult) -> list[str]:
    """Images with a value in the baseline whose reconstruction is now non-finite (NaN here, present in both)."""
    if b.values is None or c.values is None or set(b.values) != set(c.values):
        return []
    return sorted(i for i in b.values if not math.isnan(b.values[i]) and math.isnan(c.values[i]))


def _regained_row(
    row: Row, b: MetricResult, c: MetricResult, regained: list[str], t: Tolerance, tie: Tolerance, alpha: float | None
) -> Row:
    """Images non-finite in the baseline are finite now: an improvement, unless the images finite on both sides regressed."""
    ids = [i for i in sorted(b.values) if math.isfinite(b.values[i]) and math.isfinite(c.values[i])]
    note = f"{len(regained)} image(s) non-finite in the baseline are finite now ({', '.join(regained[:3])})"
    if not ids:
        row.verdict, row.detail = Verdict.IMPROVED, note
        return row
    row.baseline, row.current = (float(np.mean([x.values[i] for i in ids])) for x in (b, c))
    row.tolerance, row.allowed = t.describe(), t.allowed(row.baseline)
    p = _paired(row, b, c, ids, tie, alpha)
    verdict = judge(row.delta, row.allowed, row.higher_is_better, p_value=p, alpha=alpha)
    row.verdict = Verdict.REGRESSED if verdict is Verdict.REGRESSED else Verdict.IMPROVED
    row.detail = f"{note}; means over the {len(ids)} image(s) finite on both sides"
    return row


def _image_sets(b: dict, c: dict) -> str:
    only_b, only_c = sorted(set(b) - set(c)), sorted(set(c) - set(b))
    if not only_b and not only_c:
        return ""
    return f"image sets differ: {len(only_b)} only in the baseline {only_b[:3]}, {len(only_c)} only now {only_c[:3]}"


def _quality_row(vae: str, metric: str, b: MetricResult, c: MetricResult, tol: Tolerances, protocol_ok: bool) -> Row:
    info = metric_info(metric, b, c)
    hib = info.higher_is_better
    row = Row("quality", vae, metric, Verdict.PASS, b.mean, c.mean, hib)
    if math.isnan(b.mean) and math.isnan(c.mean):
        row.verdict, row.detail = Verdict.UNMEASURED, "no value on either side"
        return row
    if math.isnan(b.mean) or math.isnan(c.mean):
        gone = (Verdict.NEW, "no value in the baseline") if math.isnan(b.mean) else (Verdict.MISSING, "no value now")
        row.verdict, row.detail = gone
        return row
    mismatch = "" if protocol_ok else "protocol differs"
    lost = _no_longer_finite(b, c)
    if not mismatch and lost:
        row.verdict = Verdict.REGRESSED
        row.detail = f"{len(lost)} image(s) now reconstructed non-finite (NaN/inf), excluded from the mean: {', '.join(lost[:3])}"
        return row
    regained = _no_longer_finite(c, b)
    if not mismatch and regained and hib is not None:
        return _regained_row(row, b, c, regained, tol.get(vae, metric, info), info.tie_tolerance, tol.alpha)
    if not mismatch and b.n != c.n:
        mismatch = f"N differs: {b.n} in the baseline, {c.n} now"
    if not mismatch and b.values is not None and c.values is not None:
        mismatch = _image_sets(b.values, c.values)
    if not mismatch and hib is None:
        mismatch = "direction unknown: the results do not say whether higher is better"
    if mismatch:
        row.verdict, row.detail = Verdict.MISMATCH, mismatch
        return row
    t = tol.get(vae, metric, info)
    row.tolerance = t.describe()
    ids = None
    if b.values is not None and c.values is not None:
        ids = [i for i in sorted(b.values) if not (math.isnan(b.values[i]) or math.isnan(c.values[i]))]
    tie = info.tie_tolerance
    if not (math.isfinite(b.mean) and math.isfinite(c.mean)):
        return _infinite_row(row, b, c, ids, t, tie, tol.alpha)
    row.allowed = t.allowed(b.mean)
    p = _paired(row, b, c, ids, tie, tol.alpha)
    row.verdict = judge(row.delta, row.allowed, hib, p_value=p, alpha=tol.alpha, tie=_tie(tie, b.mean, c.mean))
    _note_tie(row, tie)
    return row


def _tie(tie: Tolerance, baseline: float, current: float) -> float:
    """The largest move of a mean that is float noise (relative to the larger side)."""
    return tie.allowed(max(abs(baseline), abs(current)))


def _note_tie(row: Row, tie: Tolerance) -> None:
    if row.verdict is Verdict.PASS and row.allowed is not None and abs(row.delta) > row.allowed:
        note = f"within the tie tolerance {tie.describe()} (float noise): unchanged"
        row.detail = f"{row.detail}; {note}" if row.detail else note


def _paired(
    row: Row, b: MetricResult, c: MetricResult, ids: list[str] | None, tie: Tolerance, alpha: float | None
) -> float | None:
    """The paired test of the images ``ids`` (finite on both sides; None: no per-image values), into the row.

    Returns the p-value the verdict may weigh: None without a test, or where the test could not
    reach ``alpha`` on this many images whatever they held (the tolerance alone decides then, and
    the row's noise says so).
    """
    if ids is None:
        row.noise = "no per-image values"
        return None
    ids = [i for i in ids if math.isfinite(b.values[i]) and math.isfinite(c.values[i])]
    # Both sides at the precision a baseline file keeps, so that rounding is not a difference.
    bv, cv = (np.array([round_value(x.values[i]) for i in ids], dtype=np.float64) for x in (b, c))
    resolution = 2 * value_resolution(np.concatenate([bv, cv]))
    test = paired_test(bv, cv, tie=Tolerance(max(tie.abs, resolution), tie.rel))
    if test is None:
        row.noise = "too few images"
        return None
    row.p_value, row.noise = test.p_value, f"p={test.p_value:.2g}, n={test.n}"
    if alpha is not None and test.untied and test.smallest_p >= alpha:
        row.noise += (
            f" ({test.untied} image(s) moved: the smallest possible p is {test.smallest_p:.2g}, "
            "not below alpha, so the tolerance alone decides)"
        )
        return None
    return test.p_value


def _listed(ids: list[str], b: dict, c: dict) -> str:
    shown = ", ".join(f"{i} {number(b[i])} -> {number(c[i])}" for i in ids[:3])
    return shown + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _infinite_row(row: Row, b: MetricResult, c: MetricResult, ids: list[str] | None, t: Tolerance, tie, alpha) -> Row:
    """A mean of ±inf on either side: the PSNR of an exact reconstruction is +inf, and so is the mean of a set holding one.

    Equal infinities are unchanged; a move to or from an infinity is a move of infinite size, in the
    direction of the metric. With per-image values, the images finite on both sides are judged as
    any mean is (tolerance and paired test), so a mean of +inf never hides a regression of the other
    images, and an image that loses its +inf is a regression.
    """
    hib = row.higher_is_better

    def better(x: float, y: float) -> bool:  # is y better than x
        return y > x if hib else y < x

    if ids is None:
        row.noise = "no per-image values"
        moved = Verdict.IMPROVED if better(b.mean, c.mean) else Verdict.REGRESSED
        row.verdict = Verdict.PASS if b.mean == c.mean else moved
        return row
    bv, cv = b.values, c.values
    finite = [i for i in ids if math.isfinite(bv[i]) and math.isfinite(cv[i])]
    rest = [i for i in ids if i not in set(finite)]
    same = [i for i in rest if bv[i] == cv[i]]
    gained = [i for i in rest if better(bv[i], cv[i])]
    lost = [i for i in rest if better(cv[i], bv[i])]
    parts = [f"{len(same)} image(s) {number(bv[same[0]])} on both sides"] if same else []
    verdict = Verdict.PASS
    if finite:
        bm, cm = (float(np.mean([round_value(x[i]) for i in finite])) for x in (bv, cv))  # as the paired test sees them
        row.allowed = t.allowed(bm)
        p = _paired(row, b, c, finite, tie, alpha)
        verdict = judge(cm - bm, row.allowed, hib, p_value=p, alpha=alpha, tie=_tie(tie, bm, cm))
        parts.append(
            f"the {len(finite)} finite on both: {number(bm)} -> {number(cm)} ({number(cm - bm, '+.3g')}, {verdict.value})"
        )
    else:
        row.noise = "no image finite on both sides"
    if lost:
        parts.append(f"worse: {_listed(lost, bv, cv)}")
    if gained:
        parts.append(f"better: {_listed(gained, bv, cv)}")
    if lost or verdict is Verdict.REGRESSED:
        row.verdict = Verdict.REGRESSED
    elif gained:
        row.verdict = Verdict.IMPROVED
    else:
        row.verdict = verdict
    row.detail = "; ".join(parts)
    return row


def _speed_rows(vae: str, case: str, b: SpeedResult, c: SpeedResult, tol: Tolerances) -> list[Row]:
    if b.status != "ok" or c.status != "ok":
        moves = {(True, False): Verdict.REGRESSED, (False, True): Verdict.IMPROVED}
        verdict = moves.get((b.status == "ok", c.status == "ok"), Verdict.UNMEASURED)
        detail = f"status {b.status!r} in the baseline, {c.status!r} now"
        return [Row("speed", vae, "status", verdict, case=case, detail=detail)]
    rows = []
    for measure, column, spread_column in (
        ("ms_per_image", "ms_per_image_median", "ms_per_image_iqr"),
        ("peak_mem_mb", "peak_mem_mb", None),
    ):
        bv, cv = b.values.get(column, math.nan), c.values.get(column, math.nan)
        if math.isnan(bv) or math.isnan(cv):
            continue
        t = tol.get(vae, measure)
        row = Row("speed", vae, measure, Verdict.PASS, bv, cv, False, case, t.allowed(bv), t.describe())
        spread = None
        if spread_column:
            spread = float(np.nanmax([0.0, *(x.values.get(spread_column, math.nan) for x in (b, c))]))
            row.noise = f"IQR {spread:.3g}"
        row.verdict = judge(row.delta, row.allowed, False, spread=spread)
        rows.append(row)
    bn, cn = b.values.get("nonfinite", math.nan), c.values.get("nonfinite", math.nan)
    if not (math.isnan(bn) or math.isnan(cn)) and (bn or cn):
        rows.append(Row("speed", vae, "nonfinite", judge(cn - bn, 0.0, False), bn, cn, False, case, 0.0, "exact"))
    return rows


def _speed_case(key: tuple[str, ...]) -> str:
    k = dict(zip(SPEED_KEY, key))
    return f"{k['op']} {k['resolution']}px batch {k['batch']} {k['dtype']} {k['mode']}"


def compare(baseline: Snapshot, current: Snapshot, tolerances: Tolerances | None = None) -> Comparison:
    """Judge every (vae, metric) and bench case of ``baseline`` against ``current``."""
    tol = default_tolerances() if tolerances is None else tolerances
    out = Comparison(baseline.source, current.source, protocol=baseline.protocol, reason=baseline.reason)
    out.improvements = tol.improvements
    if baseline.empty:
        out.mismatches.append(f"the baseline {baseline.source} holds no results")

    protocol_ok = True
    changed: dict[str, str] = {}  # VAEs whose numbers are not compared: other images, or another precision
    other_images: dict[str, str] = {}
    if baseline.results and current.results:
        mismatches, notes = protocol_differences(baseline.protocol, current.protocol)
        out.mismatches += mismatches
        out.notes += [f"metric implementation changed: {n}" for n in notes]
        recorded = recorded_differences(baseline.protocol, current.protocol)
        if recorded:
            out.notes.append("computed with other software or on another machine: " + "; ".join(recorded))
        protocol_ok = not mismatches
        other_images, decoded = content_differences(baseline, current) if protocol_ok else ({}, [])
        changed = {**(precision_differences(baseline, current) if protocol_ok else {}), **other_images}
        out.mismatches += changed.values()
        out.notes += decoded
        unhashed = sorted(v for v in baseline.results.keys() & current.results.keys() if v not in baseline.images)
        if unhashed and current.images:
            out.notes.append(
                f"the baseline records no image content hashes for {', '.join(unhashed)} (written before evalvae "
                "recorded them): images changed under the same names cannot be told; update the baseline to record them"
            )
    for vae, metrics in baseline.results.items():
        for metric, b in metrics.items():
            c = current.results.get(vae, {}).get(metric)
            if c is None:
                why = f"not in {current.source}"
                if vae in current.failed:
                    why = f"{vae} failed now: {current.failed[vae]}"
                hib = metric_info(metric, b).higher_is_better
                out.rows.append(Row("quality", vae, metric, Verdict.MISSING, b.mean, higher_is_better=hib, detail=why))
            else:
                row = _quality_row(vae, metric, b, c, tol, protocol_ok and vae not in changed)
                if vae in changed and protocol_ok and row.verdict is Verdict.MISMATCH:
                    row.detail = (
                        "other images under the same names (per-image hashes)"
                        if vae in other_images
                        else "another precision (vaes.json)"
                    )
                out.rows.append(row)
    for vae, metrics in current.results.items():
        for metric, c in metrics.items():
            if metric not in baseline.results.get(vae, {}):
                hib = metric_info(metric, c).higher_is_better
                row = Row("quality", vae, metric, Verdict.NEW, current=c.mean, higher_is_better=hib)
                row.detail = "not in the baseline"
                out.rows.append(row)

    for key, b in baseline.speed.items():
        vae, case = key[0], _speed_case(key)
        c = current.speed.get(key)
        if c is None:
            detail = f"not in {current.source}"
            out.rows.append(Row("speed", vae, "ms_per_image", Verdict.MISSING, case=case, detail=detail))
        elif b.device != c.device:
            detail = f"device {b.device!r} in the baseline, {c.device!r} now"
            out.rows.append(Row("speed", vae, "ms_per_image", Verdict.MISMATCH, case=case, detail=detail))
        else:
            out.rows += _speed_rows(vae, case, b, c, tol)
    for key in sorted(current.speed.keys() - baseline.speed.keys()):
        row = Row("speed", key[0], "ms_per_image", Verdict.NEW, case=_speed_case(key), detail="not in the baseline")
        out.rows.append(row)

    for vae in baseline.vaes.keys() & current.vaes.keys():
        b, c = baseline.vaes[vae], current.vaes[vae]
        changed = sorted(k for k in b.keys() | c.keys() if b.get(k) != c.get(k) and k != "precision")
        if changed:
            out.notes.append(f"{vae} differs from the baseline's in: {', '.join(changed)}")
    compared = {(r.vae, r.metric) for r in out.rows}
    out.notes += [f"tolerance entry {name} matches nothing compared" for name in tol.unmatched(compared)]
    if out.improvements == "fail" and any(r.verdict is Verdict.IMPROVED for r in out.rows):
        out.notes.append("improvements fail this gate: if the change is meant, update the baseline in the same change")
    return out
