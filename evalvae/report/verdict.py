"""The line that opens each section: which VAE its numbers favour, and which numbers say so.

For a section of runs it reads the marks the tables already carry: ``best`` in the summary (the
metric's direction, ties and the images a ranking uses decide it) and ``significant``/``favours``
in the paired table (the paired test and its correction). So whatever sets those marks sets the
recommendation too; this module only groups them into words. Bits per pixel and region counts are
facts about the encoding or the image, not qualities: bpp is stated as a size, never as a win.
Metrics without a direction are named as not judged; VAEs that failed are named as not ranked;
a section of one VAE is described, not recommended.

The latent-diagnostics and robustness sections get the same kind of line from their own tables.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import pandas as pd

from evalvae.metrics.info import BPP
from evalvae.metrics.stats import top_tier
from evalvae.report.format import info, num

if TYPE_CHECKING:  # robustness and load import this module, and sections imports load
    from evalvae.report.sections import Section

TEST = "paired test, Holm"


def join(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def short(section: Section, metric: str) -> str:
    """The metric's title without its unit in brackets: ``PSNR``, not ``PSNR (dB)``."""
    i = section.info(metric)
    return re.sub(rf"\s*\({re.escape(i.unit)}\)$", "", i.title) if i.unit else i.title


def _names(section: Section, metrics: list[str]) -> str:
    return ", ".join(short(section, m) for m in metrics)


def _value(section: Section, metric: str, value: float) -> str:
    i = section.info(metric)
    return num(i, value) + (f" {i.unit}" if i.unit else "")


def _lead(section: Section, metric: str, leader: str, rows: pd.DataFrame, paired: pd.DataFrame) -> list[str] | None:
    """The VAEs ``leader`` is not significantly better than on ``metric``; None where nothing was tested
    (a set-level metric: one value per VAE; or no shared images)."""
    mine = paired[(paired["metric"] == metric) & ((paired["a"] == leader) | (paired["b"] == leader))]
    if mine.empty:
        return None
    beaten = set()
    for r in mine.itertuples():
        if bool(r.significant) and r.favours == leader:
            beaten.add(r.b if r.a == leader else r.a)
    return [e for e in rows["entry"] if e != leader and e not in beaten]


def _one(section: Section, ok: pd.DataFrame, failed: list[str]) -> str:
    label = section.entries[0].label
    rows = [r for m in dict.fromkeys(ok["metric"]) for r in ok[ok["metric"] == m].to_dict("records")]
    values = [f"{short(section, r['metric'])} {_value(section, r['metric'], float(r['mean']))}" for r in rows]
    head = f"One VAE, so nothing to recommend: {label}" + (
        f" scores {', '.join(values)}" if values else " has no values"
    )
    n = section.per_image["image"].nunique() if not section.per_image.empty else 0
    head += f" (means over {n} images)" if n and values else ""
    if failed:
        head += f"; {join(failed)} failed and {'is' if len(failed) == 1 else 'are'} not shown"
    return head + "."


