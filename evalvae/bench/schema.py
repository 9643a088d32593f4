"""The columns of ``bench.csv``: one row per (vae, op, resolution, batch, dtype, mode)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evalvae.bench.grid import Config

KEY_COLUMNS = ["vae", "op", "resolution", "batch", "dtype", "mode"]  # one row per key
MEASURE_COLUMNS = [
    "ms_per_image_median",
    "ms_per_image_iqr",
    "images_per_s",
    "peak_mem_mb",
    "nonfinite",
    "lowp_psnr_vs_fp32",
]
COLUMNS = [*KEY_COLUMNS, "device", *MEASURE_COLUMNS, "status"]

# After the fixed columns: how each number was obtained, and the environment that produced it.
EXTRA_COLUMNS = [
    "peak_reserved_mb",  # CUDA: torch.cuda.max_memory_reserved; NaN elsewhere
    "mem_before_mb",  # allocated (CUDA) or resident (CPU) memory when the op started: weights and inputs
    "mem_metric",  # cuda_max_allocated | rss_peak | rss_peak_process | unavailable (see evalvae.bench.memory)
    "repeats",  # timed calls after the warm-up
    "first_call_ms",  # the very first call: lazy initialisation, autotuning, compilation
    "compile_s",  # with bench.compile: first call minus the median call; else NaN
    "tile_size",
    "channels_last",
    "compile",
    "error",  # why the status is not ok
    "note",  # anything else worth knowing about the row
    "device_name",
    "torch_version",
    "diffusers_version",
    "cuda_version",
]

# ok: measured; oom: ran out of memory (the grid goes on); unsupported: the VAE has no such
# mode; failed: any other error, with the message in ``error``.
STATUSES = ("ok", "oom", "unsupported", "failed")


def empty_row(config: Config, op: str, device: str) -> dict:
    """A row with its key columns set and every measurement still missing."""
    row = dict.fromkeys(COLUMNS + EXTRA_COLUMNS, math.nan)
    row.update(vae=config.vae, op=op, resolution=config.resolution, batch=config.batch, dtype=config.dtype)
    row.update(mode=config.mode, device=device, nonfinite=None, status="failed", mem_metric="", error="", note="")
    return row


def status_rows(config: Config, ops, device: str, status: str, error: str, **fields) -> list[dict]:
    """One row per op of ``config`` with the same ``status`` and ``error`` (nothing was measured)."""
    return [{**empty_row(config, op, device), "status": status, "error": error, **fields} for op in ops]
