"""Decoding stored latents with every VAE, saving the PNGs and scoring each decode.

Batch by batch, the reference decoder decodes first and every other VAE is compared with it on
the same latents; nothing but the batch in flight is kept in memory. A VAE that fails on a batch
is handed back to the run (which drops it) and the others go on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evalvae.device import peak_memory_mb, reset_peak_memory
from evalvae.io import atomic_path
from evalvae.jobs.failures import VAE_FAILURES
from evalvae.jobs.runtime import StageTimes
from evalvae.metrics import Unavailable, result_columns, to_pixels
from evalvae.metrics.base import SetStates
from evalvae.t2i.metrics import T2IMetrics
from evalvae.t2i.suites import Prompt
from evalvae.vae import VAEAdapter


@dataclass(frozen=True)
class Item:
    """One generated image: a prompt and a seed; ``image`` (``<prompt id>_s<seed>``) names its files."""

    image: str
    prompt: Prompt
    seed: int


def items_of(prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Item]:
    return [Item(f"{p.id}_s{s}", p, s) for p in prompts for s in seeds]


def save_png(pixels_u8: torch.Tensor, path: Path) -> None:
    """Write a ``(3, H, W)`` uint8 image as an RGB PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels_u8.permute(1, 2, 0).cpu().numpy())).save(tmp, format="PNG")


@dataclass
class VAEState:
    """Per-VAE accumulators of one run."""

    vae: VAEAdapter
    times: StageTimes
    fakes: SetStates  # the decodes' states of the set-level metrics
    load_s: float = 0.0
    peak_mb: float = 0.0
    n: int = 0


def decode_and_score(
    vaes: dict[str, VAEState],
    reference: str,
    batches: Iterator[tuple[list[Item], torch.Tensor]],
    metrics: T2IMetrics,
    image_dir: Path | None,
    on_rows: Callable[[list[dict]], None],
    on_failure: Callable[[str, BaseException], None],
) -> None:
    """Decode each batch of latents with every VAE (``reference`` first) and hand the rows to ``on_rows``.

    A VAE that raises (:data:`evalvae.jobs.failures.VAE_FAILURES`) goes to ``on_failure`` without its rows of
    the batch; ``on_failure`` removes it from ``vaes``, and the other VAEs go on. Without the
    reference decoder's decode of a batch the agreement cells are NaN.
    """
    for items, latents in batches:
        texts = [it.prompt.text for it in items]
        text_features = (
            metrics.clip.text_features(texts)
            if metrics.clip is not None and not isinstance(metrics.clip, Unavailable)
            else None
        )
        ref_pixels, rows = None, []
        for name in [reference, *(n for n in vaes if n != reference)]:
            if name not in vaes:
                continue
            try:
                pixels, mine = decode_one(
                    name, vaes[name], items, latents, ref_pixels, text_features, metrics, image_dir
                )
            except VAE_FAILURES as e:
                on_failure(name, e)
                continue
            if name == reference:
                ref_pixels = pixels
            rows += mine
        on_rows(rows)


def decode_one(
    name: str,
    state: VAEState,
    items: list[Item],
    latents: torch.Tensor,
    ref_pixels: torch.Tensor | None,
    text_features,
    metrics: T2IMetrics,
    image_dir: Path | None,
) -> tuple[torch.Tensor, list[dict]]:
    """One VAE's decode of one batch: its pixels and its rows (agreement NaN when ``ref_pixels`` is None)."""
    device = state.vae.device
    reset_peak_memory(device)
    with state.times.stage("decode"):
        y = state.vae.decode(latents, seeds=[it.seed for it in items])  # a stochastic decoder: the item's seed
    state.peak_mb = max(state.peak_mb, peak_memory_mb(device))
    with state.times.stage("metrics"):
        pixels = to_pixels(y, metrics.quantize)
        u8 = (pixels if metrics.quantize else pixels.round()).to(torch.uint8)
        values: dict[str, list[float]] = {}
        for m in metrics.pair:
            got = {} if ref_pixels is None else m(ref_pixels, pixels)
            values.update({c: got[c].cpu().tolist() if got else [math.nan] * len(items) for c in result_columns(m)})
        if metrics.clip is not None:
            clip = (
                [math.nan] * len(items)
                if text_features is None
                else metrics.clip.score(metrics.clip.image_features(u8), text_features)
            )
            values["clip_score"] = list(map(float, clip))
        for m in metrics.sets:
            m.update(state.fakes[m], u8)
    if image_dir is not None:
        with state.times.stage("save"):
            for it, img in zip(items, u8):
                save_png(img, image_dir / name / f"{it.image}.png")
    h, w = u8.shape[-2:]
    rows = []
    for j, it in enumerate(items):
        row = {
            "vae": name,
            "image": it.image,
            "prompt_id": it.prompt.id,
            "prompt": it.prompt.text,
            "category": it.prompt.category,
            "seed": it.seed,
        }
        row.update({k: v[j] for k, v in values.items()})
        row.update(height=int(h), width=int(w))
        rows.append(row)
    state.n += len(items)
    return pixels, rows
