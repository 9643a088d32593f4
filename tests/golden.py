"""Golden runs: real runs built once per test session and read by the tests of what comes after a run
(the report, samples, results). Built once across pytest-xdist workers (under a file lock, in the
session's shared temporary folder), with the models they use inside them.

A test never writes into a golden run: it copies what it changes. Each golden folder's digest is taken
when it is built and checked again when the session ends, so a test that writes into one fails there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import tiny_taef2

RECORD = "golden.json"


def digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes below ``root`` (its record aside)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != RECORD:
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def golden(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], dict]) -> Iterator[dict]:
    """The facts ``build(folder)`` returned for golden run ``name``, building it first if no worker has;
    after the session, checks that no test wrote into it."""
    base = factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "golden" / name
    root.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(root) + ".lock"):
        record = root / RECORD
        if not record.is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            facts = build(root)
            tmp = record.with_suffix(".tmp")
            tmp.write_text(json.dumps({"facts": facts, "digest": digest(root)}), encoding="utf-8")
            tmp.replace(record)
    saved = json.loads(record.read_text(encoding="utf-8"))
    yield saved["facts"]
    assert digest(root) == saved["digest"], f"a test wrote into the golden run {root}: copy what you change"


def sample_passes(mp: pytest.MonkeyPatch) -> list[dict]:
    """Each pass the samples post-step makes (patched with ``mp``): the VAE, the images of its batches
    and how many images it encoded."""
    from evalvae.recon import samples

    passes, real = [], samples.reconstruct

    def spy(vae, batches, *args, **kwargs):
        batches, encode = list(batches), vae.encode
        passes.append({"vae": vae.name, "images": [i for b in batches for g in b.groups for i in g.ids], "encoded": 0})

        def counted(x, seeds=None):
            passes[-1]["encoded"] += len(x)
            return encode(x, seeds)

        vae.encode = counted
        yield from real(vae, batches, *args, **kwargs)
        vae.encode = encode

    mp.setattr(samples, "reconstruct", spy)
    return passes


def tiny_pair(images: Path, pth: Path, ae: Path, cache: Path, resolution: int = 32) -> list[str]:
    """``run`` overrides: two real-architecture tiny VAEs read from files (TAEF2's layout as ``taef2``, a
    diffusers AutoencoderTiny as ``taesd``) on ``images``, with ``cache_dir`` last."""
    return [
        "+vae=[taef2,taesd]",
        *tiny_taef2(pth),
        f"vae.taesd.source={ae}",
        "dataset=folder",
        f"dataset.path={images}",
        f"dataset.resolution={resolution}",
        "workers=0",
        "progress=false",
        f"cache_dir={cache}",
    ]


def build_recon(root: Path) -> dict:
    """Two runs of the tiny pair with their samples, at 32 and 48 px, sharing a cache."""
    from evalvae.run import run
    from tests import helpers

    images = helpers.write_images(root / "images")
    pth = helpers.save_pth_pair(root / "pth", prefix="tiny", latent_channels=32, pool=True)
    ae = helpers.save_tiny_autoencoder_tiny(root / "ae")
    overrides = tiny_pair(images, pth, ae, root / "cache")
    with pytest.MonkeyPatch.context() as mp:
        passes = sample_passes(mp)
        run(helpers.compose_run(overrides), out_dir=root / "r32")
    run(helpers.compose_run(tiny_pair(images, pth, ae, root / "cache", 48)), out_dir=root / "r48")
    paths = {k: str(root / k) for k in ("images", "pth", "ae", "cache", "r32", "r48")}
    return {**paths, "overrides": overrides, "decoded": passes}
