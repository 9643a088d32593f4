"""Typed schemas of the ``run`` (recon and t2i), ``bench`` and ``ref`` configs, checked once at the entry.

The schemas are dataclasses registered in Hydra's ConfigStore (``schema_run``, ``schema_bench``,
``schema_ref``). They hold types, choices and bounds only; every value stays in ``conf/*.yaml``.
A field without a value (``???``) is a key the config must have; one that defaults to None may be
absent (a section only some tasks have, such as ``t2i``).
Open-ended groups (``vae`` entries, ``dataset``, ``metrics`` entries, ``pipeline``, ``suite``) stay
dicts that their ``_target_`` classes validate, except for the fields every dataset has
(``resolution``, ``crop``, ``small``, ``limit``) and a VAE entry's ``dtype``.

They are checked after composition (:func:`validate`), not merged into the defaults list:

* Errors: merged at compose time, OmegaConf stops at the first bad value with a multi-line message
  (``Value 'x' of type 'str' could not be converted to Integer``, ``full_key``, ``object_type``)
  and exit status 1, and cannot state bounds. :func:`validate` collects every problem into one
  :class:`~evalvae.errors.ConfigError` naming each key, its value and the choices (exit status 2,
  as every other evalvae configuration error).
* Types: OmegaConf 2.3 has no unions of values or literals, so ``workers`` (a count or ``auto``)
  and ``progress`` (``auto``, true or false) could not be typed there; here they are.
* Composition is unchanged: ``--cfg job`` prints the composed config (even one that would fail
  validation, to inspect it), ``-m`` sweeps and ``+vae=...`` work as before, and
  ``++vae.X.f=v`` may still name a VAE that only other jobs of a sweep select. A struct-typed
  root would also carry every task's sections, so a recon run's ``config.yaml`` would hold
  ``t2i: null``, ``pipeline: null`` and ``suite: null``.

A misspelt key or group option fails inside Hydra, before any task function runs, so
:func:`check_overrides` reads the command line's overrides first and names the closest choices
("did you mean"). A key added to ``conf/run.yaml``, ``conf/bench.yaml`` or ``conf/ref.yaml`` goes
into its schema here too (the tests validate every shipped config).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from evalvae.errors import ConfigError

# The choices below are the domain's (evalvae.device.DTYPES and DEVICES, evalvae.data.transforms,
# evalvae.vae.base.MEMORY_MODES, evalvae.t2i.latents.MODES, evalvae.bench.grid); they are spelt
# out so that checking a command line never imports torch. tests/test_config_schema.py keeps them equal.


class DType(Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class TaskName(Enum):
    recon = "recon"
    t2i = "t2i"
    bench = "bench"
    ref = "ref"


class Crop(Enum):
    center = "center"
    none = "none"


class Small(Enum):
    upscale = "upscale"
    skip = "skip"


class Latents(Enum):
    run = "run"
    cache = "cache"


class Mode(Enum):
    plain = "plain"
    tiled = "tiled"
    sliced = "sliced"


class Op(Enum):
    encode = "encode"
    decode = "decode"
    roundtrip = "roundtrip"


class Isolate(Enum):
    auto = "auto"
    process = "process"
    none = "none"


DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
PROGRESS = ("auto", True, False)


def choices(enum: type[Enum]) -> list[str]:
    return [m.value for m in enum]


# Checks of fields that one annotation cannot type: None if ``value`` is fine, else ConfigError's
# ``choices`` and ``hint`` for the message.


def _device(value) -> dict | None:
    kind, _, index = str(value).partition(":")
    if kind in DEVICE_KINDS and (not index or (kind != "auto" and index.isdigit())):
        return None
    return {"choices": ["auto", "cpu", "cuda", "cuda:N", "mps"]}


def _workers(value) -> dict | None:
    if value == "auto" or (_is_int(value) and value >= 0):
        return None
    return {"hint": "a count of loader processes (0 = load in the main process) or auto"}


def _progress(value) -> dict | None:
    if any(value == p and type(value) is type(p) for p in PROGRESS):
        return None
    return {"choices": ["auto", "true", "false"]}


def _vae_entry(key: str, node, out: list[ConfigError]) -> None:
    """``vae.<name>``: a spec naming its adapter class, or field overrides for a VAE another job selects."""
    if not isinstance(node, DictConfig):
        out.append(ConfigError(key, node, hint="a VAE spec (+vae=NAME, conf/vae/NAME.yaml) or field overrides"))
        return
    _target(key, node, out, required=False)
    if _has(node, "dtype") and not OmegaConf.is_interpolation(node, "dtype"):  # ${dtype} is checked as dtype
        _check(f"{key}.dtype", _get(node, "dtype"), DType, {}, out)


def _metric_entry(key: str, node, out: list[ConfigError]) -> None:
    if isinstance(node, DictConfig):
        _target(key, node, out, required=False)
    elif node is not None:
        out.append(ConfigError(key, node, hint="a metric spec with _target_ (conf/metrics/*.yaml), or null"))


def _target(key: str, node, out: list[ConfigError], required: bool = True) -> None:
    """A spec that its ``_target_`` class validates: only the ``_target_`` itself is checked."""
    if not isinstance(node, DictConfig):
        out.append(ConfigError(key, node, hint="a mapping with _target_ (a dotted class or function path)"))
    elif _has(node, "_target_") or required:
        target = _get(node, "_target_")
        if not (isinstance(target, str) and target):
            out.append(ConfigError(f"{key}._target_", target, hint="a dotted class or function path"))
        _required_values(node, key, out)


def _required_values(node: DictConfig, prefix: str, out: list[ConfigError]) -> None:
    """The ``???`` values of a spec its ``_target_`` validates (``pipeline.source``, ``suite.path``)."""
    out.extend(_required(_join(prefix, name)) for name in node if OmegaConf.is_missing(node, name))


def _required(key: str) -> ConfigError:
    return ConfigError(key, "???", hint=f"a value is required: set {key}=...")


def entries(check: Callable) -> Any:
    """A mapping field whose every value is checked by ``check(key, value, problems)``."""
    return field(default=MISSING, metadata={"entry": check})


def at_least(minimum: int, hint: str = "") -> Any:
    """An integer field (or a list of them) bounded below."""
    return field(default=MISSING, metadata={"min": minimum, "hint": hint})


def checked(check: Callable) -> Any:
    """A field that ``check(value)`` accepts (None) or rejects (ConfigError's ``choices`` and ``hint``)."""
    return field(default=MISSING, metadata={"check": check})


@dataclass
class TaskSchema:
    _target_: str = MISSING  # a subclass of evalvae.jobs.task.Task
    name: TaskName = MISSING


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
        if _get(node, "crop") == "center" and "resolution" in node and _get(node, "resolution") is None:
            out.append(ConfigError(f"{key}.resolution", None, hint="an integer of at least 8 pixels with crop=center"))


@dataclass
class MetricsSchema:
    OPEN: ClassVar[bool] = True
    EXTRA: ClassVar[Callable] = _metric_entry
    quantize: bool = MISSING


@dataclass
class CacheSchema:
    latents: bool = MISSING  # reuse encoded latents across runs (cache.latents=false turns it off)


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
        repeats, least = _get(node, "repeats"), _get(node, "min_repeats")
        if _is_int(repeats) and _is_int(least) and least > repeats:
            out.append(ConfigError(f"{key}.min_repeats", least, hint=f"at most {key}.repeats={repeats}"))
        if _get(node, "compile") is True and _get(node, "warmup") == 0:
            out.append(ConfigError(f"{key}.warmup", 0, hint=f"at least 1 with {key}.compile=true (compilation)"))


@dataclass
class CommonSchema:
    """Keys every app has."""

    dataset: DatasetSchema = MISSING
    device: str = checked(_device)
    cache_dir: str | None = MISSING
    task: TaskSchema = MISSING


@dataclass
class RunSchema(CommonSchema):
    """``conf/run.yaml`` with ``task=recon`` or ``task=t2i`` (the latter adds ``t2i``, ``pipeline``, ``suite``)."""

    vae: dict[str, Any] = entries(_vae_entry)
    metrics: MetricsSchema = MISSING
    dtype: DType = MISSING
    batch_size: int = at_least(1, "a positive integer")
    workers: Any = checked(_workers)
    channels_last: bool = MISSING
    seed: int = MISSING
    progress: Any = checked(_progress)
    report: bool = MISSING
    resume: str | None = None  # a run directory to continue
    cache: CacheSchema | None = None
    t2i: T2ISchema | None = None
    pipeline: dict[str, Any] | None = field(default=None, metadata={"target": True})
    suite: dict[str, Any] | None = field(default=None, metadata={"target": True})

    @staticmethod
    def cross(node: DictConfig, key: str, out: list[ConfigError]) -> None:
        task = _get(node, "task")
        if isinstance(task, DictConfig) and _get(task, "name") == "t2i":
            for section in ("t2i", "pipeline", "suite"):
                if _get(node, section) in (None, _ABSENT):
                    out.append(ConfigError(section, None, hint="task=t2i needs it (conf/task/t2i.yaml)"))


@dataclass
class BenchSchema(CommonSchema):
    """``conf/bench.yaml``."""

    vae: dict[str, Any] = entries(_vae_entry)
    dtype: DType = MISSING
    bench: BenchGridSchema = MISSING


@dataclass
class RefSchema(CommonSchema):
    """``conf/ref.yaml``."""

    metrics: MetricsSchema = MISSING
    batch_size: int = at_least(1, "a positive integer")
    workers: Any = checked(_workers)
    progress: Any = checked(_progress)
    crop_multiple: int = at_least(1, "the downsampling factor of the VAEs to compare (8 for every shipped VAE)")


SCHEMAS = {"run": RunSchema, "bench": BenchSchema, "ref": RefSchema}
for _app, _schema in SCHEMAS.items():
    ConfigStore.instance().store(name=f"schema_{_app}", node=_schema)


def did_you_mean(name: str, known: Iterable[str]) -> list[str]:
    """The names of ``known`` close to ``name`` (difflib ratio >= 0.75), best first, and only those
    nearly as close as the best (within 0.1), so ``taesd4`` suggests taesd and taesd3 but not taesdxl."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.75)
    ratio = {c: difflib.SequenceMatcher(None, name, c).ratio() for c in close}
    return [c for c in close if ratio[c] >= ratio[close[0]] - 0.1] if close else []


class UnknownName(ConfigError):
    """A key or config-group option that does not exist, with the closest ones ("did you mean")."""

    def __init__(self, kind: str, name: str, given: str, known: Iterable[str], list_all: bool = False):
        known = sorted(set(known))
        super().__init__(name, given, known)
        self.suggestions = did_you_mean(name, known)
        msg = f"unknown {kind} {name!r} in {given}"
        if self.suggestions:
            msg += f"; did you mean {', '.join(self.suggestions)}?"
        if list_all or not self.suggestions:
            msg += f" (choose one of {', '.join(known)})" if known else f" (there are no {kind}s)"
        self.args = (msg,)


class InvalidConfig(ConfigError):
    """Several problems at once; ``problems`` holds each, and the message lists them one a line."""

    def __init__(self, problems: list[ConfigError], app: str):
        first = problems[0]
        super().__init__(first.argument, first.value, first.choices)
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        self.args = (f"{len(problems)} problems in the {app} configuration:\n{lines}",)


def raise_problems(problems: list[ConfigError], app: str) -> None:
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InvalidConfig(problems, app)


def validate(cfg: DictConfig, app: str) -> DictConfig:
    """Check the composed ``cfg`` of ``app`` (run, bench or ref) against its schema; return it unchanged.

    Raises :class:`~evalvae.errors.ConfigError` naming the key, the value and the choices, or
    :class:`InvalidConfig` listing every problem when there are several.
    """
    if app not in SCHEMAS:
        raise ConfigError("app", app, SCHEMAS)
    problems: list[ConfigError] = []
    _node(cfg, SCHEMAS[app], "", problems)
    raise_problems(list({str(p): p for p in problems}.values()), app)  # a repeated list value once
    return cfg


class _Unresolved:
    def __init__(self, error: Exception):
        self.reason = str(error).splitlines()[0] if str(error) else type(error).__name__

    def __repr__(self) -> str:
        return f"<unresolvable: {self.reason}>"


_ABSENT = object()


def _has(node: DictConfig, key) -> bool:
    return key in node or OmegaConf.is_missing(node, key)  # `in` alone is False for a ??? value


def _get(node, key):
    """``node[key]`` resolved; MISSING for ``???``, an :class:`_Unresolved` for a broken interpolation."""
    if not _has(node, key):
        return _ABSENT
    if OmegaConf.is_missing(node, key):
        return MISSING
    try:
        return node[key]
    except OmegaConfBaseException as e:
        return _Unresolved(e)


def _join(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _node(node: DictConfig, schema: type, prefix: str, out: list[ConfigError]) -> None:
    hints = get_type_hints(schema)
    known = {f.name: f for f in fields(schema)}
    for name, f in known.items():
        value = _get(node, name)
        if value is _ABSENT:
            if f.default is MISSING and f.default_factory is NO_DEFAULT:
                out.append(ConfigError(_join(prefix, name), None, hint="a required key, missing from the config"))
            continue
        _check(_join(prefix, name), value, hints[name], f.metadata, out)
    for name in node:
        if name in known or name == "hydra":
            continue
        key = _join(prefix, name)
        if getattr(schema, "EXTRA", None) is not None:
            schema.EXTRA(key, _get(node, name), out)
        elif not getattr(schema, "OPEN", False):
            given = f"{key}={_get(node, name)!r}"
            out.append(UnknownName("key", key, given, [_join(prefix, k) for k in known]))
        elif OmegaConf.is_missing(node, name):  # an open mapping's own field, such as dataset.path
            out.append(_required(key))
    cross = getattr(schema, "cross", None)
    if cross is not None:
        cross(node, prefix, out)


def _optional(tp) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, UnionType):
        rest = [a for a in get_args(tp) if a is not NoneType]
        return rest[0], len(rest) < len(get_args(tp))
    return tp, False


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(tp, meta) -> str:
    if meta.get("hint"):
        return meta["hint"]
    if tp is int:
        return f"an integer >= {meta['min']}" if "min" in meta else "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    return "a mapping" if is_dataclass(tp) or get_origin(tp) is dict else "a value"


def _check(key: str, value, tp, meta, out: list[ConfigError]) -> None:
    """Append to ``out`` what is wrong with ``value`` as the annotation ``tp`` with ``meta`` constraints."""
    tp, optional = _optional(tp)
    if value is MISSING:
        out.append(_required(key))
        return
    if isinstance(value, _Unresolved):
        out.append(ConfigError(key, value, hint="the interpolation cannot be resolved"))
        return
    if value is None:
        if not optional:
            hint = _describe(tp, meta)
            out.append(ConfigError(key, None, choices(tp)) if _is_enum(tp) else ConfigError(key, None, hint=hint))
        return
    if is_dataclass(tp):
        if isinstance(value, DictConfig):
            _node(value, tp, key, out)
        else:
            out.append(ConfigError(key, value, hint="a mapping"))
    elif get_origin(tp) is list:
        items = list(value) if isinstance(value, ListConfig) else [value]
        if not items:
            out.append(ConfigError(key, [], hint="give at least one value"))
        elif len(set(map(str, items))) != len(items):
            out.append(ConfigError(key, items, hint="values must not repeat"))
        for item in items:
            _check(key, item, get_args(tp)[0], meta, out)
    elif get_origin(tp) is dict:
        if not isinstance(value, DictConfig):
            out.append(ConfigError(key, value, hint="a mapping"))
        elif meta.get("target"):
            _target(key, value, out)
        elif meta.get("entry"):
            for name in value:
                meta["entry"](_join(key, name), _get(value, name), out)
    elif _is_enum(tp):
        if not (isinstance(value, str) and value in choices(tp)):
            out.append(ConfigError(key, value, choices(tp)))
    elif tp is bool:
        if not isinstance(value, bool):
            out.append(ConfigError(key, value, ["true", "false"]))
    elif tp is int:
        if not _is_int(value) or value < meta.get("min", value):
            out.append(ConfigError(key, value, hint=_describe(tp, meta)))
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or ("above" in meta and value <= meta["above"]):
            out.append(ConfigError(key, value, hint=_describe(tp, meta)))
    elif tp is str and not isinstance(value, str):
        quote = f"; quote it as {key}='{value}'" if isinstance(value, (int, float)) else ""
        out.append(ConfigError(key, value, hint=_describe(tp, meta) + quote))
    elif "check" in meta:
        wrong = meta["check"](value)
        if wrong:
            out.append(ConfigError(key, value, **wrong))


def _is_enum(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, Enum)


# -- the command line, before Hydra composes ------------------------------------------------------


@cache
def config_groups() -> dict[str, tuple[str, ...]]:
    """Config group -> its option names (``conf/<group>/*.yaml``), outside ``hydra/``."""
    groups = {}
    for d in files("evalvae.conf").iterdir():
        if d.is_dir() and d.name != "hydra":
            names = sorted(p.name[: -len(".yaml")] for p in d.iterdir() if p.name.endswith(".yaml"))
            if names:
                groups[d.name] = tuple(names)
    return groups


def schema_keys(schema: type) -> dict[str, Any]:
    """Field name -> its annotation."""
    return get_type_hints(schema)


def check_overrides(overrides: list[str], app: str) -> None:
    """Check Hydra ``overrides`` of ``app`` for misspelt keys and group options before Hydra composes.

    A top-level key must be one of the app's schema, a key below a typed section one of its fields,
    and an option of a config group (``+vae=NAME``, ``dataset=NAME``, ``dataset@t2i.reference=NAME``)
    a file of that group. Overrides Hydra cannot parse are left to Hydra's own message.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return
    problems: list[ConfigError] = []
    groups = _searched_groups(parsed)
    for o in parsed:
        key = o.key_or_group
        if key.startswith("hydra") or o.is_delete():
            continue
        if key in config_groups():
            if groups is None:
                continue  # options may come from a search path this check cannot list
            for name in _option_names(o):
                if name not in groups[key]:
                    problems.append(UnknownName(key, name, o.input_line, groups[key], list_all=True))
            continue
        _check_path(key.split("."), SCHEMAS[app], o.input_line, problems)
    raise_problems(problems, app)


def _searched_groups(parsed) -> dict[str, set[str]] | None:
    """The options of each group in ``conf/`` and in the folders of ``hydra.searchpath=[file://DIR]``;
    None if the search path names anything else (``pkg://``), whose options are not listed here."""
    groups = {g: set(names) for g, names in config_groups().items()}
    for o in parsed:
        if o.key_or_group != "hydra.searchpath":
            continue
        value = o.value()
        for entry in value if isinstance(value, list) else [value]:
            if not (isinstance(entry, str) and entry.startswith("file://")):
                return None
            root = Path(entry[len("file://") :])
            for group, names in groups.items():
                names.update(p.stem for p in (root / group).glob("*.yaml"))
    return groups


def _option_names(override) -> list[str]:
    """The option names an override of a config group selects (one, a list, or a sweep's choices)."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    if isinstance(value, ChoiceSweep):
        value = value.list
    elif not isinstance(value, (list, str)):
        return []  # glob() and other sweeps select from what exists; null deselects
    items = value if isinstance(value, list) else [value]
    return [str(v) for v in items if v is not None and not isinstance(v, (list, dict))]


def _check_path(parts: list[str], schema: type, given: str, out: list[ConfigError]) -> None:
    """A dotted key down the typed sections of ``schema``; stops at an open mapping."""
    prefix = ""
    for part in parts:
        keys = schema_keys(schema)
        if part not in keys:
            if not getattr(schema, "OPEN", False):
                name = _join(prefix, part)
                out.append(UnknownName("key", name, given, [_join(prefix, k) for k in keys]))
            return
        tp, _ = _optional(keys[part])
        if not is_dataclass(tp):
            return
        schema, prefix = tp, _join(prefix, part)
