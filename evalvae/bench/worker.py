"""One configuration of the grid, measured: load the VAE, time each op, check what it returned.

Nothing here stops the grid: running out of memory is a row with status ``oom``, a mode the
VAE cannot run is ``unsupported``, any other error is ``failed`` with its message.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from evalvae.bench.fidelity import image_psnr, latent_psnr
from evalvae.bench.grid import Config, Options
from evalvae.bench.memory import MemoryProbe
from evalvae.bench.schema import empty_row, status_rows
from evalvae.bench.timing import median_iqr, time_calls
from evalvae.device import to_channels_last
from evalvae.metrics.base import from_uint8
from evalvae.vae import VAEAdapter, load_vae
from evalvae.vae.base import UnsupportedMemoryMode

log = logging.getLogger(__name__)


@dataclass
class Job:
    """Everything a worker needs besides the input tensors; plain data, so it can cross processes."""

    config: Config
    spec: dict
    device: str
    cache_dir: str | None
    options: Options


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` means the device (or the host) ran out of memory."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def message(exc: BaseException) -> str:
    """The first line of an error, with its type: what a results table can hold."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def load_for_bench(job: Job, dtype: str) -> VAEAdapter:
    """The VAE of ``job`` in ``dtype``, in the job's memory mode and memory format."""
    vae = load_vae(job.config.vae, {**job.spec, "dtype": dtype}, device=job.device, cache_dir=job.cache_dir)
    vae.set_memory_mode(job.config.mode, job.options.tile_size)
    if job.options.channels_last:
        to_channels_last(vae.module)
    return vae


def run_config(job: Job, images: torch.Tensor, latents: torch.Tensor | None, latents_error: str = "") -> list[dict]:
    """Measure every op of ``job`` on the first ``batch`` of ``images`` (uint8) and ``latents``; one row per op."""
    cfg, opt, device = job.config, job.options, torch.device(job.device)
    try:
        vae = load_for_bench(job, cfg.dtype)
    except UnsupportedMemoryMode as e:
        return status_rows(cfg, opt.ops, job.device, "unsupported", str(e))
    except Exception as e:  # a VAE that cannot load in this dtype or mode is a result, not a crash
        return status_rows(cfg, opt.ops, job.device, "oom" if is_oom(e) else "failed", message(e))

    rows, outputs = time_ops(job, vae, images, latents, latents_error)
    del vae  # the last reference: the fp32 reference model below must not share memory with it
    if opt.compile:
        # The compiled graphs hold this model; and the ops' code objects are shared by every
        # configuration, so without a reset later ones would pile up recompilations until
        # dynamo's cache limit silently falls back to eager.
        torch._dynamo.reset()
    MemoryProbe(device).reset()
    if outputs:
        add_fidelity(job, rows, outputs, images, latents)
    return list(rows.values())


def time_ops(job: Job, vae: VAEAdapter, images: torch.Tensor, latents, latents_error: str) -> tuple[dict, dict]:
    """One row per op; and, for fp16/bf16, each op's last output (on the CPU) for :func:`add_fidelity`."""
    cfg, opt, device = job.config, job.options, torch.device(job.device)
    fmt = torch.channels_last if opt.channels_last else torch.contiguous_format
    x = from_uint8(images[: cfg.batch]).to(device=device, dtype=vae.dtype).contiguous(memory_format=fmt)
    z = (
        None
        if latents is None
        else latents[: cfg.batch].to(device=device, dtype=vae.dtype).contiguous(memory_format=fmt)
    )
    calls = {
        "encode": lambda: vae.encode(x),
        "decode": lambda: vae.decode(z),
        "roundtrip": lambda: vae.decode(vae.encode(x)),
    }
    rows = {op: empty_row(cfg, op, job.device) for op in opt.ops}
    keep = cfg.dtype != "fp32" and opt.fidelity
    probe = MemoryProbe(device)
    outputs = {}
    for op in opt.ops:
        rows[op].update(tile_size=vae.tile_size, channels_last=opt.channels_last, compile=opt.compile)
        rows[op]["mem_metric"] = probe.metric
        if op == "decode" and z is None:
            rows[op]["error"] = latents_error or "no latents to decode"
            continue
        fn = torch.compile(calls[op], backend=opt.compile_backend) if opt.compile else calls[op]
        out = measure(rows[op], fn, device, probe, opt, cfg.batch)
        if keep and out is not None:
            outputs[op] = out.float().cpu()
        del out, fn
    return rows, outputs


def measure(row: dict, fn, device: torch.device, probe: MemoryProbe, opt: Options, batch: int):
    """Time ``fn`` into ``row``; return its last output, or None when it failed."""
    probe.reset()
    row["mem_before_mb"] = probe.current_mb()
    try:
        repeats = dict(repeats=opt.repeats, min_repeats=opt.min_repeats, max_seconds=opt.max_seconds)
        t = time_calls(fn, device, warmup=opt.warmup, **repeats)
    except Exception as e:
        oom = is_oom(e)
        row.update(status="oom" if oom else "failed", error=message(e))
        row["note"] = f"peak before the error: {probe.peak_mb():.0f} MiB"
        if not oom:
            where = [row[k] for k in ("vae", "op", "resolution", "dtype", "mode")]
            log.warning("%s %s at %d px, %s, %s: %s", *where, message(e))
        t = None
    if t is None:
        probe.reset()  # the failed call's tensors were released with the exception
        return None
    median, iqr = median_iqr(t.seconds)
    row.update(
        ms_per_image_median=median * 1000 / batch, ms_per_image_iqr=iqr * 1000 / batch, images_per_s=batch / median
    )
    row.update(peak_mem_mb=probe.peak_mb(), peak_reserved_mb=probe.peak_reserved_mb(), repeats=len(t.seconds))
    row.update(first_call_ms=t.first_call_s * 1000, compile_s=t.first_call_s - median if opt.compile else math.nan)
    row.update(nonfinite=not bool(torch.isfinite(t.output).all()), status="ok")
    return t.output


def add_fidelity(job: Job, rows: dict, outputs: dict, images: torch.Tensor, latents: torch.Tensor | None) -> None:
    """``lowp_psnr_vs_fp32``: each low-precision output against the fp32 VAE's, same mode and inputs.

    encode is compared in latent space (:func:`latent_psnr`); decode and roundtrip as images.
    """
    b, device = job.config.batch, torch.device(job.device)
    try:
        ref = load_for_bench(job, "fp32")
        x = from_uint8(images[:b]).to(device)
        enc = ref.encode(x) if {"encode", "roundtrip"} & outputs.keys() else None
        for op, out in outputs.items():
            if op == "encode":
                value = latent_psnr(enc.cpu(), out)
            elif op == "decode":
                value = image_psnr(ref.decode(latents[:b].to(device)).cpu(), out)
            else:
                value = image_psnr(ref.decode(enc).cpu(), out)
            rows[op]["lowp_psnr_vs_fp32"] = value
    except Exception as e:
        note = "no fp32 reference: " + ("out of memory" if is_oom(e) else message(e))
        for op in outputs:
            rows[op]["note"] = note
