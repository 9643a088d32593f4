"""The command line's overrides checked before Hydra composes: a misspelt key or config-group option
stops there with the closest choices ("did you mean"), since Hydra's own composition error names none."""

from __future__ import annotations

from dataclasses import is_dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, get_type_hints

from evalvae.errors import ConfigError
from evalvae.jobs.checking import UnknownName, key_path, optional_type, raise_problems
from evalvae.jobs.schema import SCHEMAS


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
                name = key_path(prefix, part)
                out.append(UnknownName("key", name, given, [key_path(prefix, k) for k in keys]))
            return
        tp, _ = optional_type(keys[part])
        if not is_dataclass(tp):
            return
        schema, prefix = tp, key_path(prefix, part)
