"""Errors that evalvae reports to the user as one actionable line."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class Exit(IntEnum):
    """Exit statuses of the ``evalvae`` commands (README and docs/ci.md list them)."""

    OK = 0  # everything asked for was measured
    REGRESSION = 1  # evalvae compare: a result moved beyond tolerance
    USAGE = 2  # the command line or configuration was refused; for compare and report, unusable input
    INCOMPLETE = 3  # the job ran and kept its results, but something asked for was not measured
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class EvalvaeError(Exception):
    """An error whose message is meant for the user, printed without a traceback."""


class ConfigError(EvalvaeError, ValueError):
    """A configuration value is invalid."""

    def __init__(self, argument: str, value: object, choices: Iterable[object] | None = None, hint: str = ""):
        self.argument, self.value = argument, value
        self.choices = list(choices) if choices is not None else None
        msg = f"invalid {argument}={value!r}"
        if self.choices is not None:
            msg += f"; choose one of {', '.join(map(str, self.choices))}"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a job, with how far it got: ``done`` of ``total`` batches (None where not counted) and
    the directory whose results stay. ``resumable``: the same command (or ``resume=DIR``) continues it."""

    def __init__(self, out=None, done: int | None = None, total: int | None = None, resumable: bool = False):
        super().__init__()
        self.out, self.done, self.total, self.resumable = out, done, total, resumable

    def message(self) -> str:
        where = ""
        if self.done is not None:
            where = f" after {self.done} of {self.total} batches" if self.total else f" after {self.done} batches"
        if self.resumable:
            again = f"resume={self.out}" if self.out is not None else "resume=DIR"
            return f"interrupted{where}; run the same command again (or {again}) to continue"
        kept = f"; the results written so far are in {self.out}" if self.out is not None else ""
        return f"interrupted{where}{kept}"


class WeightsUnavailable(EvalvaeError):
    """Model weights could not be found locally or downloaded."""


class DatasetError(EvalvaeError):
    """A dataset is empty, missing or unreadable as a whole."""


def error_reason(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or of a URLError's ``reason``), else its type name."""
    lines = str(getattr(e, "reason", None) or e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]


def check_choice(argument: str, value: object, choices: Iterable[object]) -> object:
    """Return ``value`` if it is one of ``choices``, else raise a :class:`ConfigError` naming them."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(argument, value, choices)
    return value


def check_positive_int(argument: str, value: object, hint: str = "a positive integer") -> int:
    """Return ``value`` if it is an integer >= 1 (not a bool), else raise a :class:`ConfigError` with ``hint``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(argument, value, hint=hint)
    return value
