"""What produced a number: the versions of evalvae and of the libraries that compute it, and the machine.

Every run records :func:`software` and :func:`environment` in its protocol file (``metrics.json``,
``latents.json``, ``bench.json``), and the cache keys hold :func:`versions` of the libraries that
compute what they store (:mod:`evalvae.jobs.store`, :mod:`evalvae.metrics.refstats`), so a number
is never served from a cache filled by another version. Versions are read from the installed
packages' metadata (``importlib.metadata``): reading one imports nothing.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# The packages whose versions a run records (metrics.json's "software"): evalvae, torch and the
# libraries that load VAEs (diffusers), resize images (Pillow; torchvision's transforms), score
# them (scikit-image, lpips, torch-fidelity) and do the arithmetic (numpy, scipy).
PACKAGES = (
    "evalvae",
    "torch",
    "torchvision",
    "diffusers",
    "Pillow",
    "scikit-image",
    "lpips",
    "torch-fidelity",
    "torchmetrics",
    "numpy",
    "scipy",
)


@functools.cache
def version(package: str) -> str | None:
    """The installed version of ``package`` (its distribution name, as pip knows it), or None when absent."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        if package == "evalvae":  # run from a checkout that was never installed
            import evalvae

            return evalvae.__version__
        return None


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """``{package: version or None}`` for each of ``packages``, in their order."""
    return {p: version(p) for p in packages}


@functools.cache
def source_commit() -> dict | None:
    """The git commit evalvae's code was run from, and whether its files differ from it; None outside a
    git checkout of evalvae (an installed wheel) or without git."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=5, check=True)
        return done.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != package.parent:
            return None  # evalvae sits inside another project's repository
        commit = git("rev-parse", "HEAD")
        modified = bool(git("status", "--porcelain", "--untracked-files=no", "--", "."))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "modified": modified}


def software() -> dict:
    """What a run records of its software: :data:`PACKAGES`' versions (null when not installed),
    evalvae's source commit (null when not run from a git checkout) and Python's version."""
    return {**versions(), "evalvae_source": source_commit(), "python": platform.python_version()}


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "Apple MPS" if device.type == "mps" else cpu_name()


def environment(device: torch.device) -> dict:
    """Where the numbers were computed: the device and its name, the CUDA and cuDNN versions torch was
    built with (null in a CPU build), torch's intra-op threads, and on CUDA the TF32 switches that
    change fp32 results."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env = {
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        from evalvae.device import tf32_state

        env["tf32"] = tf32_state()
    return env
