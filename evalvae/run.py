"""``run(cfg)``: the reconstruction benchmark over every selected VAE."""

from __future__ import annotations

import gc
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from evalvae.data import make_loader
from evalvae.device import peak_memory_mb, reset_peak_memory, resolve_device
from evalvae.errors import ConfigError, EvalvaeError
from evalvae.metrics import build_metrics
from evalvae.recon import StageTimes, reconstruct
from evalvae.results import RunWriter, console_table
from evalvae.vae import load_vae

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

    return sorted(p.name[: -len(".yaml")] for p in files("evalvae.conf").joinpath("vae").iterdir() if p.name.endswith(".yaml"))


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
            "no VAE selected; pick one with +vae=NAME or several with +vae=[A,B]. Available: " + ", ".join(available_vaes())
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


def _workers(value) -> int:
    if value == "auto":
        return max(1, min(4, (os.cpu_count() or 2) - 1))
    if not isinstance(value, int) or value < 0:
        raise ConfigError("workers", value, hint="a count of loader processes (0 = load in the main process) or auto")
    return value


def _progress(setting, total: int, desc: str):
    disable = None if setting == "auto" else not setting
    return tqdm(total=total, desc=desc, unit="img", disable=disable, dynamic_ncols=True, leave=False)


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> RunOutcome:
    """Evaluate each VAE in ``cfg.vae`` on ``cfg.dataset``; write the result tables into the run directory."""
    specs = selected_vaes(cfg)
    out = output_dir(out_dir)
    device = resolve_device(cfg.device)
    dataset = instantiate(cfg.dataset)
    metrics = build_metrics(cfg.metrics)
    quantize = bool(cfg.metrics.quantize)
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError("batch_size", cfg.batch_size, hint="a positive integer")
    workers = _workers(cfg.workers)

    writer = RunWriter(out, [m.name for m in metrics])
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    writer.write_json("metrics.json", {
        "dataset": dataset.describe(),
        "pixels": "8-bit originals vs reconstructions " + ("clamped and rounded to 8 bits" if quantize else "clamped to [0, 255], not rounded"),
        "quantize": quantize,
        "metrics": {m.name: {"higher_is_better": m.higher_is_better, **m.protocol()} for m in metrics},
    })  # fmt: skip
    writer.add_skipped(dataset.listing_skipped)
    log.info("dataset %s: %d images from %s, %s", dataset.name, len(dataset), dataset.root, dataset.geometry.describe().get("resolution", "native size"))

    failed: dict[str, str] = {}
    for name, spec in specs.items():
        reset_peak_memory(device)
        start = time.perf_counter()
        try:
            vae = load_vae(name, spec, device=device, cache_dir=cfg.cache_dir)
        except EvalvaeError as e:
            log.error("evalvae: %s", e)
            failed[name] = str(e)
            writer.add_vae({"vae": name, "status": "failed", "error": str(e)})
            continue
        load_s = time.perf_counter() - start
        if cfg.channels_last:
            vae.module.to(memory_format=torch.channels_last)
        times = StageTimes(device)
        n = 0
        loader = make_loader(dataset, cfg.batch_size, workers, device)
        with _progress(cfg.progress, len(dataset), name) as bar:
            for result in reconstruct(vae, loader, metrics, quantize=quantize, channels_last=cfg.channels_last, seed=cfg.seed, times=times):
                writer.add_rows(result.rows)
                writer.add_skipped(result.skipped)
                n += len(result.rows)
                bar.update(len(result.rows) + len(result.skipped))
        total = time.perf_counter() - start
        writer.add_timing({
            "vae": name, "device": str(device), "dtype": vae.dtype_name, "batch_size": cfg.batch_size, "n_images": n,
            "load_s": load_s, **{f"{k}_s": times.seconds.get(k, 0.0) for k in ("data", "encode", "decode", "metrics")},
            "total_s": total, "images_per_s": n / max(total - load_s, 1e-9), "peak_mem_mb": peak_memory_mb(device),
        })  # fmt: skip
        writer.add_vae({"status": "ok", **vae.describe(), "encoder_sha256": vae.encoder_hash})
        writer.flush()
        del vae
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    summary = writer.flush()
    if writer.skipped:
        log.warning("skipped %d file(s); reasons in %s", len(writer.skipped), out / "skipped.csv")
    if not summary.empty:
        log.info("\n%s", console_table(summary))
        log.info("results in %s", out)
    return RunOutcome(out, summary, failed)
