"""Which images show a distribution of per-image scores: the typical one, and each entry's worst and best.

One rule for the run that saves these images (:mod:`evalvae.recon.samples`) and the report that
draws them (:func:`evalvae.report.grids.select_images`), so the report of a run asks for exactly
the images that run saved. Scores come as a wide table, one row per image and one column per
entry (a VAE, or a VAE of one run in a report section); NaN is an image the entry did not score.

* **typical**: the image whose mean score over the entries is closest to the median of those
  means (over the images every entry scored, when there are any); first by image id on ties.
* **worst / best**: per entry, its ``k`` lowest / highest scores by the metric's direction,
  ties in image-id order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

KINDS = ("typical", "worst", "best")


@dataclass(frozen=True)
class Pick:
    """One reason to show ``image``: ``kind`` (typical, worst or best), its ``rank`` and the ``entry`` it is for."""

    image: str
    kind: str
    rank: int = 1
    entry: str | None = None  # None for the typical image (all entries)


def ranked(scores: pd.Series, higher: bool, kind: str, k: int) -> list[str]:
    """The ``k`` worst or best images of one entry's ``scores`` (image -> value); NaN never ranks."""
    if k < 1:
        return []
    if kind not in ("worst", "best"):
        raise ValueError(f"invalid kind={kind!r}; choose worst or best")
    sign = 1.0 if (kind == "worst") == higher else -1.0
    return [i for _, i in sorted((sign * float(v), str(i)) for i, v in scores.items() if not math.isnan(v))[:k]]


def typical_image(wide: pd.DataFrame) -> str | None:
    """The image of median mean score (see the module docstring); None when no image has a score."""
    wide = wide.dropna(axis=1, how="all").sort_index()
    complete = wide.dropna()
    mean = (complete if len(complete) else wide).mean(axis=1).dropna()
    if not len(mean):
        return None
    return str((mean - mean.median()).abs().sort_values(kind="stable").index[0])


def pick_images(
    wide: pd.DataFrame,
    higher: bool,
    *,
    typical: bool = True,
    worst: int = 0,
    best: int = 0,
    entries: list[str] | None = None,
) -> list[Pick]:
    """The typical image (if ``typical``), then per entry (``entries`` order, default the columns') its
    ``worst`` worst and ``best`` best images. An image picked for several reasons has several picks."""
    picks = []
    if typical and (image := typical_image(wide)) is not None:
        picks.append(Pick(image, "typical"))
    for entry in entries if entries is not None else list(wide.columns):
        if entry not in wide:
            continue
        for kind, k in (("worst", worst), ("best", best)):
            picks += [
                Pick(image, kind, rank, entry) for rank, image in enumerate(ranked(wide[entry], higher, kind, k), 1)
            ]
    return picks


def score_table(per_image: pd.DataFrame, metric: str, entry: str = "vae") -> pd.DataFrame:
    """``per_image`` rows (``entry``, ``image``, ``metric``) as the wide table above (images and entries
    sorted; an entry or image without any score left out)."""
    if per_image.empty or metric not in per_image:
        return pd.DataFrame()
    frame = per_image[[entry, "image", metric]].astype({"image": str, metric: float})
    return frame.pivot_table(index="image", columns=entry, values=metric, aggfunc="first")
