"""``evalvae robustness``: each VAE tiled, in fp16/bf16 and at 256-1024 px, against its own plain fp32 output.

Per VAE: load it in fp32 (the job layer's loading, with its failure recording), run the plain
pass over the dataset at ``dataset.resolution`` (decoding the same latents tiled as well), then
each reduced precision, then the resolution sweep (:mod:`evalvae.robustness.checks`). A VAE that cannot
be loaded, or fails part-way, is recorded in ``vaes.json`` and the others go on; a check that cannot
run for a VAE (no tiled mode, a dtype the device lacks, out of memory at 1024 px) gives rows with
the reason instead. An image too small for a VAE (a side below its downsampling factor) is skipped
for it by every check, with the reason in ``skipped.csv`` and a count in its rows' note. Results:
``robustness.csv`` (vae, check, setting, metric, value, n, note), ``skipped.csv`` (file, reason),
``robustness-<vae>.png``, ``timings.csv``, ``vaes.json`` and ``config.yaml``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from evalvae.config import instantiate
from evalvae.data import make_loader
from evalvae.device import cpu_has_native_bf16, release_memory, resolve_device
from evalvae.jobs.failures import is_out_of_memory, log_failures, unavailable_metrics
from evalvae.jobs.runtime import RunOutcome, StageTimes, loader_workers
from evalvae.jobs.task import Done, Task
from evalvae.jobs.vaes import load, selected_vaes
from evalvae.metrics import build_metrics, split_metrics
from evalvae.robustness import checks
from evalvae.robustness.results import RobustnessWriter

log = logging.getLogger(__name__)
STAGES = ("encode", "decode", "tiled_decode", "fp16", "bf16")


class RobustnessTask(Task):
    """``evalvae robustness``: the checks of ``cfg.robustness`` for every selected VAE."""

    name = "robustness"
    stages = STAGES

    def __init__(self, cfg: DictConfig, out: Path):
        super().__init__(cfg, out)
        rc = cfg.robustness
        self.checks = list(rc.checks)  # checked by the schema at the entry
        self.specs = selected_vaes(cfg)
        self.device = resolve_device(cfg.device)
        self.batch_size = cfg.batch_size
        self.workers = loader_workers(cfg.workers)
        self.base = cfg.dataset.get("resolution")
        self.pair = split_metrics(build_metrics(cfg.metrics)).pair
        self.writer = RobustnessWriter(self.out)

    def loader(self, resolution: int | None = None):
        overrides = {} if resolution is None else {"resolution": resolution}
        return make_loader(instantiate(self.cfg.dataset, **overrides), self.batch_size, self.workers, self.device)

    def run(self) -> RunOutcome:
        cfg, out = self.cfg, self.out
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
        failed = self.each_vae(self.specs, self.check_vae, self.writer)
        table = self.writer.flush()
        if cfg.robustness.plots and not table.empty:
            from evalvae.robustness.plots import write_plots

            write_plots(table, out)
        log_failures(failed, len(self.specs))
        if not table.empty:
            log.info("\n%s", console_table(table))
            log.info("results in %s", out)
        return RunOutcome(out, table, failed, report=bool(cfg.report), missing=unavailable_metrics(self.pair))

    def check_vae(self, name: str, spec) -> Done:
        spec = OmegaConf.to_container(spec, resolve=True)
        loaded = self.load(name, {**spec, "dtype": "fp32"})
        cfg, rc, vae, writer = self.cfg, self.cfg.robustness, loaded.vae, self.writer
        times, rows = StageTimes(self.device), []
        skipped: list[tuple[str, str]] = []  # the files a check left out, with the reason
        n = 0
        if "tiled" in self.checks or "precision" in self.checks:
            tile = rc.tile_size if "tiled" in self.checks else None
            ref, tiled_error = checks.reference_pass(vae, self.loader(), tile_size=tile, times=times)
            n = ref.n
            skipped += ref.skipped
            if "tiled" in self.checks:
                overlap = int(rc.tile_size // vae.downsample * vae.tile_overlap) * vae.downsample
                rows += checks.tiled_rows(name, rc.tile_size, overlap, ref, tiled_error)
            if "precision" in self.checks:
                for dtype in rc.dtypes:
                    rows += self.precision(name, spec, str(dtype), ref, times)
            del ref
        if "resolution" in self.checks:
            for r in rc.resolutions:
                try:
                    swept, left_out = checks.resolution_rows(
                        vae, name, int(r), self.loader(int(r)), self.pair, quantize=bool(cfg.metrics.quantize)
                    )
                    rows += swept
                    skipped += left_out
                except RuntimeError as e:  # out of memory at a large size: that setting only
                    if not is_out_of_memory(e):
                        raise
                    release_memory(self.device)
                    names = [c for m in self.pair for c in checks.result_columns(m)] + [checks.TIME]
                    rows += checks.unavailable(name, "resolution", r, names, f"out of memory at {r} px: {e}")
        writer.add_rows(rows)
        writer.add_skipped(skipped)
        writer.add_vae({"status": "ok", **vae.describe(), "encoder_sha256": vae.encoder_hash})
        log.info("VAE '%s': %s", name, _brief(rows))
        return Done(vae.dtype_name, n, loaded.load_s, times)

    def precision(self, name: str, spec: dict, dtype: str, ref, times: StageTimes) -> list[dict]:
        """``dtype`` exactly as asked (no upcasting: the point is to measure it); unavailable with the reason
        where it cannot be loaded or run on this device."""
        if dtype == "fp16" and self.device.type == "cpu" and not self.cfg.robustness.fp16_on_cpu:
            reason = (
                "not run on cpu: PyTorch's fp16 convolutions there are about 100x slower than fp32 "
                "(robustness.fp16_on_cpu=true runs them anyway)"
            )
            return checks.unavailable(name, "precision", dtype, checks.PRECISION_METRICS, reason)
        if dtype == "bf16" and self.device.type == "cpu":
            reason = slow_bf16_reason(self.cfg.robustness.get("bf16_on_cpu"), cpu_has_native_bf16())
            if reason:
                return checks.unavailable(name, "precision", dtype, checks.PRECISION_METRICS, reason)
        low = None
        try:
            low = load(name, {**spec, "dtype": dtype}, device=self.device, cache_dir=self.cfg.cache_dir, policy=False)
            return checks.precision_rows(name, dtype, low.vae, ref, times)
        except Exception as e:  # noqa: BLE001 - whatever stops this dtype makes it unavailable, not the VAE failed
            cause = e.__cause__ if type(e).__name__ == "InstantiationException" and e.__cause__ else e
            log.warning("VAE '%s': %s unavailable: %s", name, dtype, cause)
            return checks.precision_unavailable(name, dtype, self.device, cause)
        finally:
            del low
            release_memory(self.device)


def slow_bf16_reason(asked: bool | None, native: bool | None) -> str | None:
    """Why bf16 is not run on this CPU (None: run it). ``asked`` is ``robustness.bf16_on_cpu``: true or
    false decide; null runs it where the CPU has bf16 instructions (``native``; None: unknown)."""
    if asked is True or (asked is None and native):
        return None
    if asked is False:
        return "not run on cpu: robustness.bf16_on_cpu=false"
    what = (
        "has no bf16 instructions (avx512_bf16, amx_bf16 or aarch64 bf16), so PyTorch emulates bf16"
        if native is False
        else "does not list its instruction sets, and without bf16 instructions PyTorch emulates bf16"
    )
    return (
        f"not run on cpu: this CPU {what} and its convolutions are tens of times slower than fp32 "
        "(robustness.bf16_on_cpu=true runs them anyway)"
    )


def _brief(rows: list[dict]) -> str:
    picked = [r for r in rows if r["metric"] in ("psnr", "seam_max_abs") and not math.isnan(r["value"])]
    return ", ".join(f"{r['check']} {r['setting']} {r['metric']} {r['value']:.2f}" for r in picked)


def console_table(table: pd.DataFrame) -> str:
    """The table as VAEs (rows) by check/setting/metric (columns), for the log."""
    shown = table.assign(column=table["check"] + " " + table["setting"] + " " + table["metric"])
    wide = shown.pivot_table(index="vae", columns="column", values="value", aggfunc="first", sort=False)
    return wide.T.to_string(float_format=lambda v: f"{v:.3f}")
