"""VAE adapters: one interface (:class:`VAEAdapter`) over every autoencoder family."""

from __future__ import annotations

from collections.abc import Mapping

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evalvae.errors import ConfigError, EvalvaeError
from evalvae.vae.base import LatentSpace, VAEAdapter, state_dict_sha256

__all__ = ["LatentSpace", "VAEAdapter", "load_vae", "state_dict_sha256"]


def load_vae(name: str, spec: Mapping | DictConfig, *, device, cache_dir: str | None = None) -> VAEAdapter:
    """Instantiate the adapter that ``spec['_target_']`` names, loading its weights onto ``device``."""
    spec = OmegaConf.create(dict(spec)) if not isinstance(spec, DictConfig) else spec
    if "_target_" not in spec:
        raise ConfigError(f"vae.{name}._target_", None, hint="each VAE spec names its adapter class, e.g. evalvae.vae.kl.KLAdapter")
    try:
        return instantiate(spec, name=name, device=str(device), cache_dir=cache_dir, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, EvalvaeError):  # report our one-line message, not Hydra's wrapper
            raise e.__cause__ from None
        raise
