"""Builders for tiny models, images and composed configs used across the tests."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def compose_run(overrides: list[str], config_name: str = "run", report: bool = False):
    """The real ``conf/`` composed with ``overrides``, as the CLI would see it.

    The end-of-run report is off unless asked for: it has its own tests, and costs seconds per run.
    """
    from evalvae.config import compose

    if config_name == "run" and not report:
        overrides = [*overrides, "report=false"]
    return compose(overrides, config_name)


IDENTITY = "tests.run_standins.Identity"
# No report images: tests/recon/test_samples.py covers them; they cost a decode pass and PNG writes per run,
# and a rerun in a new directory loads each VAE again for them.
NO_SAMPLES = ["samples.typical=false", "samples.worst=0", "samples.best=0"]


def standin(name: str, target: str = IDENTITY, **params) -> list[str]:
    """The overrides that add VAE ``name`` built from class ``target`` with ``params``."""
    return [f"+vae.{name}._target_={target}", *(f"+vae.{name}.{k}={v}" for k, v in params.items())]


def tiny_taef2(pth, plus: str = "") -> list[str]:
    """The overrides that make ``taef2`` the random TAEF2-layout pair in ``pth`` (:func:`save_pth_pair`
    with prefix ``tiny``); ``plus="++"`` for a sweep's jobs."""
    return [f"{plus}vae.taef2.source={pth}", f"{plus}vae.taef2.sha256=null", f"{plus}vae.taef2.weights_prefix=tiny"]


def run_args(image_dir, out, *extra) -> list[str]:
    """``run`` on the images in ``image_dir`` at 32 px on the CPU, into ``out`` (the last argument)."""
    return [
        "run",
        "dataset=folder",
        f"dataset.path={image_dir}",
        "dataset.resolution=32",
        "device=cpu",
        "workers=0",
        "report=false",
        *extra,
        f"hydra.run.dir={out}",
    ]


def save_tiny_kl(
    path: Path, latent_channels: int = 4, blocks: int = 2, scaling: float = 0.5, shift: float = 0.1, seed: int = 0
) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=(8,) * blocks,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=scaling,
        shift_factor=shift,
    )
    model.save_pretrained(path)
    return path


def save_tiny_autoencoder_tiny(path: Path, latent_channels: int = 4, seed: int = 0) -> Path:
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    model = AutoencoderTiny(
        latent_channels=latent_channels,
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    model.save_pretrained(path)
    return path


def save_pth_pair(path: Path, prefix: str, latent_channels: int = 32, pool: bool = True, seed: int = 0) -> Path:
    from evalvae.vae.taesd import TinyAutoencoder

    torch.manual_seed(seed)
    model = TinyAutoencoder(latent_channels, pool).half()
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.encoder.state_dict(), path / f"{prefix}_encoder.pth")
    torch.save(model.decoder.state_dict(), path / f"{prefix}_decoder.pth")
    return path


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random image with some texture: closer to a photo than white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in rng.uniform(0, 3, 3)], -1)
    img = 127.5 + 90 * base + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).round().astype(np.uint8)


def kodak_crops(n: int = 8, side: int = 256) -> torch.Tensor:
    """``(n, 3, side, side)`` float64 pixels: the centre crops of the first ``n`` Kodak photos."""
    from tests.prerequisites import require_env_dir

    root = require_env_dir("EVALVAE_TEST_ASSETS", "the real test assets") / "images" / "kodak"
    out = []
    for path in sorted(root.glob("kodim*.png"))[:n]:
        a = np.asarray(Image.open(path).convert("RGB"))
        top, left = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
        out.append(torch.from_numpy(a[top : top + side, left : left + side].copy()).permute(2, 0, 1))
    return torch.stack(out).double()


def write_images(root: Path, sizes=((40, 56), (48, 48), (64, 40), (36, 50), (50, 70), (44, 44))) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        ext = ".jpg" if i % 2 else ".png"
        Image.fromarray(photo(h, w, seed=i)).save(root / f"img{i:02d}{ext}", quality=95)
    return root


def evalvae_cli(
    args: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m evalvae`` from this checkout in a new interpreter (``env``: variables to add).

    Only for what one process cannot show (import laziness, signals, torchrun): :func:`evalvae_main` is
    seconds faster."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TQDM_DISABLE="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "evalvae", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@dataclass
class CliResult:
    """What :func:`evalvae_main` saw: as :class:`subprocess.CompletedProcess` names it."""

    returncode: int
    stdout: str
    stderr: str


def evalvae_main(args: list, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """``evalvae ARGS`` in this process, through the real entry point (``evalvae.__main__.main``), from
    ``cwd`` with the variables ``env`` added: its exit status, stdout and stderr.

    The command configures logging as it would in its own process (pytest's handlers are set aside
    meanwhile); the handlers it installs are taken down afterwards, and Hydra, the working directory and
    the environment are restored."""
    from hydra.core.global_hydra import GlobalHydra

    from evalvae.__main__ import main

    root = logging.getLogger()
    handlers, level, argv, here, environ = root.handlers[:], root.level, sys.argv[:], os.getcwd(), dict(os.environ)
    for h in handlers:  # the command sets up its own (Hydra's job logging, or logging.basicConfig)
        root.removeHandler(h)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        os.environ.update(env or {})
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(list(map(str, args)))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
        sys.argv = argv
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
        GlobalHydra.instance().clear()
    return CliResult(code, out.getvalue(), err.getvalue())


class TinyExtractor:
    """A cheap, deterministic stand-in feature extractor (8x8 pooled pixels through a fixed projection).

    ``calls`` counts images seen, per process, so tests can tell a cache hit from a recomputation.
    """

    calls = 0
    dim = 24
    name = "tiny-test-extractor"

    def __init__(self, **_):
        g = torch.Generator().manual_seed(1234)
        self.w = torch.randn(3 * 8 * 8, self.dim, generator=g, dtype=torch.float64) / 8

    def to(self, device):
        return self

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        TinyExtractor.calls += len(images)
        x = torch.nn.functional.adaptive_avg_pool2d(images.double().cpu() / 255, 8).flatten(1)
        return torch.tanh(x @ self.w * 4).numpy()

    def identity(self) -> dict:
        return {"name": self.name, "weights_sha256": "fixed-seed-1234", "resize": "adaptive average pool to 8x8"}


def reference_entries(cache: Path) -> list[Path]:
    """The reference-statistics entries of ``cache`` (:mod:`evalvae.metrics.refstats`), sorted."""
    return sorted((Path(cache) / "refstats").glob("??/*.safetensors"))


def read_entry(path: Path) -> tuple[dict, dict]:
    """An entry of the content-keyed store as ``({name: numpy array}, metadata)``."""
    from evalvae.store import Store

    tensors, meta = Store(path.parent.parent).read(path.stem)
    return {k: v.numpy() for k, v in tensors.items()}, meta


def write_entry(path: Path, arrays: dict, meta: dict) -> None:
    """Rewrite an entry of the content-keyed store (with a valid checksum) from numpy arrays."""
    from evalvae.store import Store

    Store(path.parent.parent).write(
        path.stem, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, meta
    )
