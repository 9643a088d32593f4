"""Samples: the few images the report's grids show, saved by the run as it scored them.

``<run>/samples/`` holds lossless PNGs and an index, so ``evalvae report`` draws its grids from
files, with no weights and no dataset:

* ``original/<image>.png``: the 8-bit original as the VAE saw it (cropped to a multiple of its
  downsampling factor; an image scored at two sizes by VAEs of other factors has one file per size);
* ``<vae>/<image>.png``: that VAE's reconstruction, rounded to 8 bits (what set-level metrics and
  image files see; with ``metrics.quantize=true`` exactly the pixels scored);
* ``index.json``: per image, why it was saved and, per VAE, its files, the recorded score and the
  PSNR of the saved pixels. File names are the id made safe plus a hash of it, so any id maps to
  a unique, portable name; the index maps ids to files.

Which images: :func:`evalvae.metrics.selection.pick_images` on the run's own scores of its first
per-image metric (PSNR under the default metrics), the rule the report selects with: the typical
image and each VAE's ``samples.worst`` worst and ``samples.best`` best, each with every VAE's
reconstruction, so cross-VAE grids are complete.

The picks are known once every VAE has scored every image, but a VAE's pixels exist only during
its own pass. So:

1. During a VAE's pass (:meth:`SampleKeeper.observe`, per batch) its current ``worst`` worst and
   ``best`` best images are kept (two sorted lists that candidates leave as better ones come),
   with the images the VAEs before it picked, known when its pass begins. Memory: at most
   ``worst + best`` images plus the earlier picks, whatever the dataset's size.
2. When its pass ends (:meth:`SampleKeeper.finish_vae`, with all its rows), its own picks are
   final. They are saved with the typical image over the VAEs so far and the earlier VAEs' picks;
   one that was not kept (its batch was read from the result chunks, or the typical image was no
   candidate) is read from the sample cache, else decoded again with the VAE, still loaded (one
   small batch from the dataset, no reload). Then its pixels are dropped.
3. When the run ends (:meth:`SampleKeeper.finish_run`), the picks are made again from
   ``per_image.parquet``, the table the report reads. What an earlier VAE lacks (later VAEs'
   picks, a typical image that moved) comes from the sample cache, else is decoded again by
   loading that VAE once more.

Each saved sample is also cached with the task's result chunks, under its batch's result key, so
a rerun whose batches all come from the chunks decodes nothing for its samples either.

Cost: a one-VAE run never reloads; it copies a few images, writes a few PNGs and decodes at most
the typical image again (when it was no candidate). A run of V VAEs reloads at most V - 1 of them
for a few images each the first time (seconds for an SD-size VAE on CPU). The alternatives:
re-decoding every pick at the end reloads every VAE; keeping candidates for the typical image too
would mean a reconstruction of every image. An image decoded again runs in another batch than
the one scored, so a few pixels may differ by a level: the index marks it ``re-decoded``, and the
report checks every saved picture against the recorded PSNR (within 0.05 dB).

A run continued in a new process (resume) gets its earlier VAEs' samples from the cache like any
rerun; files an earlier run left in the folder that no pick needs are removed. Saving samples
never costs results: a failure is logged, and the report shows those images as not saved.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from evalvae.data.datasets import IMAGE_EXTENSIONS
from evalvae.data.loader import collate
from evalvae.device import release_memory, resolve_device
from evalvae.errors import ConfigError
from evalvae.io import atomic_path, atomic_write_text
from evalvae.jobs.chunks import ChunkStore
from evalvae.jobs.failures import VAE_FAILURES
from evalvae.jobs.vaes import load, selected_vaes
from evalvae.metrics.pixel import psnr
from evalvae.metrics.selection import Pick, order_key, pick_images, score_table
from evalvae.recon.loop import BatchResult, reconstruct
from evalvae.recon.rate import Rate
from evalvae.results import read_per_image
from evalvae.vae import VAEAdapter

log = logging.getLogger(__name__)

FOLDER = "samples"
INDEX = "index.json"
FORMAT = 1
POOL = ".samples-pool"
DEFAULTS = {
    "typical": True,
    "worst": 3,
    "best": 1,
    "pool_mib": 1024,
}  # conf/run.yaml's samples, for a config without it
SAVE_FAILURES = (*VAE_FAILURES, OSError, ValueError)


def settings(node: Mapping | None) -> dict:
    """``cfg.samples`` checked: ``typical`` (bool), ``worst`` and ``best`` (counts per VAE, 0 for none), ``pool_mib``
    (MiB of scored pixels kept on disk during the run, 0 for none)."""
    out = dict(DEFAULTS)
    for key, value in dict(node or {}).items():
        if key not in DEFAULTS:
            raise ConfigError(f"samples.{key}", value, list(DEFAULTS))
        ok = isinstance(value, bool) if key == "typical" else (type(value) is int and value >= 0)
        if not ok:
            hint = {"typical": "true or false", "pool_mib": "MiB on disk (0 for none)"}.get(
                key, "a count of images per VAE (0 for none)"
            )
            raise ConfigError(f"samples.{key}", value, hint=hint)
        out[key] = value
    return out


def file_stem(name: str) -> str:
    """A portable file name for any id: its safe characters (image extension dropped) and a hash of it."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:60]
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}" if slug else digest


