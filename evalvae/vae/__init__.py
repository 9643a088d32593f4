"""VAE adapters: one interface (:class:`VAEAdapter`) over every autoencoder family."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from evalvae.config import instantiate
from evalvae.errors import ConfigError
from evalvae.vae.base import LatentSpace, VAEAdapter

__all__ = ["LatentSpace", "VAEAdapter", "load_vae"]


def load_vae(name: str, spec: Mapping | DictConfig, *, device, cache_dir: str | None = None) -> VAEAdapter:
    """Instantiate the adapter that ``spec['_target_']`` names, loading its weights onto ``device``."""
    spec = OmegaConf.create(dict(spec)) if not isinstance(spec, DictConfig) else spec
    if "_target_" not in spec:
        raise ConfigError(
            f"vae.{name}._target_", None, hint="each VAE spec names its adapter class, e.g. evalvae.vae.kl.KLAdapter"
        )
    return instantiate(spec, name=name, device=str(device), cache_dir=cache_dir, _convert_="all")
