"""Composing evalvae's configs from Python (notebooks, scripts, tests), as the CLI would."""

from __future__ import annotations

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from evalvae.errors import EvalvaeError
from evalvae.vocab import PRECISION_DTYPE

# ``${evalvae.dtype:${precision}}`` in conf/run.yaml: the dtype a precision runs the VAEs in (an unknown
# precision leaves fp32, and the schema names the bad value)
OmegaConf.register_new_resolver("evalvae.dtype", lambda p: PRECISION_DTYPE.get(p, "fp32"), replace=True)


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
