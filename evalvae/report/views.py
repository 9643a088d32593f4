"""Formatted views of the tables: the strings both the HTML and the markdown report print."""

from __future__ import annotations

import math

import pandas as pd

from evalvae.metrics import stats
from evalvae.metrics.info import BPP, MetricInfo
from evalvae.report.format import metric_name, metric_title, num, num_diff, p_value, percent
from evalvae.report.sections import Section, scored_sizes

SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
NONSTANDARD = "non-standard weights"


def mark(number: int) -> str:
    """A footnote mark: ``¹``, ``²``, ... ``¹²``."""
    return str(number).translate(SUPERSCRIPT)


def _cell(r: dict, m: MetricInfo) -> dict:
    if r["status"] != "ok":
        return dict(main=r["status"], mean=r["status"], sub="", best=False, ok=False, marks="", warn=False)
    main = mean = num(m, r["mean"])
    if math.isfinite(r["std"]):
        main += f" ± {num(m, r['std'])}"
    if r["level"] == "image":
        sub = f"[{num(m, r['ci_low'])}, {num(m, r['ci_high'])}]" if math.isfinite(r["ci_low"]) else ""
    else:
        sub = f"N = {r['n']:,}"
    return {"main": main, "mean": mean, "sub": sub, "best": bool(r["best"]), "ok": True, "marks": "", "warn": False}


def _footnotes(section: Section, metrics: list[str]) -> tuple[dict[tuple[str, str], list[int]], list[dict]]:
    """Numbered notes on values: each distinct text once, with the (VAE, metric) cells it applies to."""
    index: dict[str, int] = {}
    where: dict[int, list[tuple[str, str]]] = {}
    marks: dict[tuple[str, str], list[int]] = {}
    for m in metrics:
        for e in section.entries:
            for text in section.cell_notes.get((e.label, m), []):
                k = index.setdefault(text, len(index) + 1)
                where.setdefault(k, []).append((e.label, m))
                marks.setdefault((e.label, m), []).append(k)
    notes = []
    for text, k in index.items():
        cells = where[k]
        names = list(dict.fromkeys(metric_name(section.info(m)) for _, m in cells))
        labels = list(dict.fromkeys(lab for lab, _ in cells))
        every = len(labels) == len(section.entries) and len(section.entries) > 1
        scope = f"{', '.join(names)}, {'every VAE' if every else ', '.join(labels)}"
        notes.append({"number": k, "mark": mark(k), "text": text, "where": scope, "warn": NONSTANDARD in text})
    return marks, notes


def summary_view(section: Section, summary: pd.DataFrame) -> dict:
    """Header, rows and footnotes of the VAE x metric table (per-image metrics first, then set-level ones).

    A value with a caveat (non-standard weights, images excluded, infinite values, a biased rFID)
    carries a footnote mark; the notes follow the table.
    """
    metrics = list(dict.fromkeys(summary["metric"]))
    levels = dict(zip(summary["metric"], summary["level"]))
    header = []
    for m in metrics:
        higher = section.direction(m)
        direction = "higher is better" if higher else ("lower is better" if higher is False else "direction unknown")
        header.append({"metric": m, "title": metric_title(section.info(m)), "level": levels[m], "direction": direction})
    by_key = {(r["entry"], r["metric"]): r for r in summary.to_dict("records")}
    counts = section.per_image.groupby("entry")["image"].nunique().to_dict() if not section.per_image.empty else {}
    marks, footnotes = _footnotes(section, metrics)
    warn = {n["number"] for n in footnotes if n["warn"]}
    rows = []
    for e in section.entries:
        cells = []
        for m in metrics:
            c = _cell(by_key[(e.label, m)], section.info(m))
            ks = marks.get((e.label, m), [])
            c["marks"] = ",".join(mark(k) for k in ks)
            c["warn"] = any(k in warn for k in ks)
            cells.append(c)
        rows.append({"label": e.label, "n": counts.get(e.label, 0), "dtype": e.dtype, "cells": cells})
    return {"header": header, "rows": rows, "footnotes": footnotes}


