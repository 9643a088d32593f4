"""What a test needs from outside the repository: real assets, weights files, optional packages, programs.

A missing one skips the test on a developer's machine and fails it under ``CI=true`` (``.ci/run`` sets it).
Light on purpose (no torch), so that the fixtures that use it load fast.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

TRUE = ("1", "true", "yes", "on")


def in_ci() -> bool:
    """Whether ``$CI`` is set to a true value (``true``/``1``/``yes``/``on``, any case), as CI services and ``.ci/run`` set it."""
    return os.environ.get("CI", "").strip().lower() in TRUE


def missing(what: str) -> NoReturn:
    """A test's prerequisite (real asset, weights file, optional package, program) is absent.

    Skips the test (or, at import time, its module) on a developer's machine; under ``CI=true`` fails it,
    so that a CI job that lost its assets or an extra cannot pass by skipping the tests that use them.
    """
    if in_ci():
        pytest.fail(f"{what}; CI=true requires every test prerequisite (unset CI to skip instead)", pytrace=False)
    pytest.skip(what, allow_module_level=True)


def require_module(name: str, install: str = "") -> ModuleType:
    """``import name``, or :func:`missing` with the import error (``install``: how to get it)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        error = e
    missing(f"{name} cannot be imported ({error})" + (f"; {install}" if install else ""))


def require_env_dir(variable: str, how: str = "") -> Path:
    """The folder named by ``$variable``, or :func:`missing` when the variable is unset or empty.

    A variable that is set but names no folder is a broken set-up, not an absent one: that always fails.
    """
    root = os.environ.get(variable)
    if not root:
        missing(f"${variable} is not set" + (f" ({how})" if how else ""))
    path = Path(root)
    assert path.is_dir(), f"{variable}={root} is not a directory"
    return path


def require_program(*names: str) -> str:
    """The path of the first of ``names`` on ``$PATH``, or :func:`missing`."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    missing(f"none of {', '.join(names)} is on PATH")
