"""The run directory, loader processes, progress bars, stage timings and the outcome of a job."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from evalvae.device import peak_memory_mb, synchronize
from evalvae.errors import ConfigError


@dataclass
class RunOutcome:
    """What a job leaves: its directory, its summary table, the VAEs that failed (name -> reason), and
    ``missing``: what else was asked for and not measured (a VAE that scored no image, an unavailable
    metric, a report that could not be written), one short phrase each."""

    out_dir: Path
    summary: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)
    report: bool = False  # whether the entry point should write <out_dir>/report for it
    missing: list[str] = field(default_factory=list)

    @property
    def incomplete(self) -> list[str]:
        """Why the job is incomplete, one short phrase each; empty when everything asked for was measured."""
        return [*(f"VAE '{name}' failed" for name in self.failed), *self.missing]


def output_dir(out_dir: str | Path | None) -> Path:
    """The explicit ``out_dir``, else Hydra's run directory."""
    if out_dir is not None:
        return Path(out_dir)
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise ConfigError("out_dir", None, hint="pass out_dir= when calling run() outside the Hydra CLI")
    return Path(HydraConfig.get().runtime.output_dir)


def loader_workers(value) -> int:
    """``workers`` (checked by the schema): a count, or ``auto``."""
    return max(1, min(4, (os.cpu_count() or 2) - 1)) if value == "auto" else value


def progress_bar(setting, total: int | None, desc: str):
    disable = None if setting == "auto" else not setting
    return tqdm(total=total, desc=desc, unit="img", disable=disable, dynamic_ncols=True, leave=False)


@dataclass
class StageTimes:
    """Wall-clock seconds per stage; the device is synchronised at each stage boundary."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def stage(self, name: str):
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] += time.perf_counter() - start


def timing_row(
    name: str,
    dtype: str,
    device: torch.device,
    batch_size: int,
    n_images: int,
    load_s: float,
    times: StageTimes,
    stages: tuple[str, ...],
    total_s: float,
    peak_mem_mb: float | None = None,
    **extra,
) -> dict:
    """One row of ``timings.csv``: seconds per stage, throughput over the work after loading, peak memory."""
    seconds = {f"{k}_s": times.seconds.get(k, 0.0) for k in stages}
    return {
        "vae": name,
        "device": str(device),
        "dtype": dtype,
        "batch_size": batch_size,
        "n_images": n_images,
        "load_s": load_s,
        **seconds,
        **extra,
        "total_s": total_s,
        "images_per_s": n_images / max(total_s - load_s, 1e-9),
        "peak_mem_mb": peak_memory_mb(device) if peak_mem_mb is None else peak_mem_mb,
    }
