"""Shared fixtures: offline hub, real assets (when $EVALVAE_TEST_ASSETS is set), tiny stand-in models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub miss must fail at once, not retry for 20 s
os.environ.setdefault("TQDM_DISABLE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests import helpers  # noqa: E402


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets an empty evalvae cache (``$EVALVAE_CACHE``, inherited by the CLI subprocesses), so
    result chunks, latents and reference statistics never leak between tests or from a user's cache."""
    root = tmp_path_factory.mktemp("evalvae-cache")
    monkeypatch.setenv("EVALVAE_CACHE", str(root))
    monkeypatch.delenv("EVALVAE_WEIGHTS", raising=False)  # the metrics' weights folder is set by the tests that use it
    return root


@pytest.fixture(scope="session")
def assets() -> Path:
    """The real test assets; tests that need them skip only when the variable is unset."""
    root = os.environ.get("EVALVAE_TEST_ASSETS")
    if not root:
        pytest.skip("EVALVAE_TEST_ASSETS is not set")
    path = Path(root)
    assert path.is_dir(), f"EVALVAE_TEST_ASSETS={root} is not a directory"
    return path


@pytest.fixture(scope="session")
def real_weights() -> Path:
    """The real LPIPS backbones and FID Inception built by the assets' make-weights; skipped only when unset."""
    root = os.environ.get("EVALVAE_TEST_WEIGHTS")
    if not root:
        pytest.skip("EVALVAE_TEST_WEIGHTS is not set (python $EVALVAE_TEST_ASSETS/make-weights DIR builds them)")
    path = Path(root)
    for f in (
        "lpips/alexnet_features.pth",
        "lpips/vgg16_features.pth",
        "fid/pt_inception-2015-12-05_torch-fidelity.pth",
    ):
        assert (path / f).is_file(), f"EVALVAE_TEST_WEIGHTS={root} lacks {f}; run make-weights into it"
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
    return helpers.save_tiny_kl(tmp_path_factory.mktemp("tiny-kl"))


@pytest.fixture(scope="session")
def tiny_ae_dir(tmp_path_factory) -> Path:
    """A tiny diffusers AutoencoderTiny folder (8x downsampling)."""
    return helpers.save_tiny_autoencoder_tiny(tmp_path_factory.mktemp("tiny-ae"))


@pytest.fixture(scope="session")
def tiny_pth_dir(tmp_path_factory) -> Path:
    """A random TAEF2-layout .pth pair (32 channels, pool branches) named tiny_encoder/decoder.pth."""
    return helpers.save_pth_pair(tmp_path_factory.mktemp("tiny-pth"), prefix="tiny", latent_channels=32, pool=True)


@pytest.fixture()
def image_dir(tmp_path) -> Path:
    """Six small RGB photos-like images (gradients plus noise) of mixed sizes."""
    return helpers.write_images(tmp_path / "images")