def paired_view(paired: pd.DataFrame, section: Section | None = None) -> list[dict]:
    """One formatted row per (metric, pair), in the section's metric info (without one: the shipped metrics')."""
    out = []
    for r in paired.to_dict("records"):
        m = section.info(r["metric"]) if section is not None else r["metric"]
        spread = r["ci_high"] - r["ci_low"]
        ci = f"[{num_diff(m, r['ci_low'], spread)}, {num_diff(m, r['ci_high'], spread)}]"
        view = dict(metric=metric_name(m), a=r["a"], b=r["b"], n=r["n"], diff=num_diff(m, r["mean_diff"], spread))
        view |= dict(ci=ci if math.isfinite(r["ci_low"]) else "–", win_rate=percent(r["win_rate"]))
        view |= dict(wtl=f"{r['wins']}/{r['ties']}/{r['losses']}", p=p_value(r["p"]), p_holm=p_value(r["p_holm"]))
        out.append(view | dict(significant=bool(r["significant"]), favours=r["favours"], unreachable=unreachable(r)))
    return out


def unreachable(r: dict, alpha: float = stats.ALPHA) -> str:
    """Why a paired row could not be significant whatever its values, e.g. ``n = 4: the smallest
    possible p is 0.125``; empty where significance was within reach."""
    floor = r.get("p_floor", math.nan)
    if floor is None or math.isnan(floor) or floor < alpha:
        return ""
    n, untied = int(r["n"]), int(r.get("untied", r["n"]))
    if untied == 0:
        return f"all {n} images tie" if n > 1 else "the image ties"
    who = f"n = {n}" if untied == n else f"{untied} of {n} images differ beyond the tie tolerance"
    holm = floor > stats.smallest_p(untied)  # raised by the Holm correction over the metric's pairs
    return f"{who}: the smallest possible {'Holm p' if holm else 'p'} is {p_value(floor)}"


def not_significant(r: dict) -> str:
    """``not significant``, with why where significance was out of reach at this n."""
    why = unreachable(r)
    return f"not significant ({why})" if why else "not significant"


def metric_details(spec: dict) -> tuple[str, list[str]]:
    """A metric's implementation and its settings, one short item each (weights by their kind and hash)."""
    if spec.get("available") is False:
        return "unavailable (reason in the notes above)", []
    items = []
    for k, v in spec.items():
        if k in ("higher_is_better", "implementation", "provenance", "reference", "info"):  # these are in metrics.json
            continue
        if k == "weights" and isinstance(v, dict):
            sha = str(v.get("tensors_sha256", ""))[:12]
            kind = "standard weights" if v.get("standard") else "NON-STANDARD weights"
            items.append(kind + (f" (tensors sha256 {sha}…)" if sha else ""))
        elif k == "extractor" and isinstance(v, dict):
            items.append(f"extractor={v.get('name', '?')}" + (f", resize: {v['resize']}" if v.get("resize") else ""))
        elif isinstance(v, dict):
            items.append(f"{k}=" + ", ".join(f"{a}: {b}" for a, b in v.items() if not isinstance(b, dict)))
        else:
            items.append(f"{k}={v}")
    return str(spec.get("implementation", "")), items


def _describe_metric(spec: dict) -> str:
    impl, items = metric_details(spec)
    return impl + (f" ({'; '.join(items)})" if items else "")


def _count(n) -> str:
    if not n:
        return "?"
    return f"{n / 1e6:.1f} M params" if n >= 1e5 else f"{n / 1e3:.1f} k params"


