"""``bench.csv`` (tidy, rewritten atomically after every configuration), the environment, the console table."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from evalvae import provenance
from evalvae.bench.schema import COLUMNS, EXTRA_COLUMNS
from evalvae.device import tf32_state
from evalvae.results import write_frame
from evalvae.vocab import BENCH_OPS


def environment(device: torch.device) -> dict:
    """Where the numbers come from: device, library versions and the precision switches that move them.

    What every run records (:func:`evalvae.provenance.environment`), plus the flat ``*_version`` keys
    ``bench.csv`` stamps on each row and the conditions that move timings.
    """
    shared = provenance.environment(device)
    env = {
        "device": shared["device"],
        "device_name": shared["device_name"],
        "torch_version": torch.__version__,
        "diffusers_version": provenance.version("diffusers") or "",
        "cuda_version": shared["cuda"] or "",
        "cudnn_version": shared["cudnn"] if device.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": shared["platform"],
        "cpu_count": shared["cpu_count"],
        "torch_threads": shared["threads"],
        # fp32 convolutions use TF32 tensor cores by default on Ampere and newer, matmuls do not
        "cudnn_allow_tf32": tf32_state()["cudnn"],
        "matmul_allow_tf32": tf32_state()["matmul"],
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        # other processes competing for the CPU make CPU timings slower and noisier
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["device_memory_mb"] = props.total_memory / 2**20
        env["device_capability"] = f"{props.major}.{props.minor}"
    return env


class BenchWriter:
    """Collects rows; :meth:`flush` rewrites ``bench.csv`` with the fixed columns first."""

    def __init__(self, out_dir: str | Path, env: dict):
        self.path = Path(out_dir) / "bench.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stamp = {k: env.get(k, "") for k in ("device_name", "torch_version", "diffusers_version", "cuda_version")}
        self.rows: list[dict] = []

    def add(self, rows: list[dict]) -> None:
        self.rows.extend({**row, **self.stamp} for row in rows)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=COLUMNS + EXTRA_COLUMNS)
        df["nonfinite"] = df["nonfinite"].astype("boolean")
        return df

    def flush(self) -> pd.DataFrame:
        df = self.frame()
        write_frame(self.path, df)
        return df


def read_bench_csv(path: str | Path) -> pd.DataFrame:
    """``bench.csv`` back as written (``nonfinite`` as a nullable boolean)."""
    df = pd.read_csv(path, keep_default_na=True)
    df["nonfinite"] = df["nonfinite"].astype("boolean")
    return df


def _cell(row) -> str:
    if row["status"] != "ok":
        return row["status"].upper() if row["status"] == "oom" else row["status"]
    text = f"{row['ms_per_image_median']:.1f} ms {row['peak_mem_mb']:.0f} MiB"
    if not math.isnan(row["lowp_psnr_vs_fp32"]):
        text += f" {row['lowp_psnr_vs_fp32']:.1f} dB"
    return text + (" NONFINITE" if flagged(row["nonfinite"]) else "")


def flagged(value) -> bool:
    """True for a true ``nonfinite`` cell; False for false, missing (NA, None, NaN) cells."""
    return isinstance(value, (bool, np.bool_)) and bool(value)


def console_table(df: pd.DataFrame) -> str:
    """One line per configuration; per op: ms per image (median), peak MiB and, for fp16/bf16, dB vs fp32."""
    if df.empty:
        return "(no results)"
    keys = ["vae", "resolution", "batch", "mode", "dtype"]
    table = df.assign(cell=df.apply(_cell, axis=1)).pivot(index=keys, columns="op", values="cell")
    order = pd.MultiIndex.from_frame(df[keys].drop_duplicates())  # the order configurations ran in
    ops = [op for op in BENCH_OPS if op in table.columns]
    return table.reindex(order)[ops].reset_index().to_string(index=False)
