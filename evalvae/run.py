"""``run(cfg)``: the reconstruction benchmark over every selected VAE."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from evalvae.config import instantiate
from evalvae.data import ImageDataset, make_loader
from evalvae.device import peak_memory_mb, release_memory, reset_peak_memory, resolve_device
from evalvae.errors import ConfigError, EvalvaeError, check_positive_int, error_reason
from evalvae.io import cache_dir
from evalvae.metrics import build_metrics, split_metrics
from evalvae.metrics.refstats import References, ReferenceStore
from evalvae.recon import StageTimes, reconstruct
from evalvae.results import RunWriter, console_table
from evalvae.vae import VAEAdapter
from evalvae.vae.policy import load_for_run

log = logging.getLogger(__name__)


class NoVAESelected(EvalvaeError):
    pass


@dataclass
class RunOutcome:
    out_dir: Path
    summary: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)


def available_vaes() -> list[str]:
    """Names of the VAE configs shipped in ``conf/vae``."""
    from importlib.resources import files

    return sorted(
        p.name[: -len(".yaml")] for p in files("evalvae.conf").joinpath("vae").iterdir() if p.name.endswith(".yaml")
    )


def selected_vaes(cfg: DictConfig) -> dict[str, DictConfig]:
    """The VAEs of this job. Entries without ``_target_`` are field overrides (``++vae.X.f=v``) for
    a VAE that another job of a sweep selects; they are ignored with a note."""
    vaes = {}
    for name, spec in (cfg.get("vae") or {}).items():
        if isinstance(spec, DictConfig) and "_target_" in spec:
            vaes[name] = spec
        else:
            log.info("vae.%s: not selected in this job (no +vae=%s); its overrides are ignored", name, name)
    if not vaes:
        raise NoVAESelected(
            "no VAE selected; pick one with +vae=NAME or several with +vae=[A,B]. Available: "
            + ", ".join(available_vaes())
        )
    return vaes


def output_dir(out_dir: str | Path | None) -> Path:
    """The explicit ``out_dir``, else Hydra's run directory."""
    if out_dir is not None:
        return Path(out_dir)
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise ConfigError("out_dir", None, hint="pass out_dir= when calling run() outside the Hydra CLI")
    return Path(HydraConfig.get().runtime.output_dir)


def loader_workers(value) -> int:
    if value == "auto":
        return max(1, min(4, (os.cpu_count() or 2) - 1))
    if not isinstance(value, int) or value < 0:
        raise ConfigError("workers", value, hint="a count of loader processes (0 = load in the main process) or auto")
    return value


def progress_bar(setting, total: int, desc: str):
    disable = None if setting == "auto" else not setting
    return tqdm(total=total, desc=desc, unit="img", disable=disable, dynamic_ncols=True, leave=False)


class Job:
    """The state one run shares across its VAEs: data, metrics, reference statistics, results."""

    def __init__(self, cfg: DictConfig, out: Path):
        self.cfg, self.out = cfg, out
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

    def protocol(self) -> dict:
        metrics = {}
        for m in self.pair:
            metrics[m.name] = {"higher_is_better": m.higher_is_better, **m.protocol()}
        for m in self.sets:
            for name, proto in m.protocol().items():
                metrics[name] = {**proto, "reference": self.refs.info.get(m.extractor.name)}
        for m in self.unavailable_sets:
            metrics.update({name: {"higher_is_better": False, **m.protocol()} for name in m.names})
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

    def evaluate(self, name: str, vae: VAEAdapter, start: float) -> None:
        """Score ``vae`` (loaded since ``start``, a ``perf_counter`` time) and add its rows to the writer."""
        load_s = time.perf_counter() - start
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
            keep_pixels=bool(self.sets),
        )
        with progress_bar(cfg.progress, len(self.dataset), name) as bar:
            for result in batches:
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
        total = time.perf_counter() - start
        stages = {
            f"{k}_s": times.seconds.get(k, 0.0)
            for k in ("data", "encode", "decode", "metrics", "features", "set_metrics")
        }
        writer.add_timing(
            {
                "vae": name,
                "device": str(self.device),
                "dtype": vae.dtype_name,
                "batch_size": cfg.batch_size,
                "n_images": n,
                "load_s": load_s,
                **stages,
                "total_s": total,
                "images_per_s": n / max(total - load_s, 1e-9),
                "peak_mem_mb": peak_memory_mb(self.device),
            }
        )
        writer.add_vae({"status": "ok", **vae.describe(), "encoder_sha256": vae.encoder_hash})


