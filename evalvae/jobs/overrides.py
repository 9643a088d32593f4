"""The command line's overrides checked before Hydra composes: a misspelt key or config-group option
stops there with the closest choices ("did you mean"), since Hydra's own composition error names none.

Keys inside the open sections (``dataset.*``, ``metrics.*``, ``vae.<name>.*``) are checked against the
config the command line selects (its group options composed) and the parameters of the class or
function each entry's ``_target_`` names: a key that nothing reads is refused, ``+`` or not, rather
than added and silently ignored; Hydra's own advice for a missing key ("use +dataset.pth") would add
exactly that.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import fields, is_dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import get_type_hints

from omegaconf import DictConfig, OmegaConf

from evalvae.errors import ConfigError
from evalvae.jobs.checking import UnknownName, did_you_mean, key_path, optional_type, raise_problems
from evalvae.jobs.schema import SCHEMAS, DatasetSchema, MetricsSchema

ENTRY_SECTIONS = ("dataset", "metrics", "vae")  # open sections whose keys are checked against the selected config
# parameters of the targets that evalvae itself passes, never a config key
PASSED_BY_EVALVAE = frozenset({"name", "device", "cache_dir", "module", "weights"})


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
    if not problems and groups is not None:
        problems += _check_entries(parsed, app)
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
        keys = get_type_hints(schema)  # field name -> its annotation
        if part not in keys:
            if not getattr(schema, "OPEN", False):
                name = key_path(prefix, part)
                out.append(UnknownName("key", name, given, [key_path(prefix, k) for k in keys]))
            return
        tp, _ = optional_type(keys[part])
        if not is_dataclass(tp):
            return
        schema, prefix = tp, key_path(prefix, part)


# -- keys inside dataset, metrics and vae entries ------------------------------------------------
def _problem(key: str, given: str, message: str) -> ConfigError:
    problem = ConfigError(key, given)
    problem.args = (message,)
    return problem


class UnreadKey(ConfigError):
    """A key below ``prefix`` that the config does not hold and that no one reads; ``known``: those read."""

    def __init__(self, prefix: str, key: str, given: str, known: Iterable[str], where: str = ""):
        known = sorted(set(known))
        full = f"{prefix}.{key}"
        super().__init__(full, given, [f"{prefix}.{k}" for k in known])
        self.suggestions = [f"{prefix}.{k}" for k in did_you_mean(key, known)]
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        self.args = (f"unknown key {full!r} in {given}{hint} ({where or prefix} reads: {', '.join(known)})",)


def _check_entries(parsed, app: str) -> list[ConfigError]:
    """Keys below ``dataset``, ``metrics`` and ``vae.<name>`` that the composed config (group options only)
    lacks, or that a ``+`` adds although no one reads them. Nothing is said where the composition
    cannot be done here (a glob sweep, a group option placed elsewhere, an error Hydra will report)."""
    entries = [
        o
        for o in parsed
        if not o.is_delete() and o.key_or_group.split(".")[0] in ENTRY_SECTIONS and "." in o.key_or_group
    ]
    if not entries:
        return []
    composed = _compose_selection(parsed, app)
    if composed is None:
        return []
    cfg, choices = composed
    inline = _inline_entries(parsed)
    problems: list[ConfigError] = []
    for o in entries:
        parts = o.key_or_group.split(".")
        section, name = parts[0], parts[1]
        if section == "vae":
            if name in inline["vae"] or len(parts) < 3:
                continue  # a VAE defined on the command line: its _target_ judges its keys
            if name not in (cfg.get("vae") or {}):
                problems.append(_unselected_vae(name, o.input_line, list(cfg.get("vae") or {})))
                continue
            _check_key(o, cfg.vae[name], f"vae.{name}", parts[2], problems)
        elif section == "dataset" and isinstance(cfg.get("dataset"), DictConfig):
            _check_key(o, cfg.dataset, "dataset", name, problems, schema=DatasetSchema)
        elif section == "metrics" and isinstance(cfg.get("metrics"), DictConfig):
            if name in inline["metrics"]:
                continue
            node = cfg.metrics
            if name in node and isinstance(node[name], DictConfig) and len(parts) > 2:
                _check_key(o, node[name], f"metrics.{name}", parts[2], problems)
            elif name not in node and name not in _fields(MetricsSchema):
                known = [*node, *_fields(MetricsSchema)]
                problem = UnreadKey("metrics", name, o.input_line, known, f"metrics={choices.get('metrics')}")
                elsewhere = [f"metrics={m}" for m in config_groups().get("metrics", ()) if name in _metrics_of(m)]
                if elsewhere:
                    problem.args = (f"{problem.args[0]}; {name} is in {', '.join(elsewhere)}",)
                problems.append(problem)
    return problems


def _check_key(o, node: DictConfig, prefix: str, key: str, out: list[ConfigError], schema: type | None = None) -> None:
    """``prefix.key`` set by override ``o``: in the composed ``node``, or a parameter of its ``_target_``."""
    full = f"{prefix}.{key}"
    present = key in node or OmegaConf.is_missing(node, key)
    if present:
        # Hydra: "Could not append to config. An item is already at ..." (a key below it may well be new)
        if o.is_add() and o.key_or_group == full:
            hint = f"{full} is in the config already: set it without '+' ({o.input_line[1:]})"
            out.append(_problem(full, o.input_line, hint))
        return
    params = target_parameters(node.get("_target_"))
    if params is None:
        return  # the target takes any keyword (or cannot be found here): its own error will say
    readable = ({*params, *(_fields(schema) if schema else ())} - PASSED_BY_EVALVAE) | set(node)
    if key not in readable:
        where = f"{prefix} ({node.get('_target_')})"
        out.append(UnreadKey(prefix, key, o.input_line, readable - {"_target_"}, where))
    elif not (o.is_add() or o.is_force_add()):  # Hydra refuses to set a key the config does not hold
        full = o.key_or_group
        out.append(_problem(full, o.input_line, f"{full} is not in the config yet: add it with +{o.input_line}"))


def _unselected_vae(name: str, given: str, selected: list[str]) -> ConfigError:
    from evalvae.jobs.vaes import available_vaes

    known = available_vaes()
    if name in known:
        chosen = f" (selected: {', '.join(selected)})" if selected else ""
        return _problem(f"vae.{name}", given, f"VAE '{name}' of {given} is not selected: add +vae={name}{chosen}")
    problem = UnknownName("VAE", name, given, [*selected, *known])
    problem.args = (
        f"unknown VAE {name!r} in {given}"
        + (f"; did you mean {', '.join(problem.suggestions)}?" if problem.suggestions else "")
        + (f" (selected: {', '.join(selected)})" if selected else " (no VAE is selected: +vae=NAME)"),
    )
    return problem


def _compose_selection(parsed, app: str) -> tuple[DictConfig, dict] | None:
    """The app's config composed with the command line's group options (every choice of a sweep at once)
    and search path, without its other overrides, and the option chosen in each group; None where that
    cannot be done here."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.override_parser.types import ChoiceSweep
    from omegaconf import open_dict

    selection = []
    for o in parsed:
        if o.key_or_group == "hydra.searchpath":
            selection.append(o.input_line)
            continue
        if o.key_or_group not in config_groups():
            continue
        if o.package is not None and o.key_or_group in ENTRY_SECTIONS and o.package != o.key_or_group:
            return None  # an option placed elsewhere (dataset@t2i.reference is fine: not a top-level key)
        value = o.value()
        if o.is_sweep_override():
            if not isinstance(value, ChoiceSweep):
                return None  # glob() and range(): the options are found by Hydra
            prefix = "+" if o.is_add() else "++" if o.is_force_add() else ""
            package = f"@{o.package}" if o.package else ""
            selection.append(f"{prefix}{o.key_or_group}{package}=[{','.join(map(str, value.list))}]")
        else:
            selection.append(o.input_line)
    try:
        with initialize_config_module(config_module="evalvae.conf", version_base="1.3"):
            cfg = hydra_compose(app, overrides=selection, return_hydra_config=True)
    except Exception:  # Hydra reports its own composition errors
        return None
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def _inline_entries(parsed) -> dict[str, set[str]]:
    """Entries the command line defines itself (``+vae.X._target_=...``, ``+vae.X={...}``), by section."""
    out: dict[str, set[str]] = {"vae": set(), "metrics": set()}
    for o in parsed:
        parts = o.key_or_group.split(".")
        defines = (len(parts) == 2 and isinstance(o.value(), dict)) or parts[2:] == ["_target_"]
        if parts[0] in out and defines and not o.is_delete():
            out[parts[0]].add(parts[1])
    return out


def target_parameters(target) -> set[str] | None:
    """The keyword parameters the class or function ``target`` (a dotted path) takes, following a class's
    ``**kwargs`` up its bases; None when it takes any keyword or cannot be imported."""
    if not isinstance(target, str) or not target:
        return None
    try:
        from hydra.utils import get_object

        obj = get_object(target)
    except Exception:
        return None
    functions = [c.__init__ for c in obj.__mro__ if c is not object] if inspect.isclass(obj) else [obj]
    names: set[str] = set()
    for fn in functions:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return None
        names.update(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self")
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def _fields(schema: type) -> list[str]:
    return [f.name for f in fields(schema)]


def _metrics_of(option: str, seen: frozenset = frozenset()) -> set[str]:
    """The entries of ``conf/metrics/<option>.yaml`` and of the options its defaults list names."""
    try:
        node = OmegaConf.load(files("evalvae.conf").joinpath("metrics", f"{option}.yaml"))
    except Exception:
        return set()
    keys = {k for k in node if k != "defaults"}
    for d in node.get("defaults") or []:
        if isinstance(d, str) and d != "_self_" and d not in seen:
            keys |= _metrics_of(d, seen | {option})
    return keys
