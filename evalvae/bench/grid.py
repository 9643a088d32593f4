"""The benchmark grid (which configurations run) and the options of how each one is measured."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

from omegaconf import DictConfig, ListConfig, OmegaConf

from evalvae.vocab import BENCH_OPS


@dataclass(frozen=True)
class Options:
    """How each configuration is measured (``bench.*`` in conf/bench.yaml)."""

    ops: tuple[str, ...] = BENCH_OPS
    warmup: int = 2
    repeats: int = 10
    min_repeats: int = 3
    max_seconds: float | None = 10.0
    channels_last: bool = True
    compile: bool = False
    compile_backend: str = "inductor"
    fidelity: bool = True
    tile_size: int | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "ops": list(self.ops)}


@dataclass(frozen=True)
class Config:
    """One point of the grid; it yields one row per op."""

    vae: str
    resolution: int
    batch: int
    dtype: str
    mode: str


@dataclass
class Grid:
    resolutions: list[int]
    batch_sizes: list[int]
    dtypes: list[str]
    modes: list[str]
    options: Options = field(default_factory=Options)
    isolate: str = "auto"
    seed: int = 0

    def configs(self, vae: str) -> list[Config]:
        """Every configuration of ``vae``, by resolution, batch, mode, then dtype as listed."""
        grid = itertools.product(self.resolutions, self.batch_sizes, self.modes, self.dtypes)
        return [Config(vae, r, b, d, m) for r, b, m, d in grid]

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> Grid:
        """The grid of ``cfg.bench`` as the schema checked it (:class:`evalvae.jobs.schema.BenchGridSchema`,
        which names the option, the value and what it accepts); a single value is a list of one."""
        b = cfg.bench
        options = Options(
            ops=tuple(_list(b.ops)),
            warmup=b.warmup,
            repeats=b.repeats,
            min_repeats=b.min_repeats,
            max_seconds=None if b.max_seconds is None else float(b.max_seconds),
            channels_last=b.channels_last,
            compile=b.compile,
            compile_backend=str(b.compile_backend),
            fidelity=b.fidelity,
            tile_size=b.tile_size,
        )
        lists = {k: _list(b[k]) for k in ("resolutions", "batch_sizes", "dtypes", "modes")}
        return cls(**lists, options=options, isolate=b.isolate, seed=b.seed)


def _list(value) -> list:
    """A list option; a single value is a list of one."""
    value = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
    return value if isinstance(value, list) else [value]