def recommendation(section: Section, summary: pd.DataFrame, paired: pd.DataFrame) -> str:
    """One sentence: the VAE the section's best marks and paired tests favour, on which metrics, or why none."""
    failed = list(dict.fromkeys(v for run in section.runs for v in run.failed_vaes))
    ok = summary[(summary["status"] == "ok") & summary["mean"].astype(float).notna()]
    metrics = list(dict.fromkeys(summary["metric"]))
    if len(section.entries) == 1:
        return _one(section, ok, failed)
    quality = [m for m in metrics if section.info(m).quality and section.direction(m) is not None]
    undirected = [m for m in metrics if section.info(m).quality and section.direction(m) is None]

    leader: dict[str, str] = {}  # metric -> the one VAE marked best
    ties: dict[str, list[str]] = {}  # metric -> the VAEs sharing the best mark
    unranked, alone = [], []  # no best mark; a value from one VAE only
    for m in quality:
        rows = ok[ok["metric"] == m]
        best = list(rows.loc[rows["best"].astype(bool), "entry"])
        if len(rows) == 1:
            alone.append(m)
        elif rows.empty:
            continue  # unavailable for every VAE: the section's notes say why
        elif not best:
            # no best mark: every VAE ties within the metric's tie tolerance, or the ranking was withheld
            values = dict(zip(rows["entry"], rows["rank_mean"].astype(float)))
            everyone = top_tier(values, section.info(m))
            if len(values) > 1 and len(everyone) == len(values):
                ties[m] = everyone
            else:
                unranked.append(m)
        elif len(best) > 1:
            ties[m] = best
        else:
            leader[m] = best[0]
    by_leader: dict[str, list[str]] = {}
    for m, lab in leader.items():
        by_leader.setdefault(lab, []).append(m)
    clear, close, untested = [], {}, []
    for m, lab in leader.items():
        rivals = _lead(section, m, lab, ok[ok["metric"] == m], paired)
        if rivals is None:
            untested.append(m)
        elif rivals:
            close[m] = rivals
        else:
            clear.append(m)

    parts = []
    if not quality:
        parts.append("No metric here has a known direction, so no VAE is ranked")
    elif not leader and not ties:
        parts.append(f"No VAE is ranked on {_names(section, quality)}")
    else:
        parts.append(_head(section, by_leader, ties, complete=not (unranked or alone), clear=bool(clear or untested)))
        if clear:
            parts.append(f"significantly ahead of every other VAE on {_names(section, clear)} ({TEST})")
        rivals: dict[tuple[str, ...], list[str]] = {}
        for m, who in close.items():
            rivals.setdefault(tuple(who), []).append(m)
        if rivals:
            said = "; ".join(
                f"on {_names(section, ms)} not significantly ahead of {join(list(w))}" for w, ms in rivals.items()
            )
            parts.append(said + ("" if clear else f" ({TEST})"))
        if untested:
            parts.append(f"{_names(section, untested)} untested (one value per VAE)")
    if unranked:
        parts.append(f"{_names(section, unranked)} not ranked (see the notes)")
    if alone:
        parts.append(f"{_names(section, alone)} measured for one VAE only")
    size = _size(section, ok, max(by_leader, key=lambda k: len(by_leader[k])) if by_leader else None)
    if size:
        parts.append(size)
    if undirected:
        many = len(undirected) > 1
        verbs = ("have", "are") if many else ("has", "is")
        parts.append(f"{_names(section, undirected)} {verbs[0]} no direction and {verbs[1]} not judged")
    if failed:
        parts.append(f"{join(failed)} failed and {'is' if len(failed) == 1 else 'are'} not ranked")
    return "; ".join(parts) + "."


def _head(
    section: Section, by_leader: dict[str, list[str]], ties: dict[str, list[str]], complete: bool, clear: bool
) -> str:
    """Who is best on what: one VAE on every metric, a split between VAEs, ties; "no clear winner" where no
    lead is significant."""
    groups = sorted(by_leader.items(), key=lambda kv: -len(kv[1]))
    verb = "is best" if clear else "has the best mean"
    clauses = []
    if len(groups) == 1 and not ties:
        lab, ms = groups[0]
        every = "every quality metric" if complete else "every ranked quality metric"
        clauses.append(f"{lab} {verb} on {every} ({_names(section, ms)})")
    else:
        clauses += [
            f"{lab}{f' {verb}' if i == 0 else ''} on {_names(section, ms)}" for i, (lab, ms) in enumerate(groups)
        ]
    tied: dict[tuple[str, ...], list[str]] = {}
    for m, labs in ties.items():
        tied.setdefault(tuple(labs), []).append(m)
    everyone = len(section.entries)
    if not groups and complete and len(tied) == 1 and len(next(iter(tied))) == everyone:
        return f"No clear winner: the VAEs tie on every quality metric ({_names(section, list(ties))})"
    clauses += [
        f"{'the VAEs' if len(labs) == everyone else join(list(labs))} tie on {_names(section, ms)}"
        for labs, ms in tied.items()
    ]
    head = "; ".join(clauses)
    if not groups or not clear:
        return "No clear winner: " + head
    return ("No single best VAE: " if len(groups) > 1 else "") + head


