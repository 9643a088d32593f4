"""Samples: the few images the report's grids show, decoded once every VAE has scored, and saved.

``<run>/samples/`` holds lossless PNGs and an index, so ``evalvae report`` draws its grids from files,
with no weights and no dataset: ``original/<image>.png``, the 8-bit original as the VAE saw it (cropped
to a multiple of its factor; one file per size where VAEs of other factors saw other sizes);
``<vae>/<image>.png``, its reconstruction rounded to 8 bits (with ``metrics.quantize=true`` the pixels
scored); ``index.json``: per image, why it was saved and, per VAE, its files, the recorded score, the
PSNR of the saved pixels, how they were made and their key. File names are the id made safe plus a
hash of it; the index maps ids to files.

Which images: :func:`evalvae.metrics.selection.pick_images` on ``per_image.parquet``'s first metric
(PSNR by default), the rule the report selects with: the typical image and each VAE's
``samples.worst`` worst and ``samples.best`` best, each with every VAE's reconstruction. How: one
pass of :func:`evalvae.recon.loop.reconstruct` per VAE over its picks, read again from the dataset
(a stream up to its last pick), with the run's seeds, crop and rounding, from the latents the run
cached (else encoded again). Decoded in batches of their own, a few pixels may differ by a level
from those scored on some backends; the report flags a picture more than 0.05 dB from the recorded PSNR.

Cost: the last VAE is still loaded; each other one is loaded again and decodes at most
``1 + V * (worst + best)`` images. A sample already in the folder under the same key (the VAE's
identity, the scoring protocol, the original's sha256: a run continued in its own directory) is
kept, and a VAE whose samples are all kept is not loaded; a rerun in a new directory loads each VAE.
A failure costs no result: it is logged, and the report shows those images as not saved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from evalvae.data.loader import collate
from evalvae.device import release_memory, tf32_available, to_channels_last
from evalvae.io import atomic_path, atomic_write_text, json_ready
from evalvae.jobs.failures import VAE_FAILURES
from evalvae.jobs.store import encoder_identity, latent_key
from evalvae.jobs.vaes import load
from evalvae.metrics.pixel import psnr
from evalvae.metrics.selection import pick_images, score_table
from evalvae.recon.loop import reconstruct
from evalvae.results import read_per_image
from evalvae.store import digest
from evalvae.vae import VAEAdapter
from evalvae.vocab import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

FOLDER = "samples"
INDEX = "index.json"
FORMAT = 1
DEFAULTS = {"typical": True, "worst": 3, "best": 1}  # conf/run.yaml's samples, for a config without it
SAVE_FAILURES = (*VAE_FAILURES, OSError, ValueError)


def settings(node: Mapping | None) -> dict:
    """``cfg.samples`` (checked by the schema at the entry) over :data:`DEFAULTS`: ``typical``, ``worst``, ``best``."""
    return {**DEFAULTS, **dict(node or {})}


def file_stem(name: str) -> str:
    """A portable file name for any id: its safe characters (image extension dropped) and a hash of it."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:60]
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}" if slug else digest


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
    """One recon run's samples. The task calls :meth:`scored` for each VAE that scored, then :meth:`save`
    once the result tables are written; ``main`` is False in a process that writes none (torchrun ranks > 0)."""

    def __init__(self, cfg, out: str | Path, metrics: list, main: bool = True):
        self.settings = s = settings(cfg.get("samples"))
        self.root, self.quantize = Path(out) / FOLDER, bool(cfg.metrics.get("quantize", True))
        first = metrics[0].infos[0] if metrics else None  # the first per-image metric's first result
        self.metric = first.name if first is not None else None
        self.higher = bool(first.higher_is_better) if first is not None else True
        self.enabled = main and self.metric is not None and (s["typical"] or s["worst"] > 0 or s["best"] > 0)
        self.keys: dict[str, str | None] = {}  # VAE -> digest of its identity and the scoring protocol
        self.held: tuple[str, VAEAdapter] | None = None  # the run's last VAE, still loaded
        self.images: dict[str, dict] = {}  # index.json's "images"
        self.done: dict[str, Counter] = {}  # VAE -> how many samples were kept, read from latents, encoded

    def scored(self, name: str, identity: dict | None, scoring: dict, vae: VAEAdapter | None = None) -> None:
        """VAE ``name`` scored; its ``identity`` (None: known to this process only) and the ``scoring`` protocol
        key its samples; ``vae``, if given, stays loaded for :meth:`save`."""
        if self.enabled:
            self.keys[name] = digest({"vae": identity, "scoring": scoring}) if identity is not None else None
            self.held = (name, vae) if vae is not None else None

    def save(self, task) -> None:
        """Pick, keep what the folder holds under the same keys, decode the rest (one pass per VAE), remove the
        other files and write the index. ``task``: the :class:`~evalvae.recon.task.ReconTask` that scored."""
        if not self.enabled:
            return
        start = time.perf_counter()
        try:
            self._save(task)
        except SAVE_FAILURES as e:
            log.warning("samples not saved: %s: %s", type(e).__name__, e)
        finally:
            self.held = None
        how = "; ".join(f"{v} " + ", ".join(f"{n} {k}" for k, n in c.items() if n) for v, c in self.done.items())
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
        held = self.held[0] if self.held is not None else None
        for name, rows in sorted(per_image.groupby("vae", sort=False), key=lambda g: g[0] != held):  # held first
            rows, key, self.done[name] = rows.set_index("image"), self.keys.get(name), Counter()
            keys = {i: key and digest([key, rows.at[i, "image_sha256"]]) for i in reasons if i in rows.index}
            todo = [i for i in keys if not self._keep(i, old.get(i), name, keys[i], rows.at[i, self.metric])]
            self.done[name]["kept"] = len(keys) - len(todo)
            if todo:
                self._decode(task, name, rows, todo, keys)
            self.held = None  # released before another VAE is loaded
        self._prune()
        if not self.images and not self.root.is_dir():
            return
        index = {"format": FORMAT, "metric": self.metric, "higher_is_better": self.higher, "quantize": self.quantize}
        atomic_write_text(
            self.root / INDEX,
            json.dumps({**index, "settings": self.settings, "images": self.images}, indent=2, ensure_ascii=False)
            + "\n",
        )

    def _keep(self, image: str, entry, name: str, key: str | None, score: float) -> bool:
        """Keep VAE ``name``'s sample of ``image`` where the folder's index ``entry`` holds it under ``key``."""
        try:
            saved = entry["vaes"][name]
            files = [saved["original"], saved["reconstruction"]]
            shape = next(s for s, rel in entry["originals"].items() if rel == files[0])
            if key is None or saved["key"] != key or not all((self.root / f).is_file() for f in files):
                return False
        except (KeyError, TypeError, AttributeError, StopIteration):  # not there, or from another version
            return False
        self.images[image]["originals"].setdefault(shape, files[0])
        self.images[image]["vaes"][name] = {**saved, self.metric: json_ready(float(score))}
        return True

    def _decode(self, task, name: str, rows: pd.DataFrame, images: list[str], keys: dict) -> None:
        """VAE ``name``'s ``images``, decoded in one pass by the VAE still loaded (else loaded again), saved."""
        cfg, how, missing = task.cfg, {}, {}
        vae, self.held = (self.held[1] if self.held is not None and self.held[0] == name else None), None
        try:
            if vae is None:
                vae = load(name, task.specs[name], device=task.device, cache_dir=cfg.cache_dir).vae
                vae.tf32 = cfg.get("precision") == "tf32" and tf32_available(task.device)  # as it was scored
                if cfg.channels_last:
                    to_channels_last(vae.module)
            samples, missing = read_images(task.dataset, images)
            size = int(task.batch_size)
            batches = [collate(samples[i : i + size]) for i in range(0, len(samples), size)]
            encode = self._latents(task, vae, rows, how)
            kwargs = {"channels_last": bool(cfg.channels_last), "seed": int(cfg.seed), "rate": task.rate}
            for result in reconstruct(
                vae, batches, [], quantize=self.quantize, keep_pixels=True, encode=encode, **kwargs
            ):
                missing.update(result.skipped)
                ids = iter([row["image"] for row in result.rows])
                for originals, recons in zip(result.originals, result.reconstructions):
                    for original, recon in zip(originals.cpu(), recons.cpu()):
                        image = next(ids)
                        self._write(name, image, original, recon, rows.at[image, self.metric], keys[image], how[image])
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
        """``encode(group, x)`` for :func:`reconstruct`: each image's latents from the shard of the group the run
        encoded it in (the images of its batch this VAE scored at its size), else the group encoded again."""
        plan, channels_last, seed = task.plan, bool(task.cfg.channels_last), int(task.cfg.seed)
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
        if shape not in entry["originals"]:  # a second size of an image: a second file
            entry["originals"][shape] = f"original/{file_stem(f'{image}@{shape}' if entry['originals'] else image)}.png"
            write_png(self.root / entry["originals"][shape], original)
        rel = f"{file_stem(vae)}/{file_stem(image)}.png"
        write_png(self.root / rel, recon)
        saved = psnr(original[None].double(), recon[None].double()).item()  # of the saved 8-bit pixels
        entry["vaes"][vae] = {
            "original": entry["originals"][shape],
            "reconstruction": rel,
            self.metric: json_ready(float(score)),
        }
        entry["vaes"][vae].update(psnr_saved=json_ready(saved), source=source, key=key)

    def _prune(self) -> None:
        """Remove every file of the folder the index does not name (an earlier run's, a failed VAE's)."""
        used = {self.root / rel for e in self.images.values() for rel in e["originals"].values()}
        used |= {self.root / s["reconstruction"] for e in self.images.values() for s in e["vaes"].values()}
        for png in (p for p in self.root.rglob("*.png") if p not in used):
            png.unlink()
        for d in sorted((d for d in self.root.rglob("*") if d.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