# What a VAE may raise while it loads or is evaluated without stopping the run: it is marked failed.
VAE_FAILURES = (RuntimeError, EvalvaeError)  # torch.cuda.OutOfMemoryError is a RuntimeError


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or any allocator's "out of memory" RuntimeError (MPS, CPU)."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def record_failure(writer: RunWriter, name: str, e: BaseException, vae: VAEAdapter | None = None) -> str:
    """Record a VAE that failed while loading (``vae`` None) or part-way through its evaluation: its rows
    are dropped, so it contributes to no table or mean, and ``vaes.json`` says why (``failure``: ``oom``
    or ``error``); return the reason for :attr:`RunOutcome.failed`."""
    failure = "oom" if is_out_of_memory(e) else "error"
    error = f"{type(e).__name__}: {error_reason(e, limit=500)}"
    dropped = writer.discard(name)
    during = "loading" if vae is None else f"evaluation ({dropped} partial row(s) dropped)"
    log.error(
        "evalvae: VAE '%s' %s during %s: %s; the run goes on",
        name,
        "ran out of memory" if failure == "oom" else "failed",
        during,
        error,
    )
    writer.add_vae(
        {
            **(vae.describe() if vae is not None else {"vae": name}),
            "status": "failed",
            "failure": failure,
            "error": error,
        }
    )
    return f"{'out of memory' if failure == 'oom' else 'failed'}: {error}"


def record_load_failure(writer: RunWriter, name: str, e: BaseException) -> str:
    """Record a VAE that could not be loaded: an evalvae error (a missing file, a bad option) as ``failure``
    ``load`` with its message, anything else as :func:`record_failure` does; return the reason."""
    if not isinstance(e, EvalvaeError):
        return record_failure(writer, name, e)
    log.error("evalvae: %s", e)
    writer.add_vae({"vae": name, "status": "failed", "failure": "load", "error": str(e)})
    return str(e)


def log_failures(failed: dict[str, str], n_vaes: int) -> None:
    if failed:
        log.error(
            "%d of %d VAE(s) failed (%s); the others' results are complete",
            len(failed),
            n_vaes,
            "; ".join(f"{k}: {v}" for k, v in failed.items()),
        )


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> RunOutcome:
    """Evaluate each VAE in ``cfg.vae`` on ``cfg.dataset``; write the result tables into the run directory."""
    if cfg.get("task") == "t2i":
        from evalvae.t2i.run import run_t2i

        return run_t2i(cfg, output_dir(out_dir))
    specs = selected_vaes(cfg)
    out = output_dir(out_dir)
    job = Job(cfg, out)
    writer = job.writer
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    writer.write_json("metrics.json", job.protocol())
    ds = job.dataset
    log.info(
        "dataset %s: %d images from %s, %s",
        ds.name,
        len(ds),
        ds.root,
        ds.geometry.describe().get("resolution", "native size"),
    )

    failed: dict[str, str] = {}
    for name, spec in specs.items():
        reset_peak_memory(job.device)
        start = time.perf_counter()
        try:
            vae = load_for_run(name, spec, device=job.device, cache_dir=cfg.cache_dir)
        except VAE_FAILURES as e:
            failed[name] = record_load_failure(writer, name, e)
            release_memory(job.device)
            continue
        try:
            job.evaluate(name, vae, start)
        except VAE_FAILURES as e:
            failed[name] = record_failure(writer, name, e, vae)
        writer.flush()
        writer.write_json("metrics.json", job.protocol())
        del vae
        release_memory(job.device)

    summary = writer.flush()
    log_failures(failed, len(specs))
    if writer.skipped:
        log.warning("skipped %d file(s); reasons in %s", len(writer.skipped), out / "skipped.csv")
    if not summary.empty:
        log.info("\n%s", console_table(summary))
        log.info("results in %s", out)
        if cfg.report:
            write_run_report(out, job.device)
    return RunOutcome(out, summary, failed)


def write_run_report(out: Path, device: torch.device) -> None:
    """The HTML/markdown report of this run, in ``<run dir>/report``; results stay valid if it fails."""
    from evalvae.report import write_report

    try:
        log.info("report: %s", write_report([out], out / "report", device=str(device)))
    except Exception as e:  # the result tables are already written; say why there is no report
        log.warning("no report for %s: %s: %s", out, type(e).__name__, e)
