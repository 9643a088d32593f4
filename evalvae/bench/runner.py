"""``bench(cfg)``: time and memory of every selected VAE over the grid of ``cfg.bench``."""

from __future__ import annotations

import gc
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from evalvae import provenance
from evalvae.bench.grid import Config, Grid
from evalvae.bench.inputs import bench_images, reference_latents
from evalvae.bench.isolate import run_isolated, save_inputs
from evalvae.bench.nonfinite import log_findings, nonfinite_findings
from evalvae.bench.results import BenchWriter, console_table, environment
from evalvae.bench.schema import status_rows
from evalvae.bench.worker import Job, is_oom, message, run_config
from evalvae.device import release_memory, resolve_device
from evalvae.errors import ConfigError, EvalvaeError
from evalvae.io import atomic_write_text
from evalvae.jobs.runtime import RunOutcome, output_dir
from evalvae.jobs.schema import validate
from evalvae.jobs.task import Task
from evalvae.jobs.vaes import load, selected_vaes

log = logging.getLogger(__name__)


@dataclass
class BenchOutcome(RunOutcome):
    """The bench's outcome: ``summary`` is ``bench.csv``'s table (also as ``results``); ``failed``
    holds the VAEs that could not be loaded at all."""

    @property
    def results(self) -> pd.DataFrame:
        return self.summary


@dataclass
class Prepared:
    """What one VAE contributes before its grid runs: its decode inputs."""

    latents: dict[int, torch.Tensor]  # resolution -> (max batch, C, h, w) fp32 latents
    latent_errors: dict[int, str]


def bench(cfg: DictConfig, out_dir: str | Path | None = None) -> BenchOutcome:
    """Measure each VAE in ``cfg.vae`` over the grid; write ``bench.csv``, plots and ``bench.json``.
    ``cfg`` is checked against the bench's schema first, as the CLI checks it."""
    return BenchTask(validate(cfg, "bench"), output_dir(out_dir)).run()


