"""What can be told about a VAE's weights source without importing torch: its kind, the folder a
``pkg://`` source names, whether a folder holds a tiny autoencoder's pair, whether the local Hugging
Face cache holds a hub id, whether the hub can be reached, and the one line said when it can't."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path

from evalvae.errors import ConfigError, error_reason

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PACKAGED = "pkg://"
PAIR_SUFFIXES = (".safetensors", ".pth")  # a tiny autoencoder's <prefix>_encoder / <prefix>_decoder files


def packaged(source: str, argument: str = "source") -> str:
    """The folder ``pkg://PACKAGE/PATH`` names (files shipped inside an installed package, such as
    ``pkg://evalvae.vae/weights/taef2``); any other ``source`` is returned unchanged."""
    if not (isinstance(source, str) and source.startswith(PACKAGED)):
        return source
    package, _, rel = source[len(PACKAGED) :].partition("/")
    from importlib.resources import files

    try:
        root = Path(str(files(package)))
    except (ModuleNotFoundError, TypeError, ValueError):
        raise ConfigError(
            argument, source, hint="pkg://PACKAGE/PATH names a folder inside an installed package"
        ) from None
    return str(root / rel)


def holds_pair(folder: str | Path, prefix: str) -> bool:
    """Whether ``folder`` holds ``{prefix}_encoder`` or ``{prefix}_decoder`` as ``.safetensors`` or ``.pth``
    (one half is enough: the loader then names the missing one)."""
    folder = Path(folder).expanduser()
    return any((folder / f"{prefix}_{part}{sfx}").is_file() for part in ("encoder", "decoder") for sfx in PAIR_SUFFIXES)


def source_kind(source: str, argument: str) -> str:
    """Classify a source as ``url``, ``file``, ``dir`` or ``hub``; a path that looks local must exist."""
    if not isinstance(source, str) or not source:
        raise ConfigError(argument, source, hint="give a hub id, a local folder or file, or a URL")
    if re.match(r"^https?://", source):
        return "url"
    path = Path(source).expanduser()
    if path.is_file():
        return "file"
    if path.is_dir():
        return "dir"
    if source.startswith(("/", "./", "../", "~")) or not _HUB_ID.match(source):
        raise ConfigError(argument, source, hint="this path does not exist")
    return "hub"


def not_in_hub_cache(repo_id: str, filename: str, subfolder: str | None = None, revision: str | None = None) -> bool:
    """True when ``filename`` of the hub repository ``repo_id`` is known to be missing from the local
    Hugging Face cache (where diffusers and transformers look); False when it is there or that cannot be told."""
    from huggingface_hub import try_to_load_from_cache

    path = f"{subfolder}/{filename}" if subfolder else filename
    try:
        return not isinstance(try_to_load_from_cache(repo_id, path, revision=revision), str)
    except Exception:  # a repository id or revision the cache cannot be asked about: let the loader decide
        return False


def hub_reachable(timeout: float = 5.0) -> bool:
    """False when the hub is switched off (HF_HUB_OFFLINE) or its host cannot be reached quickly.

    Checked before a download so that an offline machine fails at once, instead of after the
    hub client's retries (about 20 s per file).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE"):
        return False
    host = re.sub(r"^https?://", "", constants.ENDPOINT).split("/")[0]
    try:
        socket.create_connection((host.split(":")[0], 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def unavailable_message(
    name: str, kind: str, source: str, subfolder: str | None, config: str | None, e: BaseException
) -> str:
    """The one line said when VAE ``name`` cannot be loaded from ``source`` (of ``kind``), failing with ``e``."""
    if kind == "hub":
        tried = f"hub id '{source}'" + (f" (subfolder '{subfolder}')" if subfolder else "")
        return (
            f"VAE '{name}': could not load {tried}: not in the local Hugging Face cache and the hub is unreachable "
            f"or offline ({type(e).__name__}); download it where the hub is reachable "
            f"(huggingface-cli download {source}) or point at local weights with "
            f"vae.{name}.source=/path/to/diffusers-folder-or-file.safetensors"
        )
    if kind == "file" and config is None:
        return (
            f"VAE '{name}': could not load single file '{source}' ({type(e).__name__}: {error_reason(e)}); "
            f"if its config cannot be fetched offline, set vae.{name}.config=/path/to/diffusers/config-folder"
        )
    return f"VAE '{name}': could not load '{source}' ({type(e).__name__}: {error_reason(e)})"


def missing_hub_config(name: str, source: str, subfolder: str | None = None, revision: str | None = None) -> str | None:
    """The unavailable-message of a hub id whose ``config.json`` is not in the local Hugging Face cache
    on a machine where the hub cannot be reached; None when it can be loaded, or that cannot be told."""
    if not_in_hub_cache(source, "config.json", subfolder, revision) and not hub_reachable():
        missing = OSError(f"{source}: config.json is not in the local Hugging Face cache")
        return unavailable_message(name, "hub", source, subfolder, None, missing)
    return None


def unloadable_offline(vaes: Mapping[str, Mapping]) -> dict[str, str]:
    """Every VAE of ``vaes`` (name -> spec) with its message, when each one's ``source`` is a hub id that
    cannot be loaded here (see :func:`missing_hub_config`); else ``{}``. A spec without a hub ``source``,
    or with an invalid one (the loader says why), counts as loadable: only a load can tell about it."""
    found = {}
    for name, spec in vaes.items():
        source = spec.get("source")
        try:
            if not isinstance(source, str) or source_kind(source, f"vae.{name}.source") != "hub":
                return {}
        except ConfigError:
            return {}
        message = missing_hub_config(name, source, spec.get("subfolder"), spec.get("revision"))
        if message is None:
            return {}  # this one can be loaded: the run goes ahead, and records the others as it loads them
        found[name] = message
    return found
