"""Typed schemas of the ``run`` (recon and t2i), ``bench``, ``ref`` and ``latents`` configs, checked once at the entry.

The schemas are dataclasses (:data:`SCHEMAS`, one per command). They hold types, choices and bounds
only; every value stays in ``conf/*.yaml``.
A field without a value (``???``) is a key the config must have; one that defaults to None may be
absent (a section only some tasks have, such as ``t2i``).
Open-ended groups (``vae`` entries, ``dataset``, ``metrics`` entries, ``pipeline``, ``suite``) stay
dicts that their ``_target_`` classes validate, except for the fields every dataset has
(``resolution``, ``crop``, ``small``, ``limit``) and a VAE entry's ``dtype``.

They are checked after composition (:func:`validate`), not merged into the defaults list: OmegaConf
would stop at the first bad value with a multi-line message and exit status 1, could not state bounds
or type ``workers`` (a count or ``auto``) and ``progress`` (``auto``, true or false), and a struct-typed
root would carry every task's sections into each ``config.yaml``. Here every problem is collected into
one :class:`~evalvae.errors.ConfigError` naming each key, its value and the choices (exit status 2);
``--cfg job``, ``-m`` sweeps and ``++vae.X.f=v`` for a VAE only other jobs select work as before.

The CLI checks a config once, before the task's modules are imported (:mod:`evalvae.cli`); :func:`evalvae.run.run`
checks a config composed in Python the same way, and the tasks trust what was checked. A misspelt key or
group option fails inside Hydra, before any task function runs, so :func:`evalvae.jobs.overrides.check_overrides`
reads the command line's overrides first and names the closest choices ("did you mean"). A key added to a
command's ``conf/*.yaml`` goes into its schema here too (the tests validate every shipped config).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig, OmegaConf

from evalvae.errors import ConfigError
from evalvae.jobs.checking import (
    ABSENT,
    at_least,
    check_node,
    check_target,
    check_value,
    checked,
    entries,
    has_key,
    is_int,
    raise_problems,
    value_of,
)
from evalvae.vocab import (
    BENCH_OPS,
    CROPS,
    DEVICES,
    DTYPE_NAMES,
    ISOLATION,
    MEMORY_MODES,
    PRECISIONS,
    ROBUSTNESS_CHECKS,
    SMALL,
    T2I_LATENTS,
)


def _choices(name: str, values) -> type[Enum]:
    """An Enum whose members are ``values`` (member name = value), for a field's annotation."""
    return Enum(name, [(v, v) for v in values])


# The choices are the domain's, spelt once in evalvae.vocab (which imports no torch, so checking a
# command line never does).
DType = _choices("DType", DTYPE_NAMES)
Precision = _choices("Precision", PRECISIONS)
Crop = _choices("Crop", CROPS)
Small = _choices("Small", SMALL)
Latents = _choices("Latents", T2I_LATENTS)
Mode = _choices("Mode", MEMORY_MODES)
Op = _choices("Op", BENCH_OPS)
Isolate = _choices("Isolate", ISOLATION)
Check = _choices("Check", ROBUSTNESS_CHECKS)
ReducedDType = _choices("ReducedDType", [d for d in DTYPE_NAMES if d != "fp32"])  # robustness.dtypes


class TaskName(Enum):
    recon = "recon"
    t2i = "t2i"
    bench = "bench"
    ref = "ref"
    latents = "latents"
    robustness = "robustness"


PROGRESS = ("auto", True, False)


# Checks of fields that one annotation cannot type: None if ``value`` is fine, else ConfigError's
# ``choices`` and ``hint`` for the message.


def _device(value) -> dict | None:
    kind, _, index = str(value).partition(":")
    if kind in DEVICES and (not index or (kind != "auto" and index.isdigit())):
        return None
    return {"choices": ["auto", "cpu", "cuda", "cuda:N", "mps"]}


def _workers(value) -> dict | None:
    if value == "auto" or (is_int(value) and value >= 0):
        return None
    return {"hint": "a count of loader processes (0 = load in the main process) or auto"}


def _batch_size(value) -> dict | None:
    if value == "auto" or (is_int(value) and value >= 1):
        return None
    return {"hint": "a positive integer (images per batch), or auto (the largest batch that fits the device's memory)"}


def _progress(value) -> dict | None:
    if any(value == p and type(value) is type(p) for p in PROGRESS):
        return None
    return {"choices": ["auto", "true", "false"]}


def _vae_dir(value) -> dict | None:
    if isinstance(value, str) and Path(value).expanduser().is_dir():
        return None
    what = "not a folder" if isinstance(value, str) and Path(value).expanduser().exists() else "no such folder"
    return {"hint": f"{what}; give a folder holding <name>_encoder / <name>_decoder (.safetensors or .pth)"}