def _size(section: Section, ok: pd.DataFrame, leader: str | None) -> str:
    """Bits per pixel as a fact: who needs the fewest, against the recommended VAE."""
    rows = ok[ok["metric"] == BPP.name]
    rows = rows[rows["mean"].astype(float).map(math.isfinite)]
    if len(rows) < 2:
        return ""
    values = dict(zip(rows["entry"], rows["mean"].astype(float)))
    low = min(values.values())
    smallest = [e for e, v in values.items() if math.isclose(v, low, rel_tol=1e-9)]
    if len(smallest) == len(values):
        return f"all use {_value(section, BPP.name, low)}"
    if leader in smallest:
        return f"{leader} also uses the fewest bits per pixel ({_value(section, BPP.name, low)})"
    who = join(smallest)
    if leader is None or leader not in values:
        return f"{who} {'uses' if len(smallest) == 1 else 'use'} the fewest bits per pixel ({_value(section, BPP.name, low)})"
    ratio = values[leader] / low if low > 0 else math.inf
    times = f"{ratio:.3g}×" if math.isfinite(ratio) else "infinitely"
    return (
        f"{who} {'uses' if len(smallest) == 1 else 'use'} {times} fewer bits per pixel than {leader} "
        f"({num(info(BPP), low)} vs {_value(section, BPP.name, values[leader])})"
    )


def latents_recommendation(frame: pd.DataFrame) -> str:
    """The latent-diagnostics line, from ``latents.csv``: whose configured factors fit (std after them near 1),
    who saturates TAESD's clamp most, whose decoder is least sensitive to latent noise."""
    rows = frame.to_dict("records")
    drops = sorted((c for c in frame.columns if c.startswith("psnr_drop_")), key=lambda c: float(c.split("_")[-1]))
    drop = drops[-1] if drops else None
    sigma = f"σ = {drop[len('psnr_drop_') :]} × std" if drop else ""

    def val(r: dict, column: str) -> float:
        v = r.get(column)
        return float(v) if v is not None and pd.notna(v) else math.nan

    def lowest(column: str, key, fmt: str) -> list[dict]:
        """The rows whose ``key`` of ``column`` is lowest as shown with ``fmt`` (values shown alike tie)."""
        scored = [(r, key(val(r, column))) for r in rows]
        scored = [(r, k) for r, k in scored if math.isfinite(k)]
        if not scored:
            return []
        low = fmt.format(min(k for _, k in scored))
        return [r for r, k in scored if fmt.format(k) == low]

    def names(found: list[dict]) -> str:
        return join([str(r["vae"]) for r in found])

    if len(rows) == 1:
        r = rows[0]
        text = f"One VAE, so nothing to compare: {r['vae']}'s std after its configured factors is {val(r, 'scaled_std'):.3f}"
        if math.isfinite(val(r, "suggested_scaling_factor")):
            text += f" (suggested scaling_factor {val(r, 'suggested_scaling_factor'):.4g})"
        parts = [text]
        if math.isfinite(val(r, "clamp_saturated")):
            parts.append(f"{val(r, 'clamp_saturated'):.3%} of |z| > 3")
        if drop and math.isfinite(val(r, drop)):
            parts.append(f"PSNR drop {val(r, drop):.3f} dB at {sigma}")
        return "; ".join(parts) + "."
    basis, parts = [], []
    fit = lowest("scaled_std", lambda s: abs(s - 1), "{:.3f}")
    if fit:
        basis.append("the std after the configured factors (1 fits)")
        stds = ", ".join(f"{val(r, 'scaled_std'):.3f}" for r in fit)
        text = f"{names(fit)}'s configured factors fit best (std {stds})"
        worst = lowest("scaled_std", lambda s: -abs(s - 1), "{:.3f}")
        if worst and not any(r in fit for r in worst):
            w = worst[0]
            text += f"; {names(worst)}'s worst ({val(w, 'scaled_std'):.3f}"
            if math.isfinite(val(w, "suggested_scaling_factor")):
                text += f", suggested scaling_factor {val(w, 'suggested_scaling_factor'):.4g}"
            text += ")"
        parts.append(text)
    most = lowest("clamp_saturated", lambda s: -s, "{:.3%}")
    if most:
        basis.append("|z| > 3")
        verb = "saturates" if len(most) == 1 else "saturate"
        parts.append(f"{names(most)} {verb} TAESD's clamp most ({val(most[0], 'clamp_saturated'):.3%} of |z| > 3)")
    calm = lowest(drop, lambda s: s, "{:.3f}") if drop else []
    if calm:
        basis.append(f"the PSNR drop at {sigma}")
        parts.append(f"{names(calm)}'s decoder is least sensitive to latent noise ({val(calm[0], drop):.3f} dB)")
    if not parts:
        return "No latent statistics to compare."
    return f"Based on {join(basis)}: " + "; ".join(parts) + "."


