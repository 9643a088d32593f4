"""Samples: the few images the report's grids show, decoded once every VAE has scored, and saved.

``<run>/samples/`` holds lossless PNGs and an index, so ``evalvae report`` draws its grids from
files, with no weights and no dataset:

* ``original/<image>.png``: the 8-bit original as the VAE saw it (cropped to a multiple of its
  downsampling factor; an image scored at two sizes by VAEs of other factors has one file per size);
* ``<vae>/<image>.png``: that VAE's reconstruction, rounded to 8 bits (what set-level metrics and
  image files see; with ``metrics.quantize=true`` the pixels scored);
* ``index.json``: per image, why it was saved and, per VAE, its files, the recorded score, the PSNR
  of the saved pixels and the key it was saved under. File names are the id made safe plus a hash
  of it, so any id maps to a unique, portable name; the index maps ids to files.

Which images: :func:`evalvae.metrics.selection.pick_images` on ``per_image.parquet``'s first
per-image metric (PSNR under the default metrics), the rule the report selects with: the typical
image and each VAE's ``samples.worst`` worst and ``samples.best`` best images, each with every
VAE's reconstruction, so cross-VAE grids are complete.

How: after the result tables are written, one pass of :func:`evalvae.recon.loop.reconstruct` per
VAE over its picks, read again from the dataset (a stream is read again up to its last pick), with
the run's seeds, crop and rounding. Latents come from the latent cache where the run stored them,
else the picks are encoded again. The picks are decoded in batches of their own, so on some
backends a few pixels may differ by one level from those scored; ``psnr_saved`` is the saved
pixels' PSNR, and the report flags a picture more than 0.05 dB from the recorded one.

Cost: the last VAE is still loaded; every other VAE is loaded once more (seconds for an SD-size
VAE) and decodes at most ``1 + V * (worst + best)`` images. A sample whose key (the VAE's identity:
its weights' content, config and dtype; the scoring protocol; the original's sha256) equals the
one already in the folder (a run continued in its own directory) is kept, and a VAE whose samples
are all kept is not loaded. A rerun in a new directory loads each VAE for its samples, also when
every batch comes from the result chunks. Saving samples never costs results: a failure is logged,
and the report shows those images as not saved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from evalvae.data.datasets import IMAGE_EXTENSIONS
from evalvae.data.loader import collate
from evalvae.device import release_memory
from evalvae.errors import ConfigError
from evalvae.io import atomic_path, atomic_write_text
from evalvae.jobs.chunks import digest
from evalvae.jobs.failures import VAE_FAILURES
from evalvae.jobs.store import encoder_identity, latent_key
from evalvae.jobs.vaes import load
from evalvae.metrics.pixel import PSNR
from evalvae.metrics.selection import pick_images, score_table
from evalvae.recon.loop import reconstruct
from evalvae.results import read_per_image
from evalvae.vae import VAEAdapter

log = logging.getLogger(__name__)

FOLDER = "samples"
INDEX = "index.json"
FORMAT = 1
DEFAULTS = {"typical": True, "worst": 3, "best": 1}  # conf/run.yaml's samples, for a config without it
SAVE_FAILURES = (*VAE_FAILURES, OSError, ValueError)


def settings(node: Mapping | None) -> dict:
    """``cfg.samples`` checked: ``typical`` (bool), ``worst`` and ``best`` (counts per VAE, 0 for none)."""
    out = dict(DEFAULTS)
    for key, value in dict(node or {}).items():
        if key not in DEFAULTS:
            raise ConfigError(f"samples.{key}", value, list(DEFAULTS))
        if not (isinstance(value, bool) if key == "typical" else (type(value) is int and value >= 0)):
            hint = "true or false" if key == "typical" else "a count of images per VAE (0 for none)"
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


def picks(per_image: pd.DataFrame, metric: str, higher: bool, chosen: Mapping) -> dict[str, list[str]]:
    """Image -> why it is saved: the typical image, then per VAE (in ``per_image`` order) its worst and best."""
    label, out = metric.upper(), {}
    vaes = list(dict.fromkeys(per_image["vae"]))
    table = score_table(per_image, metric)
    for p in pick_images(
        table, higher, typical=chosen["typical"], worst=chosen["worst"], best=chosen["best"], entries=vaes
    ):
        why = f"typical: median mean {label}" if p.kind == "typical" else f"{p.kind} {label} #{p.rank} for {p.entry}"
        out.setdefault(p.image, []).append(why)
    return out


def read_images(dataset, images: list[str]) -> tuple[list, dict[str, str]]:
    """The dataset's samples of ``images`` in dataset order, and why each other one cannot be read."""
    wanted, found = set(images), {}
    records = getattr(dataset, "records", None)
    if records is not None:  # files: read by position
        found = {rec.id: dataset[i] for i, rec in enumerate(records) if rec.id in wanted}
    else:  # a stream: read again up to the last pick
        for sample in dataset:
            if sample.id in wanted:
                found[sample.id] = sample
            if len(found) == len(wanted):
                break
    missing = {i: "not in the dataset any more" for i in images if i not in found}
    missing.update({i: s.reason for i, s in found.items() if s.image is None})
    return sorted((s for s in found.values() if s.image is not None), key=lambda s: s.index), missing


