"""Region results in the report: text and face fidelity by region size, and the worst regions side by side.

Drawn from the run's files only: ``summary_by_region_size.csv`` (the curves) and ``per_region.parquet``
(the regions' boxes, scores and readings), cropped from the pictures the run saved under ``samples/``
(:mod:`evalvae.recon.samples`). So the worst regions shown are the worst among the images the run
saved (its typical, ``samples.worst`` worst and ``samples.best`` best images by its first metric);
a run with more saved images (``samples.worst=K``) offers more regions to pick from.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from evalvae.report.plots import STYLE, _save, colours, plt
from evalvae.report.saved import Unavailable, reconstruct_images
from evalvae.report.sections import Section

log = logging.getLogger(__name__)

# per record kind (per_region's ``metric``): (metric, title, higher is better): the curves, and the metric the worst regions are ranked by
CURVES = {
    "text": [("text_ned", "text NED", False), ("text_acc", "text accuracy", True)],
    "faces": [("face_sim", "face similarity (cosine)", True)],
}
TITLES = {
    "text": ("Text fidelity by text height", "Worst text regions"),
    "faces": ("Face identity by face size", "Worst faces"),
}
SIZE_TITLE = {"text": "text height (px)", "faces": "face size (px)"}
WORST_CAPTIONS = {
    "text": "The worst regions by NED (worst over the VAEs) among the images saved in samples/: original crop, then "
    "each VAE's, enlarged by pixel repetition; under each, what OCR read on the original / the reconstruction and "
    "the ground truth where known.",
    "faces": "The worst faces by face similarity (worst over the VAEs) among the images saved in samples/: original "
    "crop, then each VAE's, enlarged by pixel repetition, with its cosine similarity.",
}
WORST = 6  # regions per grid
ZOOM_PX = 96  # crops are enlarged by pixel repetition to about this height


def _read(run, name: str) -> pd.DataFrame:
    path = run.path / name
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s)", path, e)
        return pd.DataFrame()


def _entries(section: Section, name: str) -> pd.DataFrame:
    """The rows of each run's file ``name`` that belong to the section's entries, labelled by entry."""
    frames = []
    for run in section.runs:
        df = _read(run, name)
        if df.empty:
            continue
        for e in (e for e in section.entries if e.run is run):
            frames.append(df[df["vae"] == e.vae].assign(entry=e.label))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def by_size(section: Section) -> pd.DataFrame:
    """``entry, metric, bin, mean, std, n`` of every entry's run, in the runs' bin order."""
    return _entries(section, "summary_by_region_size.csv")


def per_region(section: Section) -> pd.DataFrame:
    return _entries(section, "per_region.parquet")


def curves(section: Section, table: pd.DataFrame, kind: str, path: Path) -> Path | None:
    """One panel per metric of ``kind``: the mean per size bin (small to large), a line per VAE, n over the points."""
    panels = [(m, t) for m, t, _ in CURVES[kind] if not table.empty and (table["metric"] == m).any()]
    if not panels:
        return None
    order = list(dict.fromkeys(table.loc[table["metric"].isin([m for m, _ in panels]), "bin"]))
    colour = colours(section)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
        for ax, (metric, title) in zip(axes.flat, panels):
            rows = table[table["metric"] == metric]
            for label in section.labels:
                mine = rows[rows["entry"] == label].set_index("bin").reindex(order)
                if mine["mean"].notna().any():
                    x = np.arange(len(order))
                    ax.plot(x, mine["mean"].to_numpy(float), marker="o", color=colour[label], label=label)
                    for xi, (m, n) in enumerate(zip(mine["mean"], mine["n"])):
                        if pd.notna(m):
                            ax.annotate(f"n={int(n)}", (xi, m), textcoords="offset points", xytext=(0, 5), fontsize=7.5)
            ax.set_xticks(np.arange(len(order)), order)
            ax.set_xlabel(SIZE_TITLE[kind])
            ax.set_title(title)
            if metric in ("text_acc", "face_sim", "text_ned"):
                ax.set_ylim(-0.05, 1.08)
        axes.flat[0].legend(frameon=False, fontsize=8.5)
        fig.tight_layout()
        return _save(fig, path)


def _crop(image: np.ndarray, box) -> np.ndarray | None:
    """The axis-aligned bounds of ``box`` (flat corners) with 2 px margin, enlarged to about ZOOM_PX high."""
    b = [float(v) for v in box]
    xs, ys = b[0::2], b[1::2]
    h, w = image.shape[:2]
    x0, x1 = max(0, math.floor(min(xs)) - 2), min(w, math.ceil(max(xs)) + 2)
    y0, y1 = max(0, math.floor(min(ys)) - 2), min(h, math.ceil(max(ys)) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    crop = image[y0:y1, x0:x1]
    k = max(1, min(8, ZOOM_PX // crop.shape[0]))
    return crop.repeat(k, axis=0).repeat(k, axis=1)  # nearest-neighbour: pixel repetition only


def _caption(row, kind: str) -> str:
    if kind == "text":
        truth = row.get("truth")
        lines = [f"orig: {row.get('original_text') or '∅'}", f"recon: {row.get('recon_text') or '∅'}"]
        if isinstance(truth, str):
            lines.append(f"truth: {truth}")
        return "\n".join(lines) + f"\nNED {row['text_ned']:.2f}"
    return f"sim {row['face_sim']:.3f}"


def worst_regions(section: Section, regions: pd.DataFrame, kind: str, path: Path, k: int = WORST) -> tuple:
    """A grid of the ``k`` worst regions of ``kind`` (by its first metric over the VAEs' worst score), among the
    images every VAE saved: original crop, then each VAE's crop with its reading. Returns (path or None, note)."""
    metric, _, higher = CURVES[kind][0]
    rows = regions[(regions["metric"] == kind)] if not regions.empty else regions
    if rows.empty or metric not in rows or not rows[metric].notna().any():
        return None, ""
    rows = rows[rows[metric].notna()].copy()
    pics = {}
    for e in section.entries:
        try:
            got, _ = reconstruct_images(e.run, e.vae, sorted(set(rows["image"].astype(str))))
        except Unavailable as err:
            log.info("no region grid from %s: %s", e.label, err)
            got = {}
        pics[e.label] = got
    shown = [img for img in dict.fromkeys(rows["image"].astype(str)) if all(img in pics[lab] for lab in pics)]
    missing = set(rows["image"].astype(str)) - set(shown)
    if not shown:
        return None, (
            f"No {kind} region grid: no image with {kind} regions was saved under samples/ for every VAE "
            "(raise samples.worst to save more)."
        )
    rows = rows[rows["image"].astype(str).isin(shown)]
    rows["box_key"] = rows["box"].map(lambda b: tuple(np.round(np.asarray(b, dtype=float), 1)))
    key = ["image", "box_key"]
    score = rows.groupby(key)[metric].agg("min" if higher else "max")
    picks = score.sort_values(ascending=higher, kind="stable").index[:k]
    labels = section.labels
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, axes = plt.subplots(len(picks), len(labels) + 1, figsize=(2.3 * (len(labels) + 1), 1.9 * len(picks)))
        axes = np.atleast_2d(axes)
        for i, (image, bk) in enumerate(picks):
            here = rows[(rows["image"].astype(str) == image) & (rows["box_key"] == bk)]
            box = here.iloc[0]["box"]
            first = pics[labels[0]][image].original
            tiles = [("original", _crop(first, box), f"{image}\n{here.iloc[0]['bin']} px")]
            for lab in labels:
                mine = here[here["entry"] == lab]
                cap = _caption(mine.iloc[0], kind) if len(mine) else "not scored"
                tiles.append((lab, _crop(pics[lab][image].recon, box), cap))
            for ax, (lab, tile, cap) in zip(axes[i], tiles):
                if tile is not None:
                    ax.imshow(tile, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(cap, fontsize=7.5)
                if i == 0:
                    ax.set_title(lab, fontsize=9)
        with warnings.catch_warnings():  # a reading in a script DejaVu lacks is drawn as boxes
            warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
            fig.tight_layout()
            out = _save(fig, path)
    if not missing:
        return out, ""
    return out, f"{len(missing)} image(s) with {kind} regions were not saved under samples/ and are not searched."


def region_figures(section: Section, plot_dir: Path, grids: bool = True) -> tuple[list[dict], list[str]]:
    """The region figures of ``section`` (none when its runs have no region results) and notes on them;
    with ``grids``, the worst regions' crops too."""
    table, regions = by_size(section), per_region(section)
    figures, notes = [], []
    if table.empty and regions.empty:
        return figures, notes
    for kind in CURVES:
        p = curves(section, table, kind, plot_dir / f"{section.slug}-{kind}-by-size.png")
        if p is not None:
            caption = (
                "Mean over regions per size bin (summary_by_region_size.csv), one line per VAE; n: regions in the bin."
            )
            figures.append({"title": TITLES[kind][0], "path": p, "caption": caption, "wide": False})
        p, note = None, ""
        if grids:
            p, note = worst_regions(section, regions, kind, plot_dir / f"{section.slug}-{kind}-worst.png")
        if p is not None:
            figures.append({"title": TITLES[kind][1], "path": p, "caption": WORST_CAPTIONS[kind], "wide": True})
        if note:
            notes.append(note)
    return figures, notes
