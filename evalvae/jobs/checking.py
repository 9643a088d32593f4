"""Checking a composed config against a dataclass schema: every problem with its key, value and choices.

A schema field's annotation gives the type (bool, int, float, str, an Enum of choices, a list, a
mapping, a nested dataclass, ``X | None``); its metadata the bounds (:func:`at_least`), a check
of its own (:func:`checked`) or a check of each entry of a mapping (:func:`entries`). A dataclass
with ``OPEN = True`` accepts keys it does not name (a dataset's own options); ``EXTRA`` checks them
and a static ``cross(node, key, out)`` the relations between fields.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import field, fields, is_dataclass
from enum import Enum
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from evalvae.errors import ConfigError


def choices(enum: type[Enum]) -> list[str]:
    return [m.value for m in enum]


def entries(check: Callable) -> Any:
    """A mapping field whose every value is checked by ``check(key, value, problems)``."""
    return field(default=MISSING, metadata={"entry": check})


def at_least(minimum: int, hint: str = "") -> Any:
    """An integer field (or a list of them) bounded below."""
    return field(default=MISSING, metadata={"min": minimum, "hint": hint})


def checked(check: Callable) -> Any:
    """A field that ``check(value)`` accepts (None) or rejects (ConfigError's ``choices`` and ``hint``)."""
    return field(default=MISSING, metadata={"check": check})


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


def check_target(key: str, node, out: list[ConfigError], required: bool = True) -> None:
    """A spec that its ``_target_`` class validates: only the ``_target_`` itself is checked."""
    if not isinstance(node, DictConfig):
        out.append(ConfigError(key, node, hint="a mapping with _target_ (a dotted class or function path)"))
    elif has_key(node, "_target_") or required:
        target = value_of(node, "_target_")
        if not (isinstance(target, str) and target):
            out.append(ConfigError(f"{key}._target_", target, hint="a dotted class or function path"))
        required_values(node, key, out)


def required_values(node: DictConfig, prefix: str, out: list[ConfigError]) -> None:
    """The ``???`` values of a spec its ``_target_`` validates (``pipeline.source``, ``suite.path``)."""
    out.extend(required(key_path(prefix, name)) for name in node if OmegaConf.is_missing(node, name))


def required(key: str) -> ConfigError:
    return ConfigError(key, "???", hint=f"a value is required: set {key}=...")


class Unresolved:
    def __init__(self, error: Exception):
        self.reason = str(error).splitlines()[0] if str(error) else type(error).__name__

    def __repr__(self) -> str:
        return f"<unresolvable: {self.reason}>"


ABSENT = object()


def has_key(node: DictConfig, key) -> bool:
    return key in node or OmegaConf.is_missing(node, key)  # `in` alone is False for a ??? value


def value_of(node, key):
    """``node[key]`` resolved; MISSING for ``???``, an :class:`Unresolved` for a broken interpolation."""
    if not has_key(node, key):
        return ABSENT
    if OmegaConf.is_missing(node, key):
        return MISSING
    try:
        return node[key]
    except OmegaConfBaseException as e:
        return Unresolved(e)


def key_path(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def check_node(node: DictConfig, schema: type, prefix: str, out: list[ConfigError]) -> None:
    hints = get_type_hints(schema)
    known = {f.name: f for f in fields(schema)}
    for name, f in known.items():
        value = value_of(node, name)
        if value is ABSENT:
            if f.default is MISSING and f.default_factory is NO_DEFAULT:
                out.append(ConfigError(key_path(prefix, name), None, hint="a required key, missing from the config"))
            continue
        check_value(key_path(prefix, name), value, hints[name], f.metadata, out)
    for name in node:
        if name in known or name == "hydra":
            continue
        key = key_path(prefix, name)
        if getattr(schema, "EXTRA", None) is not None:
            schema.EXTRA(key, value_of(node, name), out)
        elif not getattr(schema, "OPEN", False):
            given = f"{key}={value_of(node, name)!r}"
            out.append(UnknownName("key", key, given, [key_path(prefix, k) for k in known]))
        elif OmegaConf.is_missing(node, name):  # an open mapping's own field, such as dataset.path
            out.append(required(key))
    cross = getattr(schema, "cross", None)
    if cross is not None:
        cross(node, prefix, out)


def optional_type(tp) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, UnionType):
        rest = [a for a in get_args(tp) if a is not NoneType]
        return rest[0], len(rest) < len(get_args(tp))
    return tp, False


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def describe(tp, meta) -> str:
    if meta.get("hint"):
        return meta["hint"]
    if tp is int:
        return f"an integer >= {meta['min']}" if "min" in meta else "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    return "a mapping" if is_dataclass(tp) or get_origin(tp) is dict else "a value"


def check_value(key: str, value, tp, meta, out: list[ConfigError]) -> None:
    """Append to ``out`` what is wrong with ``value`` as the annotation ``tp`` with ``meta`` constraints."""
    tp, optional = optional_type(tp)
    if value is MISSING:
        out.append(required(key))
        return
    if isinstance(value, Unresolved):
        out.append(ConfigError(key, value, hint="the interpolation cannot be resolved"))
        return
    if value is None:
        if not optional:
            hint = describe(tp, meta)
            out.append(ConfigError(key, None, choices(tp)) if is_enum(tp) else ConfigError(key, None, hint=hint))
        return
    if is_dataclass(tp):
        if isinstance(value, DictConfig):
            check_node(value, tp, key, out)
        else:
            out.append(ConfigError(key, value, hint="a mapping"))
    elif get_origin(tp) is list:
        items = list(value) if isinstance(value, ListConfig) else [value]
        if not items:
            out.append(ConfigError(key, [], hint="give at least one value"))
        elif len(set(map(str, items))) != len(items):
            out.append(ConfigError(key, items, hint="values must not repeat"))
        for item in items:
            check_value(key, item, get_args(tp)[0], meta, out)
    elif get_origin(tp) is dict:
        if not isinstance(value, DictConfig):
            out.append(ConfigError(key, value, hint="a mapping"))
        elif meta.get("target"):
            check_target(key, value, out)
        elif meta.get("entry"):
            for name in value:
                meta["entry"](key_path(key, name), value_of(value, name), out)
    elif is_enum(tp):
        if not (isinstance(value, str) and value in choices(tp)):
            out.append(ConfigError(key, value, choices(tp)))
    elif tp is bool:
        if not isinstance(value, bool):
            out.append(ConfigError(key, value, ["true", "false"]))
    elif tp is int:
        if not is_int(value) or value < meta.get("min", value):
            out.append(ConfigError(key, value, hint=describe(tp, meta)))
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or ("above" in meta and value <= meta["above"]):
            out.append(ConfigError(key, value, hint=describe(tp, meta)))
    elif tp is str and not isinstance(value, str):
        quote = f"; quote it as {key}='{value}'" if isinstance(value, (int, float)) else ""
        out.append(ConfigError(key, value, hint=describe(tp, meta) + quote))
    elif "check" in meta:
        wrong = meta["check"](value)
        if wrong:
            out.append(ConfigError(key, value, **wrong))


def is_enum(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, Enum)