class Samples:
    """One recon run's samples (see the module docstring). The task calls :meth:`scored` for each VAE that
    scored, then :meth:`save` once the result tables are written; ``main`` is False in a process that
    writes no results (torchrun ranks above 0)."""

    def __init__(self, cfg, out: str | Path, metrics: list, main: bool = True):
        self.settings = s = settings(cfg.get("samples"))
        self.root = Path(out) / FOLDER
        self.quantize = bool(cfg.metrics.get("quantize", True))
        first = metrics[0] if metrics else None
        self.metric = first.name if first is not None else None
        self.higher = bool(getattr(first, "higher_is_better", True))
        self.enabled = main and self.metric is not None and (s["typical"] or s["worst"] > 0 or s["best"] > 0)
        self.keys: dict[str, str | None] = {}  # VAE -> digest of its identity and the scoring protocol
        self.held: tuple[str, VAEAdapter] | None = None  # the run's last VAE, still loaded
        self.images: dict[str, dict] = {}  # index.json's "images"
        self.done: dict[str, Counter] = {}  # VAE -> its samples by source (kept, latents, encoded)

    def scored(self, name: str, identity: dict | None, scoring: dict, vae: VAEAdapter | None = None) -> None:
        """VAE ``name`` scored: its ``identity`` (None: known to this process only) under the ``scoring``
        protocol keys its samples; ``vae``, if given, stays loaded for :meth:`save`."""
        if self.enabled:
            self.keys[name] = digest({"vae": identity, "scoring": scoring}) if identity is not None else None
            self.held = (name, vae) if vae is not None else None

    def save(self, task) -> None:
        """Pick from ``per_image.parquet``; keep the samples saved under the same key, decode the others (one
        pass per VAE), drop every other file and write ``samples/index.json``. ``task`` is the
        :class:`~evalvae.recon.task.ReconTask` that scored (its dataset, latent store, VAE specs, protocol)."""
        if not self.enabled:
            return
        start = time.perf_counter()
        try:
            self._save(task)
        except SAVE_FAILURES as e:
            log.warning("samples not saved: %s: %s", type(e).__name__, e)
        finally:
            self.held = None
        how = "; ".join(f"{v} " + ", ".join(f"{n} {k}" for k, n in c.items()) for v, c in self.done.items())
        n, seconds = len(self.images), time.perf_counter() - start
        log.info("samples: %d image(s) in %s for the report's grids (%.2f s; %s)", n, self.root, seconds, how)

    def _save(self, task) -> None:
        per_image = read_per_image(self.root.parent)
        if per_image is None or per_image.empty or self.metric not in per_image:
            return
        per_image = per_image.astype({"image": str})
        reasons = picks(per_image, self.metric, self.higher, self.settings)
        try:
            old = json.loads((self.root / INDEX).read_text(encoding="utf-8"))["images"]
        except (OSError, ValueError, KeyError, TypeError):
            old = {}
        self.images = {i: {"reasons": why, "originals": {}, "vaes": {}, "not_saved": {}} for i, why in reasons.items()}
        todo = {}
        for name, rows in per_image.groupby("vae", sort=False):
            rows, key = rows.set_index("image"), self.keys.get(name)
            keys = {i: key and digest([key, rows.at[i, "image_sha256"]]) for i in reasons if i in rows.index}
            todo[name] = [i for i in keys if not self._keep(i, old.get(i), name, keys[i], rows.at[i, self.metric])]
            self.done[name] = Counter({"kept": len(keys) - len(todo[name])} if len(todo[name]) < len(keys) else {})
            todo[name] = rows, todo[name], keys
        loaded = self.held[0] if self.held is not None else None
        for name in sorted(todo, key=lambda v: v != loaded):  # the VAE still loaded first
            if todo[name][1]:
                self._decode(task, name, *todo[name])
            self.held = None  # released before another VAE is loaded
        self._prune()
        if self.root.is_dir() or self.images:
            index = {"format": FORMAT, "metric": self.metric, "higher_is_better": self.higher}
            index.update(quantize=self.quantize, settings=self.settings, images=self.images)
            atomic_write_text(self.root / INDEX, json.dumps(index, indent=2, ensure_ascii=False) + "\n")

    def _keep(self, image: str, entry: dict | None, name: str, key: str | None, score: float) -> bool:
        """Keep VAE ``name``'s sample of ``image`` when the folder's index ``entry`` holds it under ``key``."""
        saved = ((entry or {}).get("vaes") or {}).get(name)
        if key is None or not isinstance(saved, dict) or saved.get("key") != key:
            return False
        files = [saved.get(k) for k in ("original", "reconstruction")]
        shape = next((s for s, rel in (entry.get("originals") or {}).items() if rel == files[0]), None)
        if shape is None or not all(isinstance(f, str) and (self.root / f).is_file() for f in files):
            return False
        self.images[image]["originals"].setdefault(shape, files[0])
        self.images[image]["vaes"][name] = {**saved, self.metric: json_float(score)}
        return True

    def _decode(self, task, name: str, rows: pd.DataFrame, images: list[str], keys: dict) -> None:
        """VAE ``name``'s ``images`` decoded in one pass (by the VAE still loaded, else loaded again) and saved."""
        cfg, how, missing = task.cfg, {}, {}
        vae, self.held = (self.held[1] if self.held is not None and self.held[0] == name else None), None
        try:
            if vae is None:
                if name not in task.specs:
                    raise ValueError("its spec is not in this run's config")
                vae = load(name, task.specs[name], device=task.device, cache_dir=cfg.cache_dir).vae
                if cfg.channels_last:
                    vae.module.to(memory_format=torch.channels_last)
            samples, missing = read_images(task.dataset, images)
            size = int(cfg.batch_size)
            for result in reconstruct(
                vae,
                [collate(samples[i : i + size]) for i in range(0, len(samples), size)],
                [],
                quantize=self.quantize,
                channels_last=bool(cfg.channels_last),
                seed=int(cfg.seed),
                keep_pixels=True,
                encode=self._latents(task, vae, rows, how),
                rate=task.rate,  # latent_bits as scored
            ):
                missing.update(result.skipped)
                ids = iter([row["image"] for row in result.rows])
                for original, recon in zip(result.originals, result.reconstructions):
                    for o, r in zip(original.cpu(), recon.cpu()):
                        image = next(ids)
                        self._write(name, image, o, r, rows.at[image, self.metric], keys[image], how[image])
                        self.done[name][how[image]] += 1
        except SAVE_FAILURES as e:
            missing.update(dict.fromkeys(images, f"{type(e).__name__}: {e}"))
        finally:
            del vae
            release_memory(task.device)
        lost = [i for i in images if name not in self.images[i]["vaes"]]
        for image in lost:
            self.images[image]["not_saved"][name] = missing.get(image, "not decoded")
        if lost:
            log.warning("samples: %d image(s) of VAE '%s' not saved: %s", len(lost), name, missing.get(lost[0]))

    def _latents(self, task, vae: VAEAdapter, rows: pd.DataFrame, how: dict):
        """``encode(group, x)`` for :func:`reconstruct`: each image's latents read from the shard of the group the run
        encoded it in (the images of its batch this VAE scored at its size), else the group encoded again."""
        plan, cfg = task.plan, task.cfg
        channels_last, seed = bool(cfg.channels_last), int(cfg.seed)
        identity = encoder_identity(vae, device=task.device, channels_last=channels_last, seed=seed) if plan else None
        where = {rec.id: i for i, rec in enumerate(task.dataset.records)} if identity else {}
        size = {where[i]: (h, w) for i, h, w in zip(rows.index, rows["height"], rows["width"]) if i in where}

        def cached(i: int) -> torch.Tensor | None:
            b = i // plan.batch_size
            group = [j for j in plan.positions[b] if size.get(j) == size.get(i)]
            got = task.latents.read(latent_key(identity, plan.keys[b], group))
            return got[0]["latents"][group.index(i)] if got and len(got[0]["latents"]) == len(group) else None

        def encode(group, x):
            z = [cached(i) for i in group.indices] if identity else [None]
            if all(t is not None for t in z):
                how.update(dict.fromkeys(group.ids, "from the cached latents"))
                return torch.stack(z).to(vae.device)
            how.update(dict.fromkeys(group.ids, "encoded"))
            return vae.encode(x, seeds=[seed + i for i in group.indices])

        return encode

    def _write(self, vae: str, image: str, original: torch.Tensor, recon: torch.Tensor, score, key, source: str):
        entry, shape = self.images[image], "{}x{}".format(*recon.shape[-2:])
        if shape not in entry["originals"]:
            stem = file_stem(image) if not entry["originals"] else file_stem(f"{image}@{shape}")
            entry["originals"][shape] = f"original/{stem}.png"
            write_png(self.root / entry["originals"][shape], original)
        rel = f"{file_stem(vae)}/{file_stem(image)}.png"
        write_png(self.root / rel, recon)
        saved = PSNR()(original[None].double(), recon[None].double()).item()
        entry["vaes"][vae] = {
            "original": entry["originals"][shape],
            "reconstruction": rel,
            self.metric: json_float(score),
            "psnr_saved": json_float(saved),  # of the saved 8-bit pixels
            "source": source,
            "key": key,
        }

    def _prune(self) -> None:
        """Remove every file of the folder that the index does not name (an earlier run's, a VAE's that failed)."""
        if not self.root.is_dir():
            return
        used = {self.root / rel for e in self.images.values() for rel in e["originals"].values()}
        used |= {self.root / s["reconstruction"] for e in self.images.values() for s in e["vaes"].values()}
        for png in self.root.rglob("*.png"):
            if png not in used:
                png.unlink()
        for d in sorted((d for d in self.root.rglob("*") if d.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
