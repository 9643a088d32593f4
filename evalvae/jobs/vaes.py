"""Which VAEs a job evaluates, and loading each with the precision policy and failure recording."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from evalvae.data.pairs import TEST_VAE
from evalvae.device import reset_peak_memory
from evalvae.errors import EvalvaeError
from evalvae.jobs.policy import load_for_run
from evalvae.jobs.selection import available_vaes, did_you_mean, resolve
from evalvae.vae import VAEAdapter, load_vae
from evalvae.vae.files import FilesAdapter

log = logging.getLogger(__name__)


class NoVAESelected(EvalvaeError):
    pass


def selected_vaes(cfg: DictConfig) -> dict[str, DictConfig]:
    """The VAEs of this job (:func:`evalvae.jobs.selection.resolve`: named variants, the task's default
    selection, ``vae_dir``). Entries that are only field overrides (``++vae.X.f=v``) for a VAE that another
    job of a sweep selects are ignored, with a note outside a sweep. ``dataset=pairs`` adds the VAE
    ``test``: its test folder's images (:mod:`evalvae.vae.files`)."""
    selection = resolve(cfg)
    vaes = dict(selection.specs)
    if not _in_sweep():  # in a sweep, the jobs that select it use them (the command line was checked)
        known = available_vaes()
        for name in selection.ignored:
            log.info(
                "vae.%s: not selected in this job (no +vae=%s); its overrides are ignored%s",
                name,
                name,
                "" if name in known else did_you_mean(str(name), known),
            )
    test = (cfg.get("dataset") or {}).get("test")
    if test is not None:  # dataset=pairs: the test folder is scored as a VAE (evalvae.data.pairs)
        vaes[TEST_VAE] = OmegaConf.create({"_target_": f"{FilesAdapter.__module__}.FilesAdapter", "path": str(test)})
    if not vaes:
        raise NoVAESelected(
            "no VAE selected; pick one with +vae=NAME or several with +vae=[A,B] (python -m evalvae vaes "
            "lists them). Available: " + ", ".join(available_vaes())
        )
    return vaes


def _in_sweep() -> bool:
    """Whether this job is one of a Hydra sweep (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@dataclass
class Loaded:
    """A VAE a job loaded, with the seconds its loading took."""

    name: str
    vae: VAEAdapter
    load_s: float


def load(name: str, spec: Mapping, *, device: torch.device, cache_dir: str | None, policy: bool = True) -> Loaded:
    """Load one VAE: with the run's precision policy (:func:`evalvae.jobs.policy.load_for_run`, fp32 as
    ``vae.<name>.upcast`` says), or exactly as asked with ``policy=False`` (the bench measures
    reduced precision itself). The device's peak-memory counter starts afresh."""
    reset_peak_memory(device)
    start = time.perf_counter()
    loader = load_for_run if policy else load_vae
    vae = loader(name, spec, device=device, cache_dir=cache_dir)
    return Loaded(name, vae, time.perf_counter() - start)
