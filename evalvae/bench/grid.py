"""The benchmark grid (which configurations run) and the options of how each one is measured."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

from omegaconf import DictConfig, ListConfig, OmegaConf

from evalvae.device import DTYPES
from evalvae.errors import ConfigError, check_choice
from evalvae.vocab import BENCH_OPS, ISOLATION, MEMORY_MODES


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
        """Validate ``cfg.bench``; each error names the option, the value and what it accepts."""
        b = cfg.bench
        options = Options(
            ops=tuple(_choices("bench.ops", b.ops, BENCH_OPS)),
            warmup=_int("bench.warmup", b.warmup, 1 if b.compile else 0),
            repeats=_int("bench.repeats", b.repeats, 1),
            min_repeats=_int("bench.min_repeats", b.min_repeats, 1),
            max_seconds=None if b.max_seconds is None else _positive("bench.max_seconds", b.max_seconds),
            channels_last=_bool("bench.channels_last", b.channels_last),
            compile=_bool("bench.compile", b.compile),
            compile_backend=str(b.compile_backend),
            fidelity=_bool("bench.fidelity", b.fidelity),
            tile_size=None if b.tile_size is None else _int("bench.tile_size", b.tile_size, 16),
        )
        if options.min_repeats > options.repeats:
            raise ConfigError("bench.min_repeats", options.min_repeats, hint=f"at most bench.repeats={options.repeats}")
        return cls(
            resolutions=[_int("bench.resolutions", r, 8) for r in _list("bench.resolutions", b.resolutions)],
            batch_sizes=[_int("bench.batch_sizes", n, 1) for n in _list("bench.batch_sizes", b.batch_sizes)],
            dtypes=_choices("bench.dtypes", b.dtypes, DTYPES),
            modes=_choices("bench.modes", b.modes, MEMORY_MODES),
            options=options,
            isolate=check_choice("bench.isolate", b.isolate, ISOLATION),
            seed=_int("bench.seed", b.seed, 0),
        )


def _list(argument: str, value) -> list:
    """A list option; a single value is a list of one."""
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(argument, value, hint="give at least one value")
    if len(set(map(str, items))) != len(items):
        raise ConfigError(argument, value, hint="values must not repeat")
    return items


def _choices(argument: str, value, choices) -> list[str]:
    return [check_choice(argument, v, choices) for v in _list(argument, value)]


def _int(argument: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(argument, value, hint=f"an integer >= {minimum}")
    return value


def _positive(argument: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(argument, value, hint="a positive number of seconds, or null for no limit")
    return float(value)


def _bool(argument: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(argument, value, [True, False])
    return value
