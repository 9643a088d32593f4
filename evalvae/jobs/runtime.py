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


def loader_workers(value, device: torch.device | None = None) -> int:
    """``workers`` (checked by the schema): a count, or ``auto``: one process per CPU but one, at most 8 for a
    CUDA device (a GPU decodes SD-size VAEs faster than 4 processes decode 256 px JPEGs) and 4 elsewhere
    (where the model's own threads need the CPUs)."""
    most = 8 if device is not None and torch.device(device).type == "cuda" else 4
    return max(1, min(most, (os.cpu_count() or 2) - 1)) if value == "auto" else value


def progress_bar(setting, total: int | None, desc: str):
    disable = None if setting == "auto" else not setting
    return tqdm(total=total, desc=desc, unit="img", disable=disable, dynamic_ncols=True, leave=False)


class StageTimes:
    """Seconds per stage.

    On CUDA a stage is timed by events on the device's stream, read only when :attr:`seconds` is: the device
    is never made to wait at a stage boundary (which would leave it idle while the host prepares the next
    batch), and a stage counts the device's time on its work. The ``data`` stage is the host's wait for the
    loader, by the host's clock. Elsewhere the device is synchronised at each boundary (MPS) or needs no
    synchronising (CPU), and the host's clock counts.
    """

    HOST_STAGES = ("data", "set_metrics")  # the host's work: the loader's wait; statistics in NumPy and SciPy

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._seconds: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, object, object]] = []

    @property
    def seconds(self) -> dict[str, float]:
        if self._events:
            for name, start, end in self._events:
                end.synchronize()
                self._seconds[name] += start.elapsed_time(end) / 1000
            self._events.clear()
        return self._seconds

    @contextmanager
    def stage(self, name: str):
        if self.device.type == "cuda" and name not in self.HOST_STAGES:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((name, start, end))
            return
        if name not in self.HOST_STAGES:
            synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if name not in self.HOST_STAGES:
                synchronize(self.device)
            self._seconds[name] += time.perf_counter() - start


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
