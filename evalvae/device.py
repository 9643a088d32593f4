"""Device and precision helpers shared by the run and bench jobs."""

from __future__ import annotations

import gc
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from evalvae.errors import ConfigError
from evalvae.vocab import DEVICES, DTYPE_NAMES

DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.float16, torch.bfloat16), strict=True))


def parse_dtype(name: str, argument: str = "dtype") -> torch.dtype:
    """Map ``fp32``/``fp16``/``bf16`` to a torch dtype."""
    if name not in DTYPES:
        raise ConfigError(argument, name, DTYPES)
    return DTYPES[name]


def resolve_device(name: str = "auto", argument: str = "device") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    kind = str(name).split(":")[0]
    if kind not in DEVICES:
        raise ConfigError(argument, name, DEVICES)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(argument, name, ["cpu", "auto"], hint="no CUDA device is visible to torch")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(argument, name, ["cpu", "auto"], hint="MPS is not available")
    return torch.device(name)


def to_channels_last(module: torch.nn.Module) -> None:
    """NHWC weights for ``module``'s 2-D convolutions (what ``channels_last=true`` speeds up). Unlike
    ``module.to(memory_format=torch.channels_last)``, a model with 3-D convolutions (a video VAE taking one
    frame) is accepted: their 5-D weights have no channels_last format and stay as they are."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd) and m.weight.dim() == 4:
            m.to(memory_format=torch.channels_last)


def _tf32_settings() -> list:
    """The float32-precision settings of CUDA's matmuls and cuDNN's convolutions and RNNs (torch 2.9+: each its
    ``fp32_precision``; before: the ``allow_tf32`` flags). Reading the old flags after the new API set them
    apart raises, so evalvae sets and reads them one way only."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(conv, "fp32_precision"):
        return [torch.backends.cuda.matmul, conv, torch.backends.cudnn.rnn]
    return []


def tf32_state() -> dict[str, bool]:
    """Whether CUDA's float32 matmuls and cuDNN's convolutions may round their inputs to TF32 now."""
    settings = _tf32_settings()
    if not settings:
        return {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    root = getattr(torch.backends, "fp32_precision", "ieee")  # what "none" defers to
    on = [(s.fp32_precision if s.fp32_precision != "none" else root) == "tf32" for s in settings]
    return {"matmul": on[0], "cudnn": on[1]}


def tf32_available(device: torch.device) -> bool:
    """Whether ``device`` has TF32 tensor cores (CUDA, compute capability 8.0 and up)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


@contextmanager
def fp32_math(device: torch.device, tf32: bool) -> Iterator[None]:
    """Float32 convolutions and matmuls on ``device`` in IEEE float32 (``tf32`` False) or TF32, restored after.

    PyTorch lets cuDNN run float32 convolutions in TF32 by default: a run in ``precision=fp32`` turns that off,
    so that its numbers are float32's. Nothing changes on other devices (no TF32 there).
    """
    if device.type != "cuda":
        yield
        return
    settings = _tf32_settings()
    if settings:
        before = [s.fp32_precision for s in settings]
        for s in settings:
            s.fp32_precision = "tf32" if tf32 else "ieee"
    else:
        before = [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        if settings:
            for s, b in zip(settings, before):
                s.fp32_precision = b
        else:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def host_copy(t):
    """``t`` on the host, without waiting for the device: a non-blocking copy into pinned memory from a CUDA
    tensor (valid once the device has reached it: an event recorded after it); anything else as it is."""
    if isinstance(t, torch.Tensor) and t.device.type == "cuda":
        return t.to("cpu", non_blocking=True)
    return t


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


_in_job = False


@contextmanager
def job_heap() -> Iterator[None]:
    """While a job runs, what outlives each :func:`release_memory` (modules, the job's own state) leaves
    the cyclic collector's view, so the next collection walks only what was made since: a dropped VAE
    is found in milliseconds, not the 0.2-0.3 s a walk over torch's and diffusers' objects takes.
    Reference counting still frees frozen objects; on exit they are all handed back to the collector."""
    global _in_job
    outer, _in_job = _in_job, True
    gc.freeze()
    try:
        yield
    finally:
        _in_job = outer
        if not outer:
            gc.unfreeze()


def release_memory(device: torch.device) -> None:
    """Collect garbage and hand cached CUDA blocks back, after a model is dropped."""
    gc.collect()
    if _in_job:
        gc.freeze()  # see job_heap
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA's max allocated since the last reset, else this process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux and bytes on macOS.
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


# CPU instruction-set flags (/proc/cpuinfo) that run bf16 arithmetic natively: without them PyTorch
# converts every bf16 operand in software, and convolutions are tens of times slower than in fp32
# (TAESD on 256 px photos on an AVX2-only core: 758 s in bf16 against 15 s in fp32)
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 AVX-512 / AMX; "bf16" is aarch64's


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The instruction-set flags of the first CPU listed in ``path`` (x86 ``flags``, aarch64 ``Features``);
    None where that cannot be read (not Linux)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool | None:
    """Whether this CPU has bf16 instructions; None where its flags cannot be read."""
    flags = cpu_flags() if flags is None else flags
    return None if flags is None else bool(flags & BF16_FLAGS)
