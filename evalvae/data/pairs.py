"""``dataset=pairs``: the reference images of two folders scored against each other, with no VAE.

The reference folder is the dataset (as ``dataset=folder``); the test folder is scored as the VAE
``test`` (:mod:`evalvae.vae.files`, matched by relative path and stem), which
:func:`evalvae.jobs.vaes.selected_vaes` adds. By default images are scored at their native size
(``crop=none``), so each test image must have its reference's size.
"""

from __future__ import annotations

from pathlib import Path

from evalvae.data.datasets import ImageDataset, folder
from evalvae.errors import ConfigError

TEST_VAE = "test"  # the name the test folder's scores have in every result table


def pairs(
    reference: str,
    test: str,
    resolution: int | None = None,
    crop: str = "none",
    small: str = "upscale",
    limit: int | None = None,
    name: str = "pairs",
) -> ImageDataset:
    """The images under ``reference``; ``test`` (a folder) is read by the ``test`` VAE."""
    for key, value in (("reference", reference), ("test", test)):
        if not isinstance(value, str) or not value or not Path(value).expanduser().is_dir():
            raise ConfigError(f"dataset.{key}", value, hint="a folder of images")
    return folder(reference, resolution=resolution, crop=crop, small=small, limit=limit, name=name)
