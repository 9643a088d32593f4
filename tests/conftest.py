"""Shared fixtures: offline hub, real assets (when $EVALVAE_TEST_ASSETS is set; required under CI=true), tiny stand-in models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub miss must fail at once, not retry for 20 s
os.environ.setdefault("TQDM_DISABLE", "1")
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # pytest-xdist runs one worker per core: each computes on one thread (torch, OpenMP, BLAS), or the
    # workers' thread pools oversubscribe the cores (a 2048-d eigendecomposition took 7x longer).
    # Set before numpy or torch is imported, which read these once.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests import prerequisites  # noqa: E402  (light: no torch, unlike tests.helpers)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets an empty evalvae cache (``$EVALVAE_CACHE``, inherited by the CLI subprocesses), so
    result chunks, latents and reference statistics never leak between tests or from a user's cache."""
    root = tmp_path_factory.mktemp("evalvae-cache")
    monkeypatch.setenv("EVALVAE_CACHE", str(root))
    monkeypatch.delenv("EVALVAE_WEIGHTS", raising=False)  # the metrics' weights folder is set by the tests that use it
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest, and steadiest on a shared machine, on one thread (thread start-up costs
    more than their work): ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def assets() -> Path:
    """The real test assets in ``$EVALVAE_TEST_ASSETS``: tests that need them skip when it is unset, and fail under CI=true."""
    return prerequisites.require_env_dir("EVALVAE_TEST_ASSETS")


@pytest.fixture(scope="session")
def real_weights() -> Path:
    """The real LPIPS backbones and FID Inception built by the assets' make-weights, in ``$EVALVAE_TEST_WEIGHTS``.

    Tests that need them skip when the variable is unset, and fail under CI=true.
    """
    path = prerequisites.require_env_dir(
        "EVALVAE_TEST_WEIGHTS", "python $EVALVAE_TEST_ASSETS/make-weights DIR builds them"
    )
    for f in (
        "lpips/alexnet_features.pth",
        "lpips/vgg16_features.pth",
        "fid/pt_inception-2015-12-05_torch-fidelity.pth",
    ):
        assert (path / f).is_file(), f"EVALVAE_TEST_WEIGHTS={path} lacks {f}; run make-weights into it"
    return path


@pytest.fixture(scope="session")
def taesd_family_dir(assets) -> Path:
    return assets / "weights" / "taesd-family"


@pytest.fixture(scope="session")
def taef2_dir(assets) -> Path:
    return assets / "weights" / "taef2"


@pytest.fixture(scope="session")
def tiny_kl_dir(tmp_path_factory) -> Path:
    """A tiny diffusers AutoencoderKL folder (2x downsampling, scaling 0.5, shift 0.1)."""
    from tests import helpers

    return helpers.save_tiny_kl(tmp_path_factory.mktemp("tiny-kl"))


@pytest.fixture(scope="session")
def tiny_ae_dir(tmp_path_factory) -> Path:
    """A tiny diffusers AutoencoderTiny folder (8x downsampling)."""
    from tests import helpers

    return helpers.save_tiny_autoencoder_tiny(tmp_path_factory.mktemp("tiny-ae"))


@pytest.fixture(scope="session")
def tiny_pth_dir(tmp_path_factory) -> Path:
    """A random TAEF2-layout .pth pair (32 channels, pool branches) named tiny_encoder/decoder.pth."""
    from tests import helpers

    return helpers.save_pth_pair(tmp_path_factory.mktemp("tiny-pth"), prefix="tiny", latent_channels=32, pool=True)


@pytest.fixture()
def image_dir(tmp_path) -> Path:
    """Six small RGB photos-like images (gradients plus noise) of mixed sizes."""
    from tests import helpers

    return helpers.write_images(tmp_path / "images")


@pytest.fixture(scope="session")
def golden_recon(tmp_path_factory) -> dict:
    """Two runs of two real-architecture tiny VAEs with their samples (``r32``, ``r48``; read, never
    written), their images, weights (``pth``, ``ae``), shared cache, the 32 px run's overrides and the
    passes its samples made (:func:`tests.golden.build_recon`)."""
    from tests import golden

    for facts in golden.golden(tmp_path_factory, "recon", golden.build_recon):
        yield {k: Path(v) if k not in ("overrides", "decoded") else v for k, v in facts.items()}
