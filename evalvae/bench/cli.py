"""The Hydra application behind ``python -m evalvae bench``; it calls :func:`evalvae.bench.runner.bench`."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from evalvae.cli import CONFIG_PATH
from evalvae.errors import EvalvaeError

log = logging.getLogger("evalvae")


@hydra.main(config_path=CONFIG_PATH, config_name="bench", version_base="1.3")
def bench_app(cfg: DictConfig) -> None:
    from evalvae.bench.runner import bench

    try:
        outcome = bench(cfg)
    except EvalvaeError as e:
        log.error("evalvae: %s", e)
        sys.exit(2)
    if outcome.failed:
        sys.exit(2)