def _db(value: float) -> str:
    return ("∞" if value > 0 else "−∞") if math.isinf(value) else f"{value:.2f}"


def robustness_recommendation(df: pd.DataFrame) -> str:
    """The robustness line, from ``robustness.csv``: per check, the VAE whose PSNR is highest (against its own
    plain fp32 output for tiled and precision, against the originals for the resolution sweep), and any
    non-finite output; a single VAE's values are described."""
    vaes = list(dict.fromkeys(df["vae"].astype(str)))
    one = len(vaes) == 1
    parts, against = [], []
    for check in dict.fromkeys(df["check"]):
        part = df[(df["check"] == check) & (df["metric"] == "psnr")]
        values = part.assign(value=pd.to_numeric(part["value"], errors="coerce")).dropna(subset=["value"])
        if values.empty:
            what = {"tiled": "tiled decoding", "precision": "reduced precision"}.get(check, check)
            parts.append(f"{what} not measured (see the notes)")
            continue
        against.append(check)
        settings = list(dict.fromkeys(values["setting"].astype(str)))
        unit = " px" if check == "resolution" else ""
        if one:
            shown = f"{', '.join(_db(v) for v in values['value'])} dB"
            at = f"{join(settings)}{unit}"
            said = {
                "tiled": f"its tiled decode is {shown} from its untiled one ({at})",
                "precision": f"{at} is {shown} from fp32",
            }
            parts.append(
                said.get(check, f"PSNR {shown} at {at}" if check == "resolution" else f"{check}: PSNR {shown} at {at}")
            )
            continue
        winners: dict[tuple[str, ...], list[str]] = {}
        top: dict[tuple[str, ...], float] = {}
        for setting in settings:
            rows = values[values["setting"].astype(str) == setting]
            best = _db(rows["value"].max())
            who = tuple(str(v) for v, x in zip(rows["vae"], rows["value"]) if _db(x) == best)
            winners.setdefault(who, []).append(setting)
            top.setdefault(who, rows["value"].max())
        said = []
        for who, where in winners.items():
            at = f" at {join(where)}{unit}" if len(settings) > 1 or check == "resolution" else ""
            names, value = join(list(who)), _db(top[who])
            if check == "tiled":
                said.append(f"tiled decoding changes {names} least{at} ({value} dB from untiled)")
            elif check == "precision":
                said.append(f"{names} {'stays' if len(who) == 1 else 'stay'} closest to fp32{at} ({value} dB)")
            else:
                said.append(f"{names}{at}")
        if check in ("tiled", "precision"):
            parts.append("; ".join(said))
        else:
            what = "best PSNR against the originals" if check == "resolution" else f"best PSNR in {check}"
            parts.append(f"{what}: {', '.join(said)}")
    bad = df[df["metric"].astype(str).str.startswith("nonfinite") & (pd.to_numeric(df["value"], errors="coerce") > 0)]
    for vae, rows in bad.groupby("vae", sort=False):
        where = join(list(dict.fromkeys(f"{c} {s}" for c, s in zip(rows["check"], rows["setting"]))))
        parts.append(f"{vae} gives non-finite outputs ({where})")
    if one:
        return f"One VAE, so nothing to compare: {vaes[0]}: " + "; ".join(parts) + "."
    basis = []
    own = [c for c in against if c in ("tiled", "precision")]
    if own:
        basis.append(f"PSNR against each VAE's own plain fp32 output ({', '.join(own)})")
    if "resolution" in against:
        basis.append(("" if basis else "PSNR ") + "against the originals (resolution sweep)")
    head = f"Based on {' and '.join(basis)}: " if basis else ""
    return head + "; ".join(parts) + "."