def _vae_entry(key: str, node, out: list[ConfigError]) -> None:
    """``vae.<name>``: a spec naming its adapter class, or field overrides for a VAE another job selects."""
    if not isinstance(node, DictConfig):
        out.append(ConfigError(key, node, hint="a VAE spec (+vae=NAME, conf/vae/NAME.yaml) or field overrides"))
        return
    check_target(key, node, out, required=False)
    if has_key(node, "dtype") and not OmegaConf.is_interpolation(node, "dtype"):  # ${dtype} is checked as dtype
        check_value(f"{key}.dtype", value_of(node, "dtype"), DType, {}, out)


def _metric_entry(key: str, node, out: list[ConfigError]) -> None:
    if isinstance(node, DictConfig):
        check_target(key, node, out, required=False)
    elif node is not None:
        out.append(ConfigError(key, node, hint="a metric spec with _target_ (conf/metrics/*.yaml), or null"))


@dataclass
class TaskSchema:
    _target_: str = MISSING  # a subclass of evalvae.jobs.task.Task
    name: TaskName = MISSING
    default_vaes: list[str] | None = None  # recon: evaluated when no VAE is selected (conf/task/recon.yaml)


@dataclass
class DatasetSchema:
    """The fields every dataset has; the others (``path``, ``captions``, ...) are its ``_target_``'s."""

    OPEN: ClassVar[bool] = True
    _target_: str = MISSING
    name: str = MISSING
    resolution: int | None = at_least(8, "an integer of at least 8 pixels")
    crop: Crop = MISSING
    small: Small = MISSING
    limit: int | None = at_least(1, "a positive integer, or null for all images")

    @staticmethod
    def cross(node: DictConfig, key: str, out: list[ConfigError]) -> None:
        if value_of(node, "crop") == "center" and "resolution" in node and value_of(node, "resolution") is None:
            out.append(ConfigError(f"{key}.resolution", None, hint="an integer of at least 8 pixels with crop=center"))


@dataclass
class MetricsSchema:
    OPEN: ClassVar[bool] = True
    EXTRA: ClassVar[Callable] = _metric_entry
    quantize: bool = MISSING
    # latents quantized to N bits before decoding (evalvae.recon.rate checks the upper bound, 16)
    latent_bits: int | None = field(default=None, metadata={"min": 1, "hint": "an integer from 1 to 16, or null"})


@dataclass
class ProtocolSchema:
    """A published protocol preset (``conf/protocol/*.yaml``): what it is called and where it comes from."""

    name: str = MISSING
    title: str = MISSING
    source: str = MISSING


@dataclass
class CacheSchema:
    latents: bool = MISSING  # each encoder's latents per batch, reused by later runs
    results: bool = MISSING  # each VAE's finished batches (rows and features)


@dataclass
class SamplesSchema:
    typical: bool = MISSING  # the image of median mean score
    worst: int = at_least(0, "a count of images per VAE (0 for none)")
    best: int = at_least(0, "a count of images per VAE (0 for none)")


@dataclass
class T2ISchema:
    reference_vae: str | None = MISSING
    latents: Latents = MISSING
    save_images: bool = MISSING
    batch_size: int = at_least(1, "a positive integer (latents per VAE decode call)")
    clip_score: dict[str, Any] | None = field(default=MISSING, metadata={"target": True})
    reference: DatasetSchema | None = None  # dataset@t2i.reference=NAME


@dataclass
class BenchGridSchema:
    resolutions: list[int] = at_least(8)  # a single value is a list of one, in every list here
    batch_sizes: list[int] = at_least(1)
    dtypes: list[DType] = MISSING
    modes: list[Mode] = MISSING
    ops: list[Op] = MISSING
    warmup: int = at_least(0)
    repeats: int = at_least(1)
    min_repeats: int = at_least(1)
    max_seconds: float | None = field(
        default=MISSING, metadata={"above": 0, "hint": "a positive number of seconds, or null for no limit"}
    )
    channels_last: bool = MISSING
    compile: bool = MISSING
    compile_backend: str = MISSING
    tile_size: int | None = at_least(16)
    fidelity: bool = MISSING
    isolate: Isolate = MISSING
    seed: int = at_least(0)
    plots: bool = MISSING

    @staticmethod
    def cross(node: DictConfig, key: str, out: list[ConfigError]) -> None:
        repeats, least = value_of(node, "repeats"), value_of(node, "min_repeats")
        if is_int(repeats) and is_int(least) and least > repeats:
            out.append(ConfigError(f"{key}.min_repeats", least, hint=f"at most {key}.repeats={repeats}"))
        if value_of(node, "compile") is True and value_of(node, "warmup") == 0:
            out.append(ConfigError(f"{key}.warmup", 0, hint=f"at least 1 with {key}.compile=true (compilation)"))


@dataclass
class CommonSchema:
    """Keys every app has."""

    dataset: DatasetSchema = MISSING
    device: str = checked(_device)
    cache_dir: str | None = MISSING
    task: TaskSchema = MISSING
    strict: bool = True  # false: an incomplete job (a VAE failed, scored nothing; a metric unavailable) exits 0


