"""``task=recon``: every image of the dataset encoded and decoded by each VAE, and scored."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from evalvae.config import instantiate
from evalvae.data import ImageDataset, make_loader
from evalvae.device import resolve_device
from evalvae.errors import check_positive_int
from evalvae.io import cache_dir
from evalvae.jobs.failures import VAE_FAILURES, log_failures, record_failure, record_load_failure
from evalvae.jobs.runtime import RunOutcome, StageTimes, loader_workers, progress_bar, timing_row
from evalvae.jobs.task import Task
from evalvae.jobs.vaes import each_loaded, selected_vaes
from evalvae.metrics import build_metrics, split_metrics
from evalvae.metrics.info import info_of, metric_entry
from evalvae.metrics.refstats import References, ReferenceStore
from evalvae.recon.loop import reconstruct
from evalvae.recon.samples import SampleKeeper
from evalvae.results import RunWriter, console_table
from evalvae.vae import VAEAdapter

log = logging.getLogger(__name__)


class ReconTask(Task):
    """``task=recon``: the state one run shares across its VAEs (data, metrics, reference statistics,
    results), then each VAE in turn."""

    name = "recon"

    def __init__(self, cfg: DictConfig, out: Path):
        super().__init__(cfg, out)
        self.specs = selected_vaes(cfg)
        self.device = resolve_device(cfg.device)
        check_positive_int("batch_size", cfg.batch_size)
        self.workers = loader_workers(cfg.workers)
        self.dataset: ImageDataset = instantiate(cfg.dataset)
        self.quantize = bool(cfg.metrics.quantize)
        built = split_metrics(build_metrics(cfg.metrics))
        self.pair, self.sets, self.unavailable_sets = built.pair, built.sets, built.unavailable_sets
        for m in self.sets:
            m.extractor.to(self.device)
        self.refs = References(ReferenceStore(cache_dir(cfg.cache_dir)), self.dataset)
        self.writer = RunWriter(out, [m.name for m in self.pair])
        self.writer.notes = {m.name: m.note for m in self.pair if m.note}  # unavailable, or non-standard weights
        self.writer.add_skipped(self.dataset.listing_skipped)
        self.samples = SampleKeeper(cfg, out, self.dataset, self.pair)

    def protocol(self) -> dict:
        metrics = {}
        for m in self.pair:
            metrics[m.name] = metric_entry(info_of(m), m.protocol())
        for m in self.sets:
            for name, proto in m.protocol().items():
                reference = self.refs.info.get(m.extractor.name)
                metrics[name] = metric_entry(info_of(m, name), {**proto, "reference": reference})
        for m in self.unavailable_sets:
            metrics.update({name: metric_entry(info_of(m, name), m.protocol()) for name in m.names})
        pixels = "clamped and rounded to 8 bits" if self.quantize else "clamped to [0, 255], not rounded"
        return {
            "task": "recon",
            "dataset": {**self.dataset.describe(), "n_evaluated": self.n_evaluated()},
            "pixels": f"8-bit originals vs reconstructions {pixels}",
            "quantize": self.quantize,
            "metrics": metrics,
        }

    def n_evaluated(self) -> int | None:
        counts = pd.Series([r["vae"] for r in self.writer.rows]).value_counts()
        return int(counts.max()) if len(counts) else None

    def evaluate(self, name: str, vae: VAEAdapter, load_s: float) -> None:
        """Score ``vae`` (its loading took ``load_s``) and add its rows to the writer."""
        start = time.perf_counter() - load_s
        cfg, writer = self.cfg, self.writer
        if cfg.channels_last:
            vae.module.to(memory_format=torch.channels_last)
        times = StageTimes(self.device)
        fakes = {id(m): m.new_stats() for m in self.sets}
        multiple = vae.downsample  # the references are the originals as this VAE sees them, cropped to its factor
        pending = self.refs.missing(self.sets, multiple)
        n = n_nonfinite = 0
        loader = make_loader(self.dataset, cfg.batch_size, self.workers, self.device)
        batches = reconstruct(
            vae,
            loader,
            self.pair,
            quantize=self.quantize,
            channels_last=cfg.channels_last,
            seed=cfg.seed,
            times=times,
            keep_pixels=bool(self.sets) or self.samples.keeps_pixels,
        )
        with progress_bar(cfg.progress, len(self.dataset), name) as bar:
            for result in batches:
                self.samples.observe(name, result)
                if self.sets:
                    with times.stage("features"):
                        for m in self.sets:
                            for rec in result.finite_reconstructions():
                                if len(rec):
                                    fakes[id(m)].update(m.features(rec))
                            if id(m) in pending:
                                for orig in result.originals:
                                    pending[id(m)].update(m.features(orig))
                writer.add_rows(result.rows)
                writer.add_skipped(result.skipped)
                n += len(result.rows)
                n_nonfinite += result.n_nonfinite
                bar.update(len(result.rows) + len(result.skipped))
        if n_nonfinite:
            log.warning(
                "VAE '%s' (%s): %d of %d reconstruction(s) held NaN or inf; they are excluded from every metric "
                "(per_image.nonfinite, summary.csv's note)",
                name,
                vae.dtype_name,
                n_nonfinite,
                n,
            )
        for m in self.sets:
            if id(m) in pending:
                self.refs.put(m, pending[id(m)], multiple)
            with times.stage("set_metrics"):
                if fakes[id(m)].n < 2:
                    reason = f"{fakes[id(m)].n} finite reconstruction(s); a set-level metric needs at least 2"
                    writer.add_set_rows(
                        name,
                        [
                            {"metric": k, "mean": math.nan, "std": math.nan, "n": fakes[id(m)].n, "note": reason}
                            for k in m.names
                        ],
                    )
                else:
                    writer.add_set_rows(name, m.compute(self.refs.get(m, multiple), fakes[id(m)]))
        for m in self.unavailable_sets:
            writer.add_set_rows(name, m.nan_rows())
        stages = ("data", "encode", "decode", "metrics", "features", "set_metrics")
        total = time.perf_counter() - start
        writer.add_timing(timing_row(name, vae, self.device, cfg.batch_size, n, load_s, times, stages, total))
        writer.add_vae({"status": "ok", **vae.describe(), "encoder_sha256": vae.encoder_hash})
        self.samples.finish_vae(name, vae, [r for r in writer.rows if r["vae"] == name])

    def run(self) -> RunOutcome:
        """Evaluate each VAE in ``cfg.vae`` on ``cfg.dataset``; write the result tables into the run directory."""
        cfg, out, writer = self.cfg, self.out, self.writer
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
        writer.write_json("metrics.json", self.protocol())
        ds = self.dataset
        log.info(
            "dataset %s: %d images from %s, %s",
            ds.name,
            len(ds),
            ds.root,
            ds.geometry.describe().get("resolution", "native size"),
        )
        failed: dict[str, str] = {}

        def load_failed(name, e):
            failed[name] = record_load_failure(writer, name, e)

        for loaded in each_loaded(self.specs, device=self.device, cache_dir=cfg.cache_dir, on_failure=load_failed):
            try:
                self.evaluate(loaded.name, loaded.vae, loaded.load_s)
            except VAE_FAILURES as e:
                failed[loaded.name] = record_failure(writer, loaded.name, e, loaded.vae)
            writer.flush()
            writer.write_json("metrics.json", self.protocol())

        summary = writer.flush()
        self.samples.finish_run()
        log_failures(failed, len(self.specs))
        if writer.skipped:
            log.warning("skipped %d file(s); reasons in %s", len(writer.skipped), out / "skipped.csv")
        if not summary.empty:
            log.info("\n%s", console_table(summary))
            log.info("results in %s", out)
        return RunOutcome(out, summary, failed, report=bool(cfg.report))
