"""File helpers: atomic writes, hashing and the cache directory."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from evalvae.errors import ConfigError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    Readers never see a half-written file: either the old content or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_dir(configured: str | os.PathLike | None = None) -> Path:
    """The evalvae cache directory: ``configured``, else ``$EVALVAE_CACHE``, else ``$XDG_CACHE_HOME/evalvae``."""
    if configured:
        root = Path(configured)
    elif os.environ.get("EVALVAE_CACHE"):
        root = Path(os.environ["EVALVAE_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evalvae"
    return root.expanduser()


def cache_argument(configured: str | os.PathLike | None = None) -> str:
    """Where :func:`cache_dir` came from, as the user would change it."""
    if configured:
        return "cache_dir"
    return "$EVALVAE_CACHE" if os.environ.get("EVALVAE_CACHE") else "cache_dir (default ~/.cache/evalvae)"


def unwritable(path: str | os.PathLike) -> str | None:
    """Why no folder can be made or written at ``path`` (its nearest existing part is a file, or is not
    writable), without creating anything; None when nothing stands in the way."""
    p = Path(path).expanduser().absolute()
    for part in (p, *p.parents):
        if part.exists():
            if not part.is_dir():
                return f"{part} is a file, not a folder"
            if not os.access(part, os.W_OK | os.X_OK):
                return f"{part} is not writable"
            return None
    return None


def check_creatable(path: str | os.PathLike, argument: str) -> None:
    """Raise a one-line :class:`ConfigError` naming ``argument`` when no folder can be made at ``path``
    (see :func:`unwritable`); nothing is created."""
    reason = unwritable(path)
    if reason:
        raise ConfigError(argument, str(path), hint=f"cannot write a folder there: {reason}")


def writable_dir(path: str | os.PathLike, argument: str) -> Path:
    """The folder ``path``, created if needed and written to once (a temporary file) to be sure; a one-line
    :class:`ConfigError` naming ``argument`` when that fails (a file in the way, no permission, a
    read-only file system)."""
    check_creatable(path, argument)
    p = Path(path).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=p).close()
    except OSError as e:
        raise ConfigError(argument, str(path), hint=f"cannot write a folder there: {e.strerror or e}") from None
    return p


def json_ready(x):
    """Strict-JSON-ready, recursively: NaN -> null, +inf -> ``"inf"``, -inf -> ``"-inf"`` (as
    metrics.json, baselines and samples/index.json store them)."""
    if isinstance(x, float):
        if math.isnan(x):
            return None
        return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: json_ready(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_ready(v) for v in x]
    return x
