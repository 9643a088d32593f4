"""The report's tables as tidy frames: per-VAE summaries with CIs, paired comparisons, speed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from evalvae.metrics import stats
from evalvae.metrics.info import MetricInfo
from evalvae.report.sections import Section

# rank_mean: the mean best marks compare (over the images every VAE scored; the mean itself where
# every VAE scored the same images); n_rank: how many images that is.
SUMMARY_COLUMNS = [
    "entry",
    "metric",
    "level",
    "mean",
    "std",
    "n",
    "ci_low",
    "ci_high",
    "status",
    "best",
    "infinite",
    "rank_mean",
    "n_rank",
]
PAIRED_COLUMNS = [
    "metric",
    "a",
    "b",
    "n",
    "mean_diff",
    "ci_low",
    "ci_high",
    "wins",
    "ties",
    "losses",
    "win_rate",
    "p",
    "p_holm",
    "significant",
    "favours",
    "untied",
    "p_floor",
]
# Bench operations in order of preference for the speed axis: decoding is what generation pays per image.
SPEED_OPS = ("decode", "roundtrip", "encode_decode", "encode+decode", "reconstruct", "encode")


def _mark_best(rows: list[dict], info: MetricInfo) -> None:
    """Mark the entries within the tie tolerance of the best value of ``rank_mean``; none when every
    entry ties with it (then no VAE is better than another) or fewer than two have a value."""
    ranked = {i: r["rank_mean"] for i, r in enumerate(rows) if r["status"] == "ok" and not math.isnan(r["rank_mean"])}
    top = stats.top_tier(ranked, info)
    if len(ranked) < 2 or len(top) == len(ranked):
        return
    for i in top:
        rows[i]["best"] = True


def _blank(entry: str, metric: str, level: str) -> dict:
    row = dict.fromkeys(("mean", "std", "ci_low", "ci_high", "rank_mean"), math.nan)
    return row | dict(entry=entry, metric=metric, level=level, n=0, best=False, infinite=0, n_rank=0)


def summary_table(section: Section) -> pd.DataFrame:
    """One row per (entry, metric): mean, sample std, N, 95% bootstrap CI (per-image metrics), best flag.

    Missing values (NaN) are left out. Infinite ones are not (the PSNR of an exact reconstruction is
    +inf): the mean of a set holding one is +inf, as in summary.csv, and then has no std or CI;
    ``infinite`` counts them.
    """
    rows = []
    for metric in section.metrics:
        block = []
        shared = sorted(section.shared_images(metric))
        same = len({frozenset(v) for v in section.scored(metric).values()}) <= 1
        for e in section.entries:
            row = _blank(e.label, metric, "image")
            if metric not in e.run.metric_columns:
                block.append({**row, "status": "not measured"})
                continue
            mine = section.per_image[section.per_image["entry"] == e.label]
            values = mine[metric].to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            if values.size == 0:
                block.append({**row, "status": "unavailable"})
                continue
            finite = bool(np.isfinite(values).all())
            ci = stats.bootstrap_ci(values) if finite else stats.NAN_INTERVAL
            ranked = values if same else mine.loc[mine["image"].astype(str).isin(shared), metric].to_numpy(float)
            ranked = ranked[~np.isnan(ranked)]
            std = float(values.std(ddof=1)) if values.size > 1 and finite else math.nan
            row |= dict(mean=float(values.mean()), std=std, n=int(values.size), ci_low=ci.low, ci_high=ci.high)
            row |= dict(status="ok", infinite=int(np.isinf(values).sum()), n_rank=int(ranked.size))
            block.append(row | {"rank_mean": float(ranked.mean()) if ranked.size else math.nan})
        _mark_best(block, section.info(metric))
        rows += block
    for metric in section.set_metrics:
        block = []
        for e in section.entries:
            found = section.set_level[(section.set_level["entry"] == e.label) & (section.set_level["metric"] == metric)]
            row = _blank(e.label, metric, "set")
            if found.empty:
                block.append({**row, "status": "not measured"})
                continue
            r = found.iloc[-1]
            mean = float(r["mean"]) if pd.notna(r["mean"]) else math.nan
            n = int(r["n"]) if pd.notna(r["n"]) else 0
            std = float(r["std"]) if pd.notna(r["std"]) else math.nan
            status = "unavailable" if math.isnan(mean) else "ok"
            block.append(row | dict(mean=mean, std=std, n=n, status=status, infinite=int(math.isinf(mean))))
        ok = [r for r in block if r["status"] == "ok"]
        # One value per VAE over its own images: ranked only where every VAE had the same number of
        # images, and not where every subset of KID is the whole set (no spread to tell VAEs apart).
        if len({r["n"] for r in ok}) == 1 and not any(section.whole_set_subsets(metric, r["n"]) for r in ok):
            for r in ok:
                r["rank_mean"], r["n_rank"] = r["mean"], r["n"]
        _mark_best(block, section.info(metric))
        rows += block
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def paired_table(section: Section, alpha: float = stats.ALPHA) -> pd.DataFrame:
    """Every pair of entries for every per-image quality metric, on the images both scored.

    Per-image differences within the metric's tie tolerance count as 0 (:func:`evalvae.metrics.stats.paired`).
    ``mean_diff`` is ``a - b``; ``win_rate`` is the share of images where ``a`` is better (ties
    half); ``p_holm`` adjusts the Wilcoxon p-values over the pairs of one metric (Holm), and
    ``significant`` is ``p_holm < alpha``. ``favours`` names the better side where the means of
    the two differ beyond the tie tolerance. ``untied`` counts the images that differ beyond it,
    and ``p_floor`` is the smallest ``p_holm`` the test could give at that count over these pairs,
    whatever the values: at or above ``alpha``, significance is out of reach.
    Facts (bpp, region counts: ``quality`` false in their info) are not tested.
    """
    rows = []
    for metric in section.metrics:
        info = section.info(metric)
        if not info.quality:
            continue
        higher = info.higher_is_better
        wide = section.per_image.pivot_table(
            index="image", columns="entry", values=metric, aggfunc="first", dropna=False
        )
        labels = [lab for lab in section.labels if lab in wide.columns and wide[lab].notna().any()]
        block = []
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                va, vb = wide[a].to_numpy(float), wide[b].to_numpy(float)
                p = stats.paired(va, vb, higher, tie=info.tie)
                if p.n == 0:
                    continue
                both = ~np.isnan(va) & ~np.isnan(vb)
                mean_a, mean_b = float(va[both].mean()), float(vb[both].mean())
                favours = ""
                if (
                    higher is not None
                    and p.mean_diff != 0
                    and not math.isnan(p.mean_diff)
                    and not info.tie_tolerance.ties(mean_a, mean_b)
                ):  # an infinite Δ favours a side too
                    favours = a if (p.mean_diff > 0) == higher else b
                stat = dict(n=p.n, mean_diff=p.mean_diff, ci_low=p.ci.low, ci_high=p.ci.high, wins=p.wins, ties=p.ties)
                stat |= dict(losses=p.losses, win_rate=p.win_rate, p=p.p_value, untied=p.untied)
                block.append(dict(metric=metric, a=a, b=b, favours=favours, **stat))
        adjusted = stats.holm([r["p"] for r in block])
        tests = int(np.isfinite([r["p"] for r in block]).sum())
        floors = [stats.smallest_p(r["untied"]) for r in block]
        for r, ph, floor in zip(block, adjusted, floors):
            r["p_holm"] = float(ph)
            r["significant"] = bool(np.isfinite(ph) and ph < alpha)
            # Holm multiplies the smallest p by the number of tests, and never lowers any p
            r["p_floor"] = float(min(1.0, max(floor, tests * min(floors))))
        rows += block
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _bench_rows(bench: pd.DataFrame, section: Section) -> pd.DataFrame:
    if bench.empty:
        return bench
    rows = bench
    if "status" in rows:
        rows = rows[rows["status"].astype(str).str.lower() == "ok"]
    res = section.dataset.get("resolution")
    if res is not None and "resolution" in rows and (rows["resolution"] == res).any():
        rows = rows[rows["resolution"] == res]
    return rows[rows["vae"].isin({e.vae for e in section.entries}) & rows["images_per_s"].notna()]


def speed_points(section: Section, summary: pd.DataFrame, bench: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Quality (first per-image metric with a known direction) against throughput, one point per entry.

    Throughput comes from ``bench.csv`` (one operation for all VAEs, the fastest passing
    configuration in the entry's dtype where measured) when it covers at least as many entries as
    the runs' own ``timings.csv`` (end to end: load, encode, decode, metrics), else from the
    timings. Returns the points and a sentence saying what the speed axis is.
    """
    metric = section.primary_metric
    empty = pd.DataFrame(columns=["entry", "metric", "quality", "images_per_s", "detail"])
    if metric is None:
        return empty, ""
    ok = summary[(summary["metric"] == metric) & (summary["status"] == "ok")]
    # an infinite mean has no place on an axis
    quality = ok[np.isfinite(ok["mean"].astype(float))].set_index("entry")["mean"]

    def point(e, images_per_s, detail: str) -> dict:
        return dict(
            entry=e.label, metric=metric, quality=quality[e.label], images_per_s=float(images_per_s), detail=detail
        )

    rows = _bench_rows(bench, section)
    bench_points, op = [], None
    if not rows.empty and "op" in rows:
        ops = [o for o in SPEED_OPS if o in set(rows["op"])] + sorted(set(rows["op"]) - set(SPEED_OPS))
        op = ops[0] if ops else None
        for e in section.entries:
            mine = rows[(rows["vae"] == e.vae) & (rows["op"] == op)]
            if "dtype" in mine and (mine["dtype"] == e.dtype).any():
                mine = mine[mine["dtype"] == e.dtype]
            if mine.empty or e.label not in quality:
                continue
            best = mine.loc[mine["images_per_s"].idxmax()]
            detail = ", ".join(
                f"{k} {best[k]}" for k in ("dtype", "batch", "mode", "device") if k in best and pd.notna(best[k])
            )
            bench_points.append(point(e, best["images_per_s"], detail))
    run_points = []
    for e in section.entries:
        t = e.timing
        if t.get("images_per_s") is not None and pd.notna(t.get("images_per_s")) and e.label in quality:
            detail = f"{t.get('dtype', '')}, batch {t.get('batch_size', '?')}, {t.get('device', '')}"
            run_points.append(point(e, t["images_per_s"], detail))
    if bench_points and len(bench_points) >= len(run_points):
        points, note = bench_points, f"bench.csv, {op} throughput (fastest passing configuration per VAE)"
    elif run_points:
        points, note = run_points, "run timings: end-to-end images/s of the evaluation (data, encode, decode, metrics)"
    else:
        return empty, ""
    return pd.DataFrame(points, columns=empty.columns), note