def protocol_view(section: Section) -> dict:
    """Protocol facts (dataset, geometry, pixels, metrics) and what each VAE was."""
    d = section.dataset
    facts = [("dataset", f"{d.get('name', '?')}: {d.get('root', '?')}")]
    files = sorted({int(r.protocol.get("dataset", {}).get("n_files") or 0) for r in section.runs})  # None: a stream
    facts.append(("images listed", ", ".join(map(str, files))))
    if d.get("resolution"):
        res, sizes = d["resolution"], scored_sizes(section.runs)
        scored = [f"{w}×{h}" for w, h in sizes if (w, h) != (res, res)]
        note = (
            f", scored at {', '.join(scored)} (cropped to a multiple of the VAE's downsampling factor)"
            if scored
            else ""
        )
        facts.append(("resolution", f"{res}×{res}{note}"))
    for key in ("resize", "crop", "small", "note"):
        if d.get(key):
            facts.append((key, str(d[key])))
    facts.append(("pixels", section.pixels or ("8-bit quantized" if section.quantize else "not quantized")))
    metrics = [(metric_name(section.info(m)), _describe_metric(spec)) for m, spec in section.metric_protocols.items()]
    details = [(metric_name(section.info(m)), *metric_details(spec)) for m, spec in section.metric_protocols.items()]
    vaes = []
    for e in section.entries:
        info, t = e.info, e.timing
        latent = f"{info.get('latent_space', '?')} {info.get('latent_channels', '?')}ch f{info.get('downsample', '?')}"
        stored = info.get("weights_dtype")
        dtype = e.dtype + (f" (weights stored {stored})" if stored not in (None, e.dtype) else "")
        ips = t.get("images_per_s")
        speed = f"{ips:.2f} img/s" if ips is not None and pd.notna(ips) else "–"
        view = dict(label=e.label, run=e.run.label, path=str(e.run.path), source=str(info.get("source", "?")))
        view |= dict(latent=latent, dtype=dtype, device=str(t.get("device") or info.get("device") or "?"), speed=speed)
        vaes.append(view | dict(posterior=str(info.get("posterior", "")), params=_count(info.get("parameters"))))
    return {"facts": facts, "metrics": metrics, "metric_details": details, "vaes": vaes}


def overview_rows(views: list[dict]) -> tuple[list[str], list[dict]]:
    """Every (section, VAE) on one table: the first two columns of each section's summary, without CIs."""
    metrics: list[str] = []
    titles: dict[str, str] = {}
    for v in views:
        for h in v["summary"]["header"]:
            if h["metric"] not in metrics:
                metrics.append(h["metric"])
                titles[h["metric"]] = h["title"]
    rows = []
    for v in views:
        index = {h["metric"]: i for i, h in enumerate(v["summary"]["header"])}
        for r in v["summary"]["rows"]:
            cells = []
            for m in metrics:
                c = (
                    r["cells"][index[m]]
                    if m in index
                    else {"mean": "–", "best": False, "ok": False, "marks": "", "warn": False}
                )
                cells.append(
                    {"main": c["mean"], "best": c["best"], "ok": c["ok"], "noted": bool(c["marks"]), "warn": c["warn"]}
                )
            rows.append({"section": v["title"], "slug": v["slug"], "label": r["label"], "n": r["n"], "cells": cells})
    return [titles[m] for m in metrics], rows


def _tie_words(info: MetricInfo) -> str:
    tie = info.tie_tolerance
    unit = f" {info.unit}" if info.unit and tie.abs and not tie.rel else ""
    return f"within the float-noise tie tolerance {tie.describe()}{unit}" if tie.abs or tie.rel else "equal"


def _names(labels: list[str]) -> str:
    return ", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1 else "".join(labels)