def json_float(value: float) -> float | str | None:
    """A float for JSON: +/-inf as "inf"/"-inf" (as in metrics.json), NaN as null."""
    value = float(value)
    if math.isnan(value):
        return None
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def write_png(path: Path, chw: torch.Tensor) -> None:
    """``(3, H, W)`` uint8 as a lossless PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(chw.permute(1, 2, 0).numpy())).save(tmp, format="PNG", compress_level=4)


class SampleKeeper:
    """Collects one recon run's samples (see the module docstring). A task calls its hooks in order:
    :meth:`observe` per batch, :meth:`finish_vae` before releasing each VAE that succeeded, and
    :meth:`finish_run` once the result tables are written. ``store`` (the task's result chunks)
    (a chunk store: ``read(key)`` -> ``(tensors, metadata)`` or None, ``write(key, tensors, metadata)``)
    caches each saved sample under its batch's result key; ``main`` is False in a process that
    writes no results (torchrun ranks above 0)."""

    def __init__(self, cfg, out: str | Path, dataset, metrics: list, store=None, main: bool = True, n_vaes: int = 1):
        self.settings = settings(cfg.get("samples"))
        self.cfg, self.dataset, self.store = cfg, dataset, store
        self.root = Path(out) / FOLDER
        self.quantize = bool(cfg.metrics.get("quantize", True))
        first = metrics[0].infos[0] if metrics else None  # the first per-image metric's first result
        self.metric = first.name if first is not None else None
        self.higher = bool(first.higher_is_better) if first is not None else True
        s = self.settings
        self.enabled = main and self.metric is not None and (s["typical"] or s["worst"] > 0 or s["best"] > 0)
        self.scores: dict[str, dict[str, float]] = {}  # finished VAE -> image -> score (floats only)
        self.keys: dict[str, dict[str, str]] = {}  # VAE -> image -> its batch's result key, where known
        self.wanted: set[str] = set()  # images the finished VAEs picked: kept during the next passes
        self.current: str | None = None
        self.candidates: dict[str, list[tuple[float, str]]] = {"worst": [], "best": []}  # the current VAE's
        self.pixels: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # image -> (original, recon), on CPU
        self.index: dict = {"images": {}}  # what this process saved; index.json once written
        self.peaks: dict[str, int] = {}  # VAE -> the most images' pixels held at once during its pass
        self.seconds = 0.0
        self.redecoded: dict[str, int] = {}
        # every scored image's pixels, on disk, up to pool_mib: what a later VAE's picks need of an earlier one
        self.pool = ChunkStore(Path(out) / POOL)
        self.pool_left = self.settings["pool_mib"] * 2**20 if self.enabled and n_vaes > 1 else 0
        self.pooled: dict[tuple[str, str], tuple[str, int]] = {}  # (VAE, image) -> (pool chunk, slot)
        self.pool_chunks = 0
        shutil.rmtree(self.pool.root, ignore_errors=True)

    @property
    def keeps_pixels(self) -> bool:
        """Whether the task must keep the batch's 8-bit pixels (``reconstruct(keep_pixels=...)``)."""
        return self.enabled

    @property
    def held(self) -> int:
        """How many images' pixels are held now."""
        return len(self.pixels)

    # -- during a VAE's pass ----------------------------------------------------------------------

    def _start(self, name: str) -> None:
        self.current = name
        self.keys[name] = {}
        self.candidates = {"worst": [], "best": []}
        self.pixels = {}  # a VAE that failed part-way leaves nothing behind

    def _offer(self, kind: str, value: float, image: str) -> bool:
        """Put ``image`` among the current VAE's ``kind`` candidates if it ranks there; True if it does."""
        k, ranked = self.settings[kind], self.candidates[kind]
        key = order_key(value, image, self.higher, kind)
        if k < 1 or (len(ranked) >= k and key >= ranked[-1]):
            return False
        bisect.insort(ranked, key)
        del ranked[k:]
        return True

    def observe(self, name: str, batch: BatchResult | list[dict], key: str | None = None) -> None:
        """One batch of VAE ``name``: a computed :class:`BatchResult` (its pixels are kept for the images
        that may be picked) or the rows of a batch read from the result chunks; ``key`` is the batch's
        result key (None when results are not stored)."""
        if not self.enabled:
            return
        start = time.perf_counter()
        if name != self.current:
            self._start(name)
        computed = isinstance(batch, BatchResult)
        rows = batch.rows if computed else batch
        where = [(g, j) for g, t in enumerate(batch.originals) for j in range(len(t))] if computed else []
        if len(where) != len(rows):  # no pixels: the picks among these rows come from the store or are decoded again
            where = [None] * len(rows)
        take = []
        for row, at in zip(rows, where):
            image, value = str(row["image"]), float(row.get(self.metric, math.nan))
            if key is not None:
                self.keys[name][image] = key
            if math.isnan(value):
                continue
            ranks = [self._offer(kind, value, image) for kind in ("worst", "best")]
            if (any(ranks) or image in self.wanted) and at is not None:
                take.append((image, at))
        if computed and where and where[0] is not None:
            self._pool(name, rows, where, batch)
        for image, (g, j) in take:
            self.pixels[image] = (
                batch.originals[g][j].to("cpu", copy=True),
                batch.reconstructions[g][j].to("cpu", copy=True),
            )
        keep = self.wanted | {image for ranked in self.candidates.values() for _, image in ranked}
        for image in [i for i in self.pixels if i not in keep]:
            del self.pixels[image]
        self.peaks[name] = max(self.peaks.get(name, 0), len(self.pixels))
        self.seconds += time.perf_counter() - start

    def _pool(self, name: str, rows: list[dict], where: list, batch: BatchResult) -> None:
        """Keep the batch's pixels in the pool while it has room, so that a pick no VAE kept is read, not decoded."""
        pairs = [(batch.originals[g][j], batch.reconstructions[g][j]) for g, j in where]
        size = sum(o.numel() * o.element_size() + r.numel() * r.element_size() for o, r in pairs)
        if size > self.pool_left:
            self.pool_left = 0
            return
        key, self.pool_chunks = f"p{self.pool_chunks:09d}", self.pool_chunks + 1
        tensors = {f"{kind}/{n}": t for n, pair in enumerate(pairs) for kind, t in zip(("o", "r"), pair)}
        self.pool.write(key, tensors)
        self.pool_left -= size
        for n, row in enumerate(rows):
            self.pooled[(name, str(row["image"]))] = (key, n)

    def _from_pool(self, name: str, image: str):
        at = self.pooled.get((name, image))
        got = self.pool.read(at[0]) if at is not None else None
        if got is None:
            return None
        return got[0][f"o/{at[1]}"], got[0][f"r/{at[1]}"], "scored"

    # -- when a VAE's pass ends ----------------------------------------------------------------------

    def _picks(self, wide: pd.DataFrame, entries: list[str]) -> list[Pick]:
        s = self.settings
        return pick_images(wide, self.higher, typical=s["typical"], worst=s["worst"], best=s["best"], entries=entries)

    def finish_vae(self, name: str, vae: VAEAdapter, rows: list[dict]) -> None:
        """Save VAE ``name``'s reconstructions of the images picked so far; ``rows`` are all its per-image
        rows (every process's). A pick whose pixels were not kept is read from the store or decoded
        again with ``vae``, still loaded. Then its pixels are dropped."""
        if not self.enabled:
            return
        start = time.perf_counter()
        if name != self.current:
            self._start(name)
        try:
            self.scores[name] = {str(r["image"]): float(r.get(self.metric, math.nan)) for r in rows}
            wide = pd.DataFrame({v: pd.Series(s, dtype=float) for v, s in self.scores.items()}).sort_index()
            picks = self._picks(wide, list(self.scores))
            needed = list(dict.fromkeys(p.image for p in picks))
            self.wanted.update(needed)
            mine = [i for i in needed if i in self.scores[name] and name not in self._saved(i)]
            got = {i: (*self.pixels[i], "scored") for i in mine if i in self.pixels}
            self._fill(name, vae, [i for i in mine if i not in got], got)
            self._write_index(self._reasons(picks))
        except SAVE_FAILURES as e:
            log.warning("samples of VAE '%s' not saved: %s: %s", name, type(e).__name__, e)
        finally:
            self.current, self.pixels = None, {}
            self.candidates = {"worst": [], "best": []}
            self.seconds += time.perf_counter() - start

    def _fill(self, name: str, vae: VAEAdapter | None, images: list[str], got: dict) -> list[str]:
        """Save ``got`` (image -> original, recon, source) plus ``images`` from the store, then (with
        ``vae``) decoded again; return the images still missing."""
        fresh = set(got)
        for image in images:
            cached = self._cached(name, image)
            if cached is not None:
                got[image] = cached
            elif (pooled := self._from_pool(name, image)) is not None:
                got[image] = pooled
                fresh.add(image)
        rest = [i for i in images if i not in got]
        if vae is not None and rest:
            fresh.update(rest)
            got.update({i: (*px, "re-decoded") for i, px in self._redecode(vae, rest).items()})
        scores = self.scores.get(name, {})
        for image, (original, recon, source) in got.items():
            self._save(name, image, original, recon, scores.get(image, math.nan), source)
            if image in fresh:
                self._cache(name, image, original, recon, source)
        return [i for i in images if i not in got]

    # -- when the run ends ---------------------------------------------------------------------------

    def finish_run(self) -> None:
        """Pick again from ``per_image.parquet``, save what an earlier VAE lacks (from the store, else
        loading it again), drop files no pick needs, and write ``samples/index.json``."""
        if not self.enabled:
            return
        start = time.perf_counter()
        self.pixels = {}  # a last VAE that failed part-way
        try:
            self._finish_run()
        except SAVE_FAILURES as e:
            log.warning("samples not saved: %s: %s", type(e).__name__, e)
        finally:
            shutil.rmtree(self.pool.root, ignore_errors=True)
            self.pooled = {}
        self.seconds += time.perf_counter() - start
        log.info(
            "samples: %d image(s) in %s for the report's grids (%.2f s; decoded again: %s)",
            len(self.index["images"]),
            self.root,
            self.seconds,
            ", ".join(f"{v} {k}" for v, k in self.redecoded.items()) or "none",
        )

    def _finish_run(self) -> None:
        per_image = read_per_image(self.root.parent)
        if per_image is None or per_image.empty or self.metric not in per_image:
            return
        per_image = per_image.astype({"image": str})
        vaes = list(dict.fromkeys(per_image["vae"]))
        picks = self._picks(score_table(per_image, self.metric), vaes)
        reasons = self._reasons(picks)
        for v, frame in per_image.groupby("vae"):
            self.scores[v] = dict(zip(frame["image"], frame[self.metric].astype(float)))
        specs = None
        for name in vaes:
            images = [i for i in reasons if i in self.scores[name] and name not in self._saved(i)]
            images = self._fill(name, None, images, {})
            if not images:
                continue
            specs = specs if specs is not None else selected_vaes(self.cfg)
            if name not in specs:
                self._not_saved(name, images, "its spec is not in this run's config")
                continue
            self._reload_and_fill(name, specs[name], images)
        self._prune(reasons, vaes)
        self._write_index(reasons)

    def _reload_and_fill(self, name: str, spec, images: list[str]) -> None:
        device = resolve_device(self.cfg.device)
        try:
            loaded = load(name, spec, device=device, cache_dir=self.cfg.get("cache_dir"))
        except VAE_FAILURES as e:
            self._not_saved(name, images, f"loading it again failed: {type(e).__name__}: {e}")
            return
        try:
            if self.cfg.get("channels_last"):
                loaded.vae.module.to(memory_format=torch.channels_last)
            self._fill(name, loaded.vae, images, {})
        finally:
            del loaded
            release_memory(device)

    def _reasons(self, picks: list[Pick]) -> dict[str, list[str]]:
        reasons: dict[str, list[str]] = {}
        for p in picks:
            reasons.setdefault(p.image, []).append(self.reason(p))
        return reasons

    def reason(self, pick: Pick) -> str:
        metric = str(self.metric).upper()
        if pick.kind == "typical":
            return f"typical: median mean {metric}"
        return f"{pick.kind} {metric} #{pick.rank} for {pick.entry}"

    # -- the sample cache ------------------------------------------------------------------------

    def _cache_key(self, name: str, image: str) -> str | None:
        key = self.keys.get(name, {}).get(image)
        if key is None or self.store is None:
            return None
        return hashlib.sha256(json.dumps({"sample": key, "image": image}, sort_keys=True).encode()).hexdigest()

    def _cached(self, name: str, image: str):
        key = self._cache_key(name, image)
        got = self.store.read(key) if key is not None else None
        if got is None or not {"original", "reconstruction"} <= set(got[0]):
            return None
        return got[0]["original"], got[0]["reconstruction"], got[1].get("source", "scored")

    def _cache(self, name: str, image: str, original: torch.Tensor, recon: torch.Tensor, source: str) -> None:
        key = self._cache_key(name, image)
        if key is not None:
            self.store.write(key, {"original": original, "reconstruction": recon}, {"source": source})

    # -- decoding again --------------------------------------------------------------------------

    def _position(self, image: str) -> tuple[int | None, str]:
        """Where ``image`` is in the dataset view, or None and why it cannot be read again."""
        records, indices = getattr(self.dataset, "records", None), getattr(self.dataset, "indices", None)
        if records is None or indices is None:
            return None, "the dataset is streamed, so its images cannot be read again by id"
        if not hasattr(self, "_ids"):
            self._ids = {rec.id: i for i, rec in enumerate(records)}
        i = self._ids.get(image)
        if i is None:
            return None, "not in the dataset any more"
        if i not in indices:
            return None, "in another process's shard of the dataset"
        return indices.index(i), ""

    def _redecode(self, vae: VAEAdapter, images: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Encode and decode ``images`` again, as the run did (same seeds and pixel rounding)."""
        if not images:
            return {}
        samples = []
        for image in images:
            at, why = self._position(image)
            sample = self.dataset[at] if at is not None else None
            if sample is None or sample.image is None:
                self._not_saved(vae.name, [image], why or sample.reason)
            else:
                samples.append(sample)
        size = max(1, int(self.cfg.get("batch_size") or 1))
        batches = [collate(samples[i : i + size]) for i in range(0, len(samples), size)]
        out = {}
        for result in reconstruct(
            vae,
            batches,
            [],
            quantize=self.quantize,
            channels_last=bool(self.cfg.get("channels_last")),
            seed=int(self.cfg.get("seed") or 0),
            keep_pixels=True,
            rate=Rate.from_config(self.cfg.get("metrics") or {}),  # latent_bits as scored
        ):
            rows = iter(result.rows)
            for originals, recons in zip(result.originals, result.reconstructions):
                for original, recon in zip(originals, recons):
                    out[next(rows)["image"]] = (original.to("cpu", copy=True), recon.to("cpu", copy=True))
        self.redecoded[vae.name] = self.redecoded.get(vae.name, 0) + len(out)
        return out

    # -- files ---------------------------------------------------------------------------------------

    def _entry(self, image: str) -> dict:
        return self.index["images"].setdefault(image, {"reasons": [], "originals": {}, "vaes": {}, "not_saved": {}})

    def _saved(self, image: str) -> dict:
        return self.index["images"].get(image, {}).get("vaes", {})

    def _not_saved(self, vae: str, images: list[str], why: str) -> None:
        for image in images:
            self._entry(image)["not_saved"][vae] = why
        log.warning("samples: %d image(s) of VAE '%s' not saved: %s", len(images), vae, why)

    def _save(self, vae: str, image: str, original: torch.Tensor, recon: torch.Tensor, score: float, source: str):
        entry = self._entry(image)
        h, w = recon.shape[-2:]
        shape = f"{h}x{w}"
        if shape not in entry["originals"]:
            stem = file_stem(image) if not entry["originals"] else file_stem(f"{image}@{shape}")
            entry["originals"][shape] = f"original/{stem}.png"
            write_png(self.root / entry["originals"][shape], original)
        rel = f"{file_stem(vae)}/{file_stem(image)}.png"
        write_png(self.root / rel, recon)
        saved = psnr(original[None].double(), recon[None].double()).item()
        entry["vaes"][vae] = {
            "original": entry["originals"][shape],
            "reconstruction": rel,
            self.metric: json_float(score),
            "psnr_saved": json_float(saved),  # of the saved 8-bit pixels
            "source": source,
        }
        entry["not_saved"].pop(vae, None)

    def _prune(self, reasons: dict[str, list[str]], vaes: list[str]) -> None:
        """Drop images no final pick needs, VAEs without results (failed), and any other PNG in the folder."""
        keep_vaes = set(vaes)
        for image in list(self.index["images"]):
            entry = self.index["images"][image]
            drop = [v for v in entry["vaes"] if image not in reasons or v not in keep_vaes]
            for v in drop:
                (self.root / entry["vaes"].pop(v)["reconstruction"]).unlink(missing_ok=True)
            used = {r["original"] for r in entry["vaes"].values()}
            for shape, rel in list(entry["originals"].items()):
                if rel not in used:
                    (self.root / rel).unlink(missing_ok=True)
                    del entry["originals"][shape]
            if image not in reasons:
                del self.index["images"][image]
        if not self.root.is_dir():
            return
        used = {self.root / r for e in self.index["images"].values() for r in e["originals"].values()}
        used |= {self.root / r["reconstruction"] for e in self.index["images"].values() for r in e["vaes"].values()}
        for png in self.root.rglob("*.png"):  # left by an earlier run into this folder
            if png not in used:
                png.unlink()
        for d in sorted((d for d in self.root.rglob("*") if d.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()

    def _write_index(self, reasons: dict[str, list[str]]) -> None:
        for image, why in reasons.items():
            if why:
                self._entry(image)["reasons"] = why
        index = {
            "format": FORMAT,
            "metric": self.metric,
            "higher_is_better": self.higher,
            "quantize": self.quantize,
            "settings": self.settings,
            "images": self.index["images"],
        }
        if not self.root.is_dir() and not self.index["images"]:
            return
        atomic_write_text(self.root / INDEX, json.dumps(index, indent=2, ensure_ascii=False) + "\n")
