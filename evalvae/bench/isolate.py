"""Running one configuration in a fresh process, so its peak memory is its own.

On CPU the only peak-memory measure is the process's resident set, and memory a previous
configuration touched (allocator caches, the high-water mark itself) would count towards the
next. Each configuration therefore runs in a new process. The processes are forked from a
multiprocessing fork server that has imported torch, diffusers and evalvae once, so a
configuration costs a fork instead of a ~5 s interpreter start-up. A worker the kernel kills
(SIGKILL, the out-of-memory killer's signal) becomes rows with status ``oom``.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import signal
import sys
from pathlib import Path

import torch

from evalvae.bench.schema import status_rows
from evalvae.bench.worker import Job, run_config
from evalvae.io import atomic_write_text

log = logging.getLogger(__name__)

PRELOAD = ["evalvae.bench.worker", "diffusers.models.autoencoders.autoencoder_kl"]


def _context():
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)  # no effect once the server runs; missing modules are skipped
        return ctx
    return multiprocessing.get_context("spawn")


def save_inputs(path: Path, images: torch.Tensor, latents: torch.Tensor | None, latents_error: str) -> Path:
    """Write a configuration's inputs where a worker process can read them (plain tensors only)."""
    payload = {"images": images, "latents_error": latents_error}
    if latents is not None:
        payload["latents"] = latents
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def run_isolated(job: Job, inputs: Path, work_dir: Path, index: int) -> list[dict]:
    """Run :func:`~evalvae.bench.worker.run_config` for ``job`` in a new process; return its rows.

    The job (plain data) travels as the process's argument; the rows come back in a file, which
    outlives a worker the kernel kills.
    """
    result_path = work_dir / f"rows-{index:04d}.json"
    result_path.unlink(missing_ok=True)
    process = _context().Process(
        target=_child, args=(job, str(inputs), str(result_path)), name=f"evalvae-bench-{index}"
    )
    process.start()
    process.join()
    if result_path.is_file():
        return json.loads(result_path.read_text(encoding="utf-8"))
    c, ops = job.config, job.options.ops
    if process.exitcode == -signal.SIGKILL:
        error = "the worker process was killed (SIGKILL), most likely by the kernel's out-of-memory killer"
        return status_rows(c, ops, job.device, "oom", error)
    error = f"the worker process exited with code {process.exitcode}; its log is above"
    return status_rows(c, ops, job.device, "failed", error)


def _child(job: Job, inputs_path: str, result_path: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    inputs = torch.load(inputs_path, map_location="cpu", weights_only=True)
    gc.freeze()  # as in the parent: keeps each gc.collect() before a measurement cheap
    rows = run_config(job, inputs["images"], inputs.get("latents"), inputs.get("latents_error", ""))
    atomic_write_text(result_path, json.dumps(rows))
