"""Hydra applications behind ``python -m evalvae <command>``; each calls a plain function."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from evalvae.errors import EvalvaeError

log = logging.getLogger("evalvae")
CONFIG_PATH = "pkg://evalvae.conf"


def _call(func, cfg: DictConfig) -> None:
    """``func(cfg)``; an evalvae error, or an outcome with failed VAEs, exits with status 2."""
    try:
        outcome = func(cfg)
    except EvalvaeError as e:
        log.error("evalvae: %s", e)
        sys.exit(2)
    if getattr(outcome, "failed", None):
        sys.exit(2)


@hydra.main(config_path=CONFIG_PATH, config_name="run", version_base="1.3")
def run_app(cfg: DictConfig) -> None:
    from evalvae.run import run

    _call(run, cfg)


@hydra.main(config_path=CONFIG_PATH, config_name="ref", version_base="1.3")
def ref_app(cfg: DictConfig) -> None:
    from evalvae.reference import ref

    _call(ref, cfg)


@hydra.main(config_path=CONFIG_PATH, config_name="bench", version_base="1.3")
def bench_app(cfg: DictConfig) -> None:
    from evalvae.bench.runner import bench

    _call(bench, cfg)