class BenchTask(Task):
    """``evalvae bench``: time and memory of every selected VAE over the grid of ``cfg.bench``."""

    name = "bench"
    failures = (Exception,)  # one VAE that cannot load must not stop the others

    def run(self) -> BenchOutcome:
        cfg, out = self.cfg, self.out
        specs = selected_vaes(cfg)
        self.grid = grid = Grid.from_cfg(cfg)
        self.device = device = resolve_device(cfg.device)
        self.isolate = grid.isolate == "process" or (grid.isolate == "auto" and device.type == "cpu")
        if device.type == "cpu" and "fp16" in grid.dtypes:
            log.warning(
                "fp16 convolutions on CPU are about 100x slower than fp32 in PyTorch; bench.dtypes=[fp32,bf16] is the useful CPU grid"
            )

        env = environment(device)
        self.writer = writer = BenchWriter(out, env)
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
        self.images, image_ids = {}, {}
        for r in grid.resolutions:
            self.images[r], image_ids[r] = bench_images(cfg.dataset, r, max(grid.batch_sizes), grid.seed)
        info = {
            "software": provenance.software(),
            "environment": env,
            "grid": {k: getattr(grid, k) for k in ("resolutions", "batch_sizes", "dtypes", "modes", "isolate", "seed")},
            "options": grid.options.to_dict(),
            "isolated_processes": self.isolate,
            "inputs": {
                "dataset": str(cfg.dataset.get("name")),
                "images": image_ids[grid.resolutions[0]],
                "decode_latents": "each VAE's fp32 plain-mode encoding of the same images",
            },
        }
        atomic_write_text(out / "bench.json", json.dumps(info, indent=2, default=str) + "\n")
        log.info(
            "bench on %s (%s): %d VAE(s) x %d configurations",
            device,
            env["device_name"],
            len(specs),
            len(grid.configs("")),
        )

        self.n, work = 0, out / ".work"
        try:
            failed = self.each_vae(specs, self.run_grid, writer)
        finally:
            gc.unfreeze()
        shutil.rmtree(work, ignore_errors=True)

        results = writer.flush()
        info["nonfinite"] = nonfinite_findings(writer.rows)  # each with the override that makes a run upcast
        atomic_write_text(out / "bench.json", json.dumps(info, indent=2, default=str) + "\n")
        if cfg.bench.plots and not results.empty:
            from evalvae.bench.plots import write_plots

            write_plots(results, out)
        log.info("\n%s", console_table(results))
        log_findings(info["nonfinite"])
        log.info("results in %s", out)
        return BenchOutcome(out, results, failed)

    def record_failure(self, writer: BenchWriter, name: str, e: BaseException) -> str:
        """A VAE that could not be prepared: every configuration of its grid is a row with the reason."""
        error = str(e) if isinstance(e, EvalvaeError) else f"VAE '{name}': {message(e)}"
        log.error("evalvae: %s", error)
        status = "oom" if is_oom(e) else "failed"
        for c in self.grid.configs(name):
            writer.add(status_rows(c, self.grid.options.ops, str(self.device), status, error))
        return error

    def run_grid(self, name: str, spec) -> None:
        """Every configuration of VAE ``name``, in order; rows go to the writer (flushed after each)."""
        spec = OmegaConf.to_container(spec, resolve=True)
        grid, device, cache, work = self.grid, self.device, self.cfg.cache_dir, self.out / ".work"
        prepared = prepare(name, spec, grid, self.images, device, cache)
        for c in grid.configs(name):
            # Everything alive now (modules, inputs) leaves the cyclic collector's view (reference
            # counting still frees it), so each gc.collect() before a measurement takes
            # microseconds instead of ~0.3 s.
            gc.freeze()
            job = Job(c, spec, str(device), cache, grid.options)
            latents = prepared.latents.get(c.resolution)
            error = prepared.latent_errors.get(c.resolution, "")
            if self.isolate:
                inputs = work / f"inputs-{name}-{c.resolution}.pt"
                if not inputs.is_file():
                    save_inputs(inputs, self.images[c.resolution], latents, error)
                rows = run_isolated(job, inputs, work, self.n)
            else:
                rows = run_config(job, self.images[c.resolution], latents, error)
                release_memory(device)
            self.n += 1
            _log_config(c, rows)
            self.writer.add(rows)
            self.writer.flush()


def prepare(name: str, spec: dict, grid: Grid, images: dict, device: torch.device, cache: str | None) -> Prepared:
    """Load the VAE once in fp32 (plain mode) to check the resolutions and encode the decode inputs."""
    vae = load(name, {**spec, "dtype": "fp32"}, device=device, cache_dir=cache, policy=False).vae
    bad = [r for r in grid.resolutions if r % vae.downsample]
    if bad:
        raise ConfigError(
            "bench.resolutions", bad, hint=f"VAE '{name}' needs multiples of its downsampling factor {vae.downsample}"
        )
    latents, errors = {}, {}
    for r in grid.resolutions:
        try:
            latents[r] = reference_latents(vae, images[r])
        except Exception as e:  # without latents only the decode rows of this resolution fail
            errors[r] = "no latents to decode: the fp32 encode " + (
                "ran out of memory" if is_oom(e) else f"failed ({message(e)})"
            )
            release_memory(device)
    del vae
    release_memory(device)
    return Prepared(latents, errors)


def _log_config(c: Config, rows: list[dict]) -> None:
    parts = []
    for row in rows:
        if row["status"] == "ok":
            parts.append(
                f"{row['op']} {row['ms_per_image_median']:.1f} ms/img" + (" NONFINITE" if row["nonfinite"] else "")
            )
        else:
            parts.append(f"{row['op']} {row['status']}")
    log.info("%s %dpx b%d %s %s: %s", c.vae, c.resolution, c.batch, c.dtype, c.mode, ", ".join(parts))