@dataclass
class LoaderSchema(CommonSchema):
    """Keys every app that streams a dataset through a loader has."""

    batch_size: int = at_least(1, "a positive integer")
    workers: Any = checked(_workers)
    progress: Any = checked(_progress)


@dataclass
class VaeJobSchema(CommonSchema):
    """Keys every app that loads VAEs has."""

    vae: dict[str, Any] = entries(_vae_entry)
    vae_dir: str | None = field(default=None, metadata={"check": _vae_dir})  # the tiny VAEs' weights folder
    dtype: DType = MISSING


@dataclass
class RunSchema(LoaderSchema, VaeJobSchema):
    """``conf/run.yaml`` with ``task=recon`` or ``task=t2i`` (the latter adds ``t2i``, ``pipeline``, ``suite``)."""

    metrics: MetricsSchema = MISSING
    batch_size: Any = checked(_batch_size)
    precision: Precision = MISSING
    compile: bool = MISSING
    compile_backend: str = MISSING
    channels_last: bool = MISSING
    seed: int = MISSING
    report: bool = MISSING
    resume: str | None = None  # a run directory to continue
    cache: CacheSchema | None = None
    samples: SamplesSchema | None = None  # recon: images saved for the report's grids
    protocol: ProtocolSchema | None = None  # protocol=NAME: a published protocol preset (conf/protocol/)
    t2i: T2ISchema | None = None
    pipeline: dict[str, Any] | None = field(default=None, metadata={"target": True})
    suite: dict[str, Any] | None = field(default=None, metadata={"target": True})

    @staticmethod
    def cross(node: DictConfig, key: str, out: list[ConfigError]) -> None:
        task = value_of(node, "task")
        if isinstance(task, DictConfig) and value_of(task, "name") == "t2i":
            for section in ("t2i", "pipeline", "suite"):
                if value_of(node, section) in (None, ABSENT):
                    out.append(ConfigError(section, None, hint="task=t2i needs it (conf/task/t2i.yaml)"))


@dataclass
class BenchSchema(VaeJobSchema):
    """``conf/bench.yaml``."""

    bench: BenchGridSchema = MISSING


@dataclass
class RefSchema(LoaderSchema):
    """``conf/ref.yaml``."""

    metrics: MetricsSchema = MISSING
    crop_multiple: int = at_least(1, "the downsampling factor of the VAEs to compare (8; 32 for dc-ae-f32c32)")


@dataclass
class LatentOptionsSchema:
    noise: list[float] = field(default=MISSING, metadata={"above": 0, "hint": "a positive multiple of the latent std"})
    seed: int = at_least(0)
    histogram_bins: int = at_least(2)
    spectrum_bins: int = at_least(2)
    plots: bool = MISSING


@dataclass
class RobustnessChecksSchema:
    checks: list[Check] = MISSING
    tile_size: int = at_least(16, "the tile side in image pixels (a multiple of each VAE's downsampling factor)")
    dtypes: list[ReducedDType] = MISSING
    fp16_on_cpu: bool = MISSING
    bf16_on_cpu: bool | None = None
    resolutions: list[int] = at_least(8)
    plots: bool = MISSING


@dataclass
class LatentsSchema(LoaderSchema, VaeJobSchema):
    """``conf/latents.yaml``."""

    latents: LatentOptionsSchema = MISSING


@dataclass
class RobustnessSchema(LoaderSchema, VaeJobSchema):
    """``conf/robustness.yaml``."""

    metrics: MetricsSchema = MISSING
    channels_last: bool = MISSING
    report: bool = MISSING
    robustness: RobustnessChecksSchema = MISSING


SCHEMAS = {
    "run": RunSchema,
    "bench": BenchSchema,
    "ref": RefSchema,
    "latents": LatentsSchema,
    "robustness": RobustnessSchema,
}


def validate(cfg: DictConfig, app: str | None = None) -> DictConfig:
    """Check the composed ``cfg`` of ``app`` (a key of :data:`SCHEMAS`; by default the command whose
    ``task.name`` it holds, else ``run``) against its schema; return it unchanged.

    Raises :class:`~evalvae.errors.ConfigError` naming the key, the value and the choices, or
    :class:`~evalvae.jobs.checking.InvalidConfig` listing every problem when there are several.
    """
    if app is None:
        task = cfg.get("task")
        app = task.get("name") if isinstance(task, DictConfig) else None
        app = app if app in SCHEMAS else "run"
    if app not in SCHEMAS:
        raise ConfigError("app", app, SCHEMAS)
    problems: list[ConfigError] = []
    check_node(cfg, SCHEMAS[app], "", problems)
    raise_problems(list({str(p): p for p in problems}.values()), app)  # a repeated list value once
    return cfg