def findings(section: Section, summary: pd.DataFrame, paired: pd.DataFrame) -> list[str]:
    """One sentence per metric: the best VAE, its margin over the runner-up with uncertainty, and how many it beats.

    VAEs are ranked by ``rank_mean`` (the mean over the images every VAE scored). Means within the
    metric's tie tolerance of the best tie with it: a tie names them all and marks no best. Facts
    (``quality`` false: bpp, region counts) get their range, where it is one, and no ranking.
    """
    out = []
    for metric in list(dict.fromkeys(summary["metric"])):
        info = section.info(metric)
        higher = info.higher_is_better
        ok = summary[(summary["metric"] == metric) & (summary["status"] == "ok")]
        ok = ok[ok["mean"].astype(float).notna()]  # NaN: not applicable (a codec's latent_bits drop); inf stays
        if len(ok) < 2:
            continue
        if not info.quality:  # a fact (a rate, a count): its range, never a winner
            low, high = ok.loc[ok["mean"].idxmin()], ok.loc[ok["mean"].idxmax()]
            if low["mean"] == high["mean"]:
                continue
            text = f"{metric_name(info)}: from {num(info, low['mean'])} ({low['entry']}) to "
            text += f"{num(info, high['mean'])} ({high['entry']})"
            rd = "; quality at equal rate is on the rate–distortion plot" if metric == BPP.name else ""
            out.append(text + rd + ".")
            continue
        if higher is None:
            continue
        ranked = ok[ok["rank_mean"].astype(float).notna()]
        if len(ranked) < 2:
            if ok["level"].iloc[0] != "set":
                why = "no image every VAE scored"
            elif any(section.whole_set_subsets(metric, n) for n in ok["n"]):
                why = "every subset is the whole set"
            else:
                why = "one value per VAE over its own, different numbers of images"
            out.append(f"{metric_name(info)}: not ranked ({why}; see the notes).")
            continue
        ranked = ranked.sort_values("rank_mean", ascending=not higher, kind="stable")
        top = stats.top_tier(dict(zip(ranked["entry"], ranked["rank_mean"].astype(float))), info)
        top = [lab for lab in section.labels if lab in top]  # in the section's order
        value = num(info, ranked.iloc[0]["rank_mean"])
        if len(top) > 1:
            text = f"{metric_name(info)}: {_names(top)} tie ({value}; means {_tie_words(info)}), so none is best"
            if len(top) < len(ranked):
                nxt = ranked[~ranked["entry"].isin(top)].iloc[0]
                text += f"; then {nxt['entry']} ({num(info, nxt['rank_mean'])})"
            out.append(text + ".")
            continue
        best, second = ranked.iloc[0], ranked.iloc[1]
        text = f"{metric_name(info)}: best {best['entry']} ({value})"
        pair = {best["entry"], second["entry"]}
        rows = paired[(paired["metric"] == metric) & paired["a"].isin(pair) & paired["b"].isin(pair)]
        if rows.empty:
            why = (
                "one value per VAE, so no per-image test" if best["level"] == "set" else "no shared images to pair them"
            )
            text += f", then {second['entry']} ({num(info, second['rank_mean'])}); {why}."
            out.append(text)
            continue
        r = rows.iloc[0]
        flip = r["a"] != best["entry"]  # express the margin as best − runner-up
        diff, lo, hi = (
            (-r["mean_diff"], -r["ci_high"], -r["ci_low"]) if flip else (r["mean_diff"], r["ci_low"], r["ci_high"])
        )
        wins = 1 - r["win_rate"] if flip else r["win_rate"]
        spread = hi - lo
        verdict = "significant" if r["significant"] else not_significant(r.to_dict())
        interval = f" [{num_diff(info, lo, spread)}, {num_diff(info, hi, spread)}]" if math.isfinite(lo) else ""
        ties = f", {r['ties']} tied" if r["ties"] else ""
        text += (
            f"; vs runner-up {second['entry']}: Δ {num_diff(info, diff, spread)}{interval}, "
            f"better on {percent(wins)} of {r['n']} images{ties}, Holm p = {p_value(r['p_holm'])} ({verdict})"
        )
        mine = paired[(paired["metric"] == metric) & ((paired["a"] == best["entry"]) | (paired["b"] == best["entry"]))]
        beaten = int((mine["significant"] & (mine["favours"] == best["entry"])).sum())
        if len(ranked) > 2:
            text += f"; significantly better than {beaten} of {len(ranked) - 1} others"
        out.append(text + ".")
    return out
