"""``task=recon``: every image of the dataset encoded and decoded by each VAE, and scored.

Work is done batch by batch, batches fixed by position (:class:`evalvae.jobs.store.BatchPlan`).
Each finished batch of a VAE is a result chunk (its per-image rows and set-level features); each
encoded batch is a latent shard. A batch whose chunk exists is read, not recomputed, so a rerun,
or the same command started again after a kill, continues where the last one stopped and ends
with the same tables; a VAE whose encoder equals one seen before decodes the stored latents.
Under ``torchrun`` each process runs its share of the batches (:mod:`evalvae.jobs.shard`) and
rank 0 writes the results. See :mod:`evalvae.jobs.store` for what the keys hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from evalvae.config import instantiate
from evalvae.data import known_len, make_loader
from evalvae.data.loader import Batch, Group
from evalvae.device import host_copy, release_memory, resolve_device, tf32_available, to_channels_last
from evalvae.errors import ConfigError, Interrupted
from evalvae.io import cache_dir
from evalvae.jobs import autobatch
from evalvae.jobs import shard as dist
from evalvae.jobs.autobatch import Fit
from evalvae.jobs.failures import VAE_FAILURES, log_failures, unavailable_metrics
from evalvae.jobs.runtime import RunOutcome, StageTimes, loader_workers, progress_bar
from evalvae.jobs.store import (
    BatchPlan,
    encoder_identity,
    latent_key,
    originals_key,
    record_key,
    result_key,
    vae_identity,
)
from evalvae.jobs.task import Done, Task
from evalvae.jobs.vaes import load, selected_vaes
from evalvae.metrics import build_metrics, fact_columns, result_columns, split_metrics
from evalvae.metrics.base import INDEX, SetStates, features_identity, pair_identity, recorded
from evalvae.metrics.info import metric_entry
from evalvae.metrics.refstats import References
from evalvae.provenance import environment, software
from evalvae.recon.loop import reconstruct
from evalvae.recon.rate import Rate
from evalvae.recon.samples import Samples
from evalvae.recon.unmatched import UnmatchedLog
from evalvae.results import RunWriter, console_table
from evalvae.store import Store, digest
from evalvae.vae import VAEAdapter

log = logging.getLogger(__name__)
STAGES = ("data", "encode", "decode", "metrics", "features", "set_metrics")
IMAGE_HASHES = {
    "image_sha256": "sha256 of each original's 8-bit RGB pixels as scored (after decoding, the geometry and the crop "
    "to the VAE's factor), as H x W x 3 bytes, row-major",
    "file_sha256": "sha256 of each image file's bytes (null where the images are not files: a streamed dataset)",
}


@dataclass
class VAEPass:
    """One VAE's pass over this process's batches: its rows by batch, set-level states and counts."""

    name: str
    vae: VAEAdapter | None  # None: every batch is read, and the VAE not loaded
    facts: dict  # what vaes.json says of it (:meth:`VAEAdapter.describe` and its encoder's sha256)
    load_s: float
    times: StageTimes
    fakes: SetStates
    pending: SetStates  # the originals' states of the metrics whose reference statistics are not cached
    # the states of the originals this VAE has no finite reconstruction of (a missing file, a non-finite
    # output): taken out of the reference, so that it is scored against the originals of what it reconstructed
    dropped: SetStates
    multiple: int
    identity: dict | None = None  # what its results are keyed by (None: known to this process only)
    batches: list[tuple[int, list[dict], list]] = field(default_factory=list)  # (position, rows, skipped)
    latent_writes: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # encoded, not yet stored
    order: list[tuple[int, int]] = field(default_factory=list)  # (batch, group) of each update of ``fakes``
    orig_order: list[tuple[int, int]] = field(default_factory=list)  # ... and of ``pending``
    drop_order: list[tuple[int, int]] = field(default_factory=list)  # ... and of ``dropped``
    counts: dict[str, int] = field(
        default_factory=lambda: {"batches_cached": 0, "images_encoded": 0, "latents_cached": 0}
    )

    @property
    def rows(self) -> list[dict]:
        return [r for _, rows, _ in self.batches for r in rows]


class ReconTask(Task):
    """``task=recon``: the state one run shares across its VAEs (data, metrics, reference statistics,
    stores, results), then each VAE in turn."""

    name = "recon"
    stages = STAGES

    def __init__(self, cfg: DictConfig, out: Path):
        super().__init__(cfg, out)
        self.specs = selected_vaes(cfg)
        self.shard, self.device = dist.from_environment(resolve_device(cfg.device))
        if self.shard.active:
            self.out = Path(dist.broadcast(self.shard, str(self.out)))  # rank 0's run directory
        self.files = self.out if self.shard.main else self.out / ".ranks" / str(self.shard.rank)
        self.workers = loader_workers(cfg.workers, self.device)
        self.dataset = instantiate(cfg.dataset)
        self.quantize = bool(cfg.metrics.quantize)
        self.rate = Rate.from_config(cfg.metrics)  # bpp columns, metrics.latent_bits
        built = split_metrics(build_metrics(cfg.metrics))
        self.pair, self.sets, self.unavailable_sets = built.pair, built.sets, built.unavailable_sets
        for m in self.sets:
            m.extractor.to(self.device)
        root = cache_dir(cfg.cache_dir)
        self.refs = References(root, self.dataset)
        self.subsets: dict[str, dict[str, dict]] = {}  # extractor -> VAE -> {n, of}: a VAE scored on a subset
        cache = cfg.get("cache") or {}
        self.results = Store(root / "results" if cache.get("results", True) else self.out / "chunks")
        self.keep_latents = bool(cache.get("latents", True))
        self.latents = Store(root / "latents" if self.keep_latents else self.out / ".latents")
        self.fit: Fit | None = None  # batch_size=auto's measurement
        self.batch_size = self.resolve_batch_size()
        self.plan = BatchPlan(self.dataset, self.batch_size) if hasattr(self.dataset, "file_digests") else None
        # per_image.file_sha256: the files' sha256 the batch keys hold (none for a stream)
        self.file_hashes = (
            {rec.id: h for rec, h in zip(self.dataset.records, self.dataset.file_digests())} if self.plan else {}
        )
        self.cache = root  # also of the weight files' hashes (evalvae.checkpoints.file_sha256)
        # a VAE whose every batch is done is not loaded (its record, evalvae.jobs.store.record_key)
        self.remembers = bool(cache.get("results", True))
        if self.shard.active and self.plan is None:
            raise ConfigError(
                "dataset", cfg.dataset.get("name"), hint="torchrun sharding needs a dataset of files, not a stream"
            )
        self.encoders: dict[str, str] = {}  # encoder key -> the first VAE of the run with that encoder
        self.batches_done = 0  # over every VAE, for the line Ctrl-C prints
        self.scored_nothing: list[str] = []  # VAEs that ran and scored no image
        self.cropped_factors: set[int] = set()  # downsampling factors warned of (dataset.resolution not a multiple)
        columns = [c for m in [*self.pair, self.rate] for c in result_columns(m)]
        facts = [c for m in [*self.pair, self.rate] for c in fact_columns(m)]
        self.writer = RunWriter(self.files, columns, facts=facts)
        # why a metric is unavailable, or non-standard weights
        self.writer.notes = {c: m.note for m in self.pair if m.note for c in result_columns(m)}
        # images too small for a metric have NaN: summary.csv's n leaves them out and its note counts them
        # (an unavailable metric has no value for any image, and its note says why)
        self.writer.min_sides = {
            c: (m.min_side, m.size_note) for m in self.pair if m.min_side > 1 for c in result_columns(m)
        }
        self.writer.add_skipped(self.dataset.listing_skipped)
        self.unmatched = UnmatchedLog(self.files)  # images a VAE could not reconstruct (evalvae.vae.files)
        self.samples = Samples(cfg, self.out, self.pair, self.shard.main)  # the report's images, saved at the end

    def protocol(self) -> dict:
        metrics = {}
        for m in self.pair:
            entry = {**m.protocol(), **recorded(m, self.device)}
            metrics.update({i.name: metric_entry(i, entry) for i in m.infos if i.summarised})
        rate = self.rate.protocol()
        metrics.update({i.name: metric_entry(i, rate[i.name]) for i in self.rate.infos if i.name in rate})
        for m in self.sets:
            protocol = m.protocol()
            for info in m.infos:
                reference = self.refs.info.get(m.extractor.name)
                if reference is not None and self.subsets.get(m.extractor.name):
                    reference = {**reference, "subsets": self.subsets[m.extractor.name]}
                entry = {**protocol[info.name], **recorded(m, self.device), "reference": reference}
                metrics[info.name] = metric_entry(info, entry)
        for m in self.unavailable_sets:
            metrics.update({i.name: metric_entry(i, m.protocol()) for i in m.infos})
        pixels = "clamped and rounded to 8 bits" if self.quantize else "clamped to [0, 255], not rounded"
        named = self.cfg.get("protocol")
        return {
            "task": "recon",
            **({"named_protocol": dict(named)} if named else {}),
            "dataset": {**self.dataset.describe(), "n_evaluated": self.n_evaluated()},
            "pixels": f"8-bit originals vs reconstructions {pixels}",
            "image_hashes": {f"per_image.{k}": v for k, v in IMAGE_HASHES.items()},
            "quantize": self.quantize,
            "metrics": metrics,
            "software": software(),
            "environment": {
                **environment(self.device),
                "batch_size": self.batch_size,
                **({"batch_size_auto": dataclasses.asdict(self.fit)} if self.fit else {}),
            },
        }

    def resolve_batch_size(self) -> int:
        """``batch_size``, or for ``auto`` the largest batch that fits the device (:mod:`evalvae.jobs.autobatch`),
        measured on the first VAE: its work on two batches of synthetic images at the dataset's resolution (512
        for native sizes). A later VAE that needs more memory runs a batch in halves where it must."""
        cfg = self.cfg
        if cfg.batch_size != "auto":
            return int(cfg.batch_size)
        if not autobatch.measurable(self.device) or not self.specs:
            log.info("batch_size=auto: %d on %s (memory is measured on CUDA only)", autobatch.DEFAULT, self.device)
            return autobatch.DEFAULT
        name, spec = next(iter(self.specs.items()))
        vae = None
        try:
            vae = load(name, spec, device=self.device, cache_dir=cfg.cache_dir).vae
            if cfg.channels_last:
                to_channels_last(vae.module)
            side = getattr(self.dataset.geometry, "resolution", None) or 512
            side -= side % vae.downsample
            work = partial(self.probe, vae, side)
            fit = autobatch.auto_batch_size(work, self.device, most=known_len(self.dataset) or autobatch.MOST)
        except Exception as e:  # a VAE that cannot load or run fails in its own turn, with its reason
            log.warning(
                "batch_size=auto: measuring VAE '%s' failed (%s: %s); batch_size=%d",
                name,
                type(e).__name__,
                e,
                autobatch.DEFAULT,
            )
            return autobatch.DEFAULT
        finally:
            del vae
            release_memory(self.device)
        self.fit = fit
        log.info("%s, measured on VAE '%s' at %d×%d", fit.describe(), name, side, side)
        return fit.batch_size

    def probe(self, vae: VAEAdapter, side: int, n: int) -> None:
        """One batch's work for ``n`` synthetic images of ``side``×``side``: what a batch of the run holds at once."""
        images = torch.randint(
            0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(n)
        )
        batch = Batch([Group(list(range(n)), [f"probe-{i}" for i in range(n)], images, [False] * n)])
        for result in reconstruct(
            vae,
            [batch],
            self.pair,
            quantize=self.quantize,
            channels_last=bool(self.cfg.channels_last),
            keep_pixels=bool(self.sets),
            rate=self.rate,
        ):
            for images_ in [*result.reconstructions, *(s[0] for s in result.scope)]:
                for m in self.sets:
                    m.features_on_device(images_)
            result.rows  # noqa: B018  (waits for the batch)

    def scoring(self) -> dict:
        """What a VAE's per-image rows and features depend on besides the VAE and the images (result keys)."""
        return {
            "metrics": {m.key: pair_identity(m) for m in self.pair},
            "sets": {m.key: features_identity(m) for m in self.sets},
            "quantize": self.quantize,
            "rate": self.rate.protocol(),
            "channels_last": bool(self.cfg.channels_last),
            "seed": self.cfg.seed,
            "device": self.device.type,
            # TF32 (where the device has it) and compiled kernels round differently from eager IEEE float32
            **({"tf32": True} if self.cfg.get("precision") == "tf32" and tf32_available(self.device) else {}),
            **({"compile": str(self.cfg.compile_backend)} if self.cfg.get("compile") else {}),
        }

    def n_evaluated(self) -> int | None:
        counts = pd.Series([r["vae"] for r in self.writer.rows]).value_counts()
        return int(counts.max()) if len(counts) else None

    # -- one VAE ---------------------------------------------------------------------------------
    def check(self, name: str, vae) -> None:
        self.dataset.geometry.check_factor(vae.downsample, f"VAE '{name}'")

    def loaded_vae(self, name: str, spec) -> tuple[VAEAdapter, float, dict | None, dict]:
        """Load VAE ``name``: the VAE, the seconds it took, its identity after loading and its record."""
        loaded = self.load(name, spec)
        vae = loaded.vae
        identity = vae_identity(spec, self.cache, vae) if self.plan is not None else None
        facts = {**vae.describe(), "encoder_sha256": vae.encoder_hash}
        if identity is not None and self.remembers:
            try:  # a record only saves a load; never a reason to stop
                self.results.write(record_key(identity, spec, self.device), {}, {"vae": json.dumps(facts, default=str)})
            except OSError as e:
                log.warning("VAE '%s': its record was not stored (%s: %s)", name, type(e).__name__, e)
        return vae, loaded.load_s, identity, json.loads(json.dumps(facts, default=str))

    def recorded(self, name: str, spec) -> tuple[dict, dict] | None:
        """The identity and record of VAE ``name``, told without loading it, when every batch of this process
        has a result chunk; else None."""
        identity = vae_identity(spec, self.cache) if self.plan is not None and self.remembers else None
        got = self.results.read(record_key(identity, spec, self.device)) if identity is not None else None
        if got is None:
            return None
        scoring, mine = self.scoring(), self.shard.batches(len(self.plan))
        if not all(self.results.exists(result_key(identity, scoring, self.plan.keys[b])) for b in mine):
            return None
        log.info("VAE '%s': every batch is done (result chunks); it is not loaded", name)
        return identity, json.loads(got[1]["vae"])

    def evaluate(self, name: str, spec) -> VAEPass:
        """Run VAE ``name`` over this process's batches: stored chunks are read, the others computed and stored.
        The VAE is loaded only where a batch must be computed."""
        cfg = self.cfg
        vae, load_s, known = None, 0.0, self.recorded(name, spec)
        if known is not None:
            identity, facts = known
            self.dataset.geometry.check_factor(facts["downsample"], f"VAE '{name}'")
        else:
            vae, load_s, identity, facts = self.loaded_vae(name, spec)
        multiple = facts["downsample"]  # the references are the originals as this VAE sees them, cropped to its factor
        self.warn_cropped(name, multiple)
        wanted = [m.key for m in self.refs.missing(self.sets, multiple).metrics] if self.shard.main else None
        wanted = dist.broadcast(self.shard, wanted)
        p = VAEPass(
            name,
            vae,
            facts,
            load_s,
            StageTimes(self.device),
            SetStates(self.sets),
            SetStates([m for m in self.sets if m.key in wanted]),
            SetStates(self.sets),
            multiple,
            identity,
        )
        crop = self.refs.crop_multiple(multiple)
        mine = self.shard.batches(len(self.plan)) if self.plan is not None else None
        hits = {}
        if identity is not None:
            scoring = self.scoring()
            keys = {b: result_key(identity, scoring, self.plan.keys[b]) for b in mine}
            for b in mine:
                got = self.read_chunk(keys[b], p.pending, crop, self.plan.keys[b])
                if got is not None:
                    hits[b] = got
            if hits:
                log.info(
                    "VAE '%s': %d of %d batch(es) already done (result chunks); they are read, not recomputed",
                    name,
                    len(hits),
                    len(mine),
                )
        if vae is None and len(hits) < len(mine):
            log.info("VAE '%s': %d batch(es) to compute after all; loading it", name, len(mine) - len(hits))
            vae, load_s, identity, facts = self.loaded_vae(name, spec)
            if identity != p.identity:  # told otherwise before loading: what was read under it does not count
                hits, keys = {}, {b: result_key(identity, scoring, self.plan.keys[b]) for b in mine} if identity else {}
            p.vae, p.load_s, p.identity = vae, load_s, identity
        if vae is not None and cfg.channels_last:
            to_channels_last(vae.module)
        encode = self.latent_encoder(p, vae) if self.plan is not None and vae is not None else None
        if mine is None:
            loader, todo = make_loader(self.dataset, self.batch_size, self.workers, self.device), None
        else:
            todo = [b for b in mine if b not in hits]
            loader = (
                make_loader(
                    self.dataset,
                    self.batch_size,
                    self.workers,
                    self.device,
                    batches=[self.plan.positions[b] for b in todo],
                )
                if todo
                else []
            )
        computed = iter(
            reconstruct(
                vae,
                loader,
                self.pair,
                quantize=self.quantize,
                channels_last=cfg.channels_last,
                seed=cfg.seed,
                times=p.times,
                keep_pixels=bool(self.sets),
                encode=encode,
                rate=self.rate,
            )
        )
        total = sum(len(self.plan.positions[b]) for b in mine) if mine is not None else known_len(self.dataset)
        with progress_bar(cfg.progress if self.shard.main else False, total, name) as bar:

            def done(b, rows, skipped, fakes, originals, dropped) -> None:
                p.order += [(b, g) for g in range(len(fakes))]
                p.orig_order += [(b, g) for g in range(len(originals))]
                p.drop_order += [(b, g) for g in range(len(dropped))]
                self.add_batch(p, b, rows, skipped)
                self.batches_done += 1
                bar.update(len(rows) + len(skipped))

            def settle(b, result, fake_features, original_features, latents) -> None:
                rows, skipped = result.rows, result.skipped  # waits for the batch's copies to the host
                for key, z in latents:
                    self.latents.write(key, {"latents": z})
                fakes = self.fake_features(p, result, fake_features)
                originals, dropped = self.scope_features(p, result.scope, original_features)
                if identity is not None:
                    self.write_chunk(
                        keys[b], rows, skipped, fakes, originals, dropped, p.pending, crop, self.plan.keys[b]
                    )
                done(b, rows, skipped, fakes, originals, dropped)

            # One batch in flight: batch b's work is queued on the device and its values start for the host, then
            # batch b-1 is settled (rows, features, result chunk) while the device computes b.
            in_flight = None
            try:
                for b in mine if mine is not None else itertools.count():
                    if b in hits:
                        if in_flight:
                            item, in_flight = in_flight, None
                            settle(*item)
                        rows, skipped, fakes, originals, dropped = hits[b]
                        rows = [{**r, "vae": name} for r in rows]
                        p.counts["batches_cached"] += 1
                        for f in fakes:
                            p.fakes.add(f)
                        for f in originals:
                            p.pending.add(f)
                        for f in dropped:
                            p.dropped.add(f)
                        done(b, rows, skipped, fakes, originals, dropped)
                        continue
                    result = next(computed, None)
                    if result is None:
                        break  # a stream came to its end
                    b = b if mine is not None else len(p.batches) + (in_flight is not None)
                    with p.times.stage("features"):
                        fake_features = [p.fakes.extract(rec) for rec in result.reconstructions] if self.sets else []
                        original_features = (
                            [p.pending.extract(images) for images, _, _ in result.scope] if p.pending else []
                        )
                    latents = [(key, host_copy(z)) for key, z in p.latent_writes]  # before to_host's event
                    p.latent_writes = []
                    fake_features, original_features = result.to_host(fake_features, original_features)
                    if in_flight:
                        item, in_flight = in_flight, None
                        settle(*item)
                    in_flight = (b, result, fake_features, original_features, latents)
            except BaseException:
                # a batch computed before the failure (or Ctrl-C) is kept: its rows and chunk, as without the lag
                if in_flight:
                    with contextlib.suppress(Exception):
                        settle(*in_flight)
                raise
            if in_flight:
                item, in_flight = in_flight, None
                settle(*item)
        return p

    def fake_features(self, p: VAEPass, result, features: list[dict]) -> list[dict]:
        """Per group of a settled batch with a finite reconstruction, the features of its finite reconstructions
        (by metric key, their positions under ``INDEX``), added to ``p.fakes``."""
        out = []
        for feats, finite, index in zip(features, result.finite, result.indices):
            ok = finite.numpy().astype(bool)
            if not ok.any():
                continue
            f = {k: v.numpy()[ok] for k, v in feats.items()}
            f[INDEX] = np.asarray(index, np.int64)[ok]
            p.fakes.add(f)
            out.append(f)
        return out

    def scope_features(self, p: VAEPass, scope, features: list[dict]) -> tuple[list[dict], list[dict]]:
        """Per group of a settled batch's ``scope`` (:class:`~evalvae.recon.loop.BatchResult`): the features of all
        its originals (``features``, extracted where the references are computed), added to ``p.pending``, and of
        those without a finite reconstruction, added to ``p.dropped``."""
        originals, dropped = [], []
        if not self.sets:
            return originals, dropped
        for g, (images, index, scored) in enumerate(scope):
            f = {}
            if p.pending:
                f = {k: v.numpy() for k, v in features[g].items()}
                f[INDEX] = np.asarray(index, np.int64)
                p.pending.add(f)
                originals.append(f)
            if all(scored):
                continue
            gone = [j for j, ok in enumerate(scored) if not ok]
            d = {INDEX: np.asarray(index, np.int64)[gone]}
            for m in self.sets:
                d[m.key] = f[m.key][gone] if m.key in f else m.features(images[gone])
            p.dropped.add(d)
            dropped.append(d)
        return originals, dropped

    def warn_cropped(self, name: str, factor: int) -> None:
        """Once per factor: a ``dataset.resolution`` that is not a multiple of a VAE's factor is scored smaller."""
        geometry = getattr(self.dataset, "geometry", None)
        if geometry is None or geometry.crop != "center" or not geometry.resolution % factor:
            return
        if factor in self.cropped_factors or not self.shard.main:
            return
        self.cropped_factors.add(factor)
        r, scored = geometry.resolution, geometry.resolution - geometry.resolution % factor
        log.warning(
            "dataset.resolution=%d is not a multiple of VAE '%s''s downsampling factor %d: its images are scored "
            "at %d×%d (the %d×%d crop, centre-cropped to a multiple of %d); dataset.resolution=%d scores them whole",
            r,
            name,
            factor,
            scored,
            scored,
            r,
            r,
            factor,
            scored,
        )

    def add_batch(self, p: VAEPass, b: int, rows: list[dict], skipped: list) -> None:
        rows = [{**r, "file_sha256": self.file_hashes.get(r["image"])} for r in rows]
        p.batches.append((b, rows, skipped))
        self.writer.add_rows(rows)
        self.writer.add_skipped(skipped)

    def read_chunk(self, key: str, pending: SetStates, crop, batch: str):
        """A finished batch: its rows, skipped files, features per group, (if the references are being computed)
        the originals' features per group and those of the originals the VAE has no finite reconstruction of;
        None if any part is missing or damaged."""
        got = self.results.read(key)
        if got is None:
            return None
        tensors, meta = got
        fakes, dropped = _groups(tensors, "fake"), _groups(tensors, "drop")
        originals: list[dict] = []  # per group, {metric key: features, INDEX: dataset positions}
        for m in pending.metrics:
            o = self.results.read(originals_key(features_identity(m), crop, batch))
            if o is None:
                return None
            for g, f in enumerate(_groups(o[0], "orig")):
                if g == len(originals):
                    originals.append({})
                originals[g].update(f)
        if any(getattr(m, "keeps_features", False) for m in self.sets) and any(
            INDEX not in f for f in [*fakes, *originals]
        ):
            return None  # kept features without their images' positions (an older chunk): redone, so KID can pair
        rows, skipped = json.loads(meta["rows"]), [tuple(s) for s in json.loads(meta["skipped"])]
        return rows, skipped, fakes, originals, dropped

    def write_chunk(self, key, rows, skipped, fakes, originals, dropped, pending: SetStates, crop, batch: str) -> None:
        tensors = {
            f"{kind}/{g}/{k}": torch.from_numpy(np.ascontiguousarray(v))
            for kind, groups in (("fake", fakes), ("drop", dropped))
            for g, f in enumerate(groups)
            for k, v in f.items()
        }
        for m in pending.metrics:  # first, so that a chunk on disk always has its originals too
            o = {
                f"orig/{g}/{k}": torch.from_numpy(f[k])
                for g, f in enumerate(originals)
                for k in (m.key, INDEX)
                if k in f
            }
            self.results.write(originals_key(features_identity(m), crop, batch), o)
        self.results.write(key, tensors, {"rows": json.dumps(rows), "skipped": json.dumps([list(s) for s in skipped])})

    def latent_encoder(self, p: VAEPass, vae: VAEAdapter):
        """``encode(group, x)`` through the latent store: an encoder seen before (by its weights' hash) is not run again."""
        identity = encoder_identity(vae, device=self.device, channels_last=self.cfg.channels_last, seed=self.cfg.seed)
        if identity is None:
            return None
        ekey = digest(identity)
        first = self.encoders.setdefault(ekey, p.name)
        if first != p.name:
            log.info(
                "VAE '%s' has the same encoder as '%s' (encoder sha256 %s...): it decodes the stored latents",
                p.name,
                first,
                vae.encoder_hash[:12],
            )
        bs, seed = self.batch_size, self.cfg.seed

        def encode(group, x):
            key = latent_key(identity, self.plan.keys[group.indices[0] // bs], list(group.indices))
            got = self.latents.read(key)
            if got is not None and tuple(got[0]["latents"].shape[0:1]) == (len(group.ids),):
                p.counts["latents_cached"] += len(group.ids)
                z = got[0]["latents"]
                if vae.device.type == "cuda":  # a copy from pinned memory does not wait for the device's queue
                    z = z.pin_memory()
                return z.to(vae.device, non_blocking=True)
            z = vae.encode(x, seeds=[seed + i for i in group.indices])
            p.counts["images_encoded"] += len(group.ids)
            p.latent_writes.append((key, z))  # written once the batch is on the host (evaluate's settle)
            return z

        return encode

    def finish(self, p: VAEPass) -> Done | None:
        """Combine the processes' parts of ``p`` (rank 0 gathers), compute the set-level metrics, record the VAE."""
        name, writer = p.name, self.writer
        if self.shard.active:
            parts = dist.gather(self.shard, p.batches)
            for state, order in ((p.fakes, p.order), (p.pending, p.orig_order), (p.dropped, p.drop_order)):
                for m in state.metrics:
                    dist.combine_stats(self.shard, state[m], order)
            if not self.shard.main:
                return None
            writer.discard(name)
            p.batches = sorted((b for part in parts for b in part), key=lambda b: b[0])
            for _, rows, skipped in p.batches:
                writer.add_rows(rows)
                writer.add_skipped(skipped)
        n = len(p.rows)
        if n == 0:
            self.scored_nothing.append(name)
            log.error("evalvae: VAE '%s' scored no image (reasons in %s)", name, self.out / "skipped.csv")
        n_nonfinite = sum(bool(r["nonfinite"]) for r in p.rows)
        if n_nonfinite:
            log.warning(
                "VAE '%s' (%s): %d of %d reconstruction(s) held NaN or inf; they are excluded from every metric "
                "(per_image.nonfinite, summary.csv's note)",
                name,
                p.facts["dtype"],
                n_nonfinite,
                n,
            )
        if p.pending:
            self.refs.put_all(p.pending, p.multiple)
        for m in self.sets:
            with p.times.stage("set_metrics"):
                state = p.fakes[m]
                if state.n < 2:
                    reason = f"{state.n} finite reconstruction(s); a set-level metric needs at least 2"
                    rows = [
                        {"metric": i.name, "mean": math.nan, "std": math.nan, "n": state.n, "note": reason}
                        for i in m.infos
                    ]
                else:
                    rows = self.set_rows(p, m)
                writer.add_set_rows(name, rows)
        for m in self.unavailable_sets:
            writer.add_set_rows(name, m.nan_rows())
        self.unmatched.add(name, p.vae, p.batches, self.dataset)
        writer.add_vae({"status": "ok", **p.facts})
        return Done(p.facts["dtype"], n, p.load_s, p.times, p.counts)

    def set_rows(self, p: VAEPass, m) -> list[dict]:
        """``m``'s rows for VAE ``p``: its reconstructions against the originals of the same images.

        The reference holds every image of the dataset the VAE's factor can crop: those it reconstructed
        and those it has none (or no finite one) of. The latter are taken out of it for this VAE, and the
        note says over how many. A reference that holds other images (a damaged cache entry) gives no
        number, with the reason, rather than a wrong one.
        """
        real, gone, fake = self.refs.get(m, p.multiple), p.dropped[m], p.fakes[m]
        try:
            if real.n != fake.n + gone.n:
                raise ValueError(
                    f"it holds {real.n} originals, this VAE saw {fake.n + gone.n} ({fake.n} reconstructed, "
                    f"{gone.n} without a finite reconstruction)"
                )
            subset = real.without(gone) if gone.n else real
        except ValueError as e:
            path = (self.refs.info.get(m.extractor.name) or {}).get("path")
            reason = (
                f"the reference statistics do not cover the images this VAE saw: {e}; delete {path} to recompute them"
            )
            log.warning("VAE '%s': %s", p.name, reason)
            return [{"metric": i.name, "mean": math.nan, "std": math.nan, "n": fake.n, "note": reason} for i in m.infos]
        values = m.compute(subset, fake)
        rows = [{"metric": i.name, **values[i.name]} for i in m.infos]
        if gone.n:
            self.subsets.setdefault(m.extractor.name, {})[p.name] = {"n": fake.n, "of": real.n}
            for row, info in zip(rows, m.infos):
                said = f"{info.title} over {fake.n} of {real.n} images, against the originals of those {fake.n}"
                row["note"] = "; ".join(filter(None, [said, row.get("note", "")]))
        return rows

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        """Evaluate each VAE in ``cfg.vae`` on ``cfg.dataset``; write the result tables into the run directory.

        Ctrl-C raises :class:`~evalvae.errors.Interrupted` with the batches done: each finished batch is a
        result chunk, so the same command (or ``resume=DIR``) continues from there."""
        try:
            return self._run()
        except KeyboardInterrupt:
            total = len(self.plan) * len(self.specs) if self.plan is not None else None
            raise Interrupted(self.out, self.batches_done, total, resumable=True) from None

    def _run(self) -> RunOutcome:
        cfg, out, writer, main = self.cfg, self.out, self.writer, self.shard.main
        if main:
            OmegaConf.save(cfg, out / "config.yaml", resolve=True)
            writer.write_json("metrics.json", self.protocol())
            ds = self.dataset
            log.info(
                "dataset %s: %s images from %s, %s",
                ds.name,
                known_len(ds) or "streamed",
                ds.root,
                ds.geometry.describe().get("resolution", "native size"),
            )
        last = list(self.specs)[-1]

        def one(name: str, spec) -> Done | None:
            error = p = None
            try:
                p = self.evaluate(name, spec)
            except VAE_FAILURES as e:
                error = e
            errors = dist.all_gather(self.shard, None if error is None else f"{type(error).__name__}: {error}")
            if error is not None:
                raise error
            if any(errors):  # another process failed: this one's part is dropped too
                rank = next(i for i, e in enumerate(errors) if e)
                raise RuntimeError(f"process {rank} of {self.shard.world}: {errors[rank]}")
            done = self.finish(p)
            self.samples.scored(
                name, p.identity, self.scoring(), p.vae if name == last else None
            )  # the last stays loaded
            if main:
                writer.write_json("metrics.json", self.protocol())
            return done

        failed = self.each_vae(self.specs, one, writer if main else None)
        if not main:
            shutil.rmtree(self.files, ignore_errors=True)
            with contextlib.suppress(OSError):  # the last process out removes the folder
                self.files.parent.rmdir()
            return RunOutcome(out, pd.DataFrame(), failed, report=False)
        summary = writer.flush()
        self.samples.save(self)
        if not self.keep_latents:
            shutil.rmtree(self.out / ".latents", ignore_errors=True)
        log_failures(failed, len(self.specs))
        if writer.skipped:
            log.warning("skipped %d file(s); reasons in %s", len(writer.skipped), out / "skipped.csv")
        if not summary.empty:
            log.info("\n%s", console_table(summary))
            log.info("results in %s", out)
        missing = [f"VAE '{name}' scored no image" for name in self.scored_nothing]
        missing += unavailable_metrics([*self.pair, *self.unavailable_sets])
        return RunOutcome(out, summary, failed, report=bool(cfg.report), missing=missing)


def _groups(tensors: dict[str, torch.Tensor], prefix: str) -> list[dict]:
    """``{prefix}/{group}/{metric}`` tensors -> per group, ``{metric: float64 array}``."""
    out: dict[int, dict] = {}
    for name, t in tensors.items():
        kind, g, key = name.split("/", 2)
        if kind == prefix:
            out.setdefault(int(g), {})[key] = t.numpy()
    return [out[g] for g in sorted(out)]
