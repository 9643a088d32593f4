"""Composing evalvae's configs from Python (notebooks, scripts, tests), as the CLI would."""

from __future__ import annotations

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from evalvae.errors import EvalvaeError


def compose(overrides: list[str] | None = None, config_name: str = "run") -> DictConfig:
    """The packaged ``conf/`` composed with Hydra ``overrides``, e.g. ``["+vae=taef2", "dataset=folder"]``."""
    with initialize_config_module(config_module="evalvae.conf", version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides or []))


def instantiate(spec, **kwargs):
    """``hydra.utils.instantiate``, except that evalvae's own one-line errors come out unwrapped."""
    try:
        return hydra_instantiate(spec, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, EvalvaeError):
            raise e.__cause__ from None
        raise
