"""Resolving a VAE spec's ``source``: hub ids, local folders, single files, and URLs of weight files.

Weights are only ever read through safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import urllib.error
import warnings
from pathlib import Path

import torch

from evalvae.checkpoints import download, local_then_hub, read_tensors
from evalvae.errors import ConfigError, WeightsUnavailable, error_reason
from evalvae.hub import PAIR_SUFFIXES, hub_reachable, not_in_hub_cache, source_kind, unavailable_message
from evalvae.io import cache_dir, sha256_file
from evalvae.vae.base import LoadedWeights

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def pair_suffix(folder: Path, prefix: str) -> str | None:
    """The suffix of the ``{prefix}_encoder``/``{prefix}_decoder`` pair in ``folder`` (safetensors first), if both are there."""
    pairs = (
        sfx for sfx in PAIR_SUFFIXES if all((folder / f"{prefix}_{p}{sfx}").is_file() for p in ("encoder", "decoder"))
    )
    return next(pairs, None)


def pth_pair(
    name: str, source: str, *, prefix: str, sha256: dict | None, cache: str | None
) -> tuple[dict, LoadedWeights]:
    """Load ``{prefix}_encoder`` and ``{prefix}_decoder`` (``.safetensors`` or ``.pth``) from a local folder, or the ``.pth`` pair from a base URL.

    Files from a URL are downloaded once into ``<cache>/weights/<prefix>/``. When ``sha256`` maps
    ``encoder``/``decoder`` to hashes, every file is checked, wherever it came from.
    """
    argument = f"vae.{name}.source"
    kind = source_kind(source, argument)
    if kind not in ("url", "dir"):
        hint = f"expected a folder or base URL holding {prefix}_encoder.pth and {prefix}_decoder.pth"
        raise ConfigError(argument, source, hint=hint)
    if kind == "url":
        suffix = ".pth"
    else:  # a complete pair, safetensors first; else the suffix of the half that is there, so the error names the other
        folder = Path(source).expanduser()
        suffix = pair_suffix(folder, prefix) or next(
            (sfx for sfx in PAIR_SUFFIXES if any(folder.glob(f"{prefix}_*{sfx}"))), ".pth"
        )
    states, files = {}, {}
    for part in ("encoder", "decoder"):
        fname = f"{prefix}_{part}{suffix}"
        expected = (sha256 or {}).get(part)
        if kind == "url":
            url = source.rstrip("/") + "/" + fname
            dest = cache_dir(cache) / "weights" / prefix / fname
            try:
                path = download(url, dest, expected)
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                raise WeightsUnavailable(
                    f"VAE '{name}': could not download {url} ({error_reason(e)}); fetch {prefix}_encoder.pth and "
                    f"{prefix}_decoder.pth where the network allows and set {argument}=/dir/with/them"
                ) from None
        else:
            path = Path(source).expanduser() / fname
            if not path.is_file():
                raise WeightsUnavailable(
                    f"VAE '{name}': {path} not found; {argument} must be a folder holding {prefix}_encoder and "
                    f"{prefix}_decoder as .safetensors or .pth"
                )
        digest = sha256_file(path)
        if expected is not None and digest != expected:
            raise WeightsUnavailable(
                f"VAE '{name}': {path} has sha256 {digest}, expected {expected}; "
                f"to evaluate other weights (for example a fine-tune), set vae.{name}.sha256=null"
            )
        states[part] = read_tensors(path)
        files[fname] = digest
    location = str(Path(source).expanduser().resolve()) if kind == "dir" else source
    return states, LoadedWeights(f"{suffix[1:]}-{kind}", location, files, stored_dtype=stored_dtype(states))


def stored_dtype(states: dict[str, dict[str, torch.Tensor]]) -> str | None:
    """The floating dtypes the tensors were stored in (``bf16``, ``fp16``, ``fp32``; several joined by ``+``)."""
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
    found = sorted({names[t.dtype] for part in states.values() for t in part.values() if t.dtype in names})
    return "+".join(found) or None


def diffusers_model(
    cls: type | str,
    name: str,
    source: str,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    config: str | None = None,
    cache: str | None = None,
    torch_dtype: torch.dtype | None = None,
):
    """Load a diffusers model class (or the class of that name in ``diffusers``) from a hub id, a local
    diffusers folder, or a single checkpoint file.

    A hub id that is not in the local Hugging Face cache, on a machine where the hub is off or
    unreachable, fails before diffusers is imported (which takes seconds).
    """
    argument = f"vae.{name}.source"
    kind = source_kind(source, argument)
    if kind == "hub" and not_in_hub_cache(source, "config.json", subfolder, revision) and not hub_reachable():
        missing = OSError(f"{source}: config.json is not in the local Hugging Face cache")
        raise WeightsUnavailable(unavailable_message(name, kind, source, subfolder, config, missing))
    if isinstance(cls, str):
        import diffusers

        cls = getattr(diffusers, cls)
    try:
        if kind in ("hub", "dir"):
            if kind == "dir" and subfolder and not (Path(source).expanduser() / subfolder).is_dir():
                subfolder = None  # the folder given is the model folder itself
            kwargs = dict(subfolder=subfolder or None, revision=revision, torch_dtype=torch_dtype)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
                model = local_then_hub(
                    lambda local: cls.from_pretrained(source, local_files_only=local, **kwargs),
                    may_download=kind == "hub",
                )
            return model, LoadedWeights(kind=kind, location=_location(kind, source, subfolder, revision))
        path = Path(source).expanduser()
        if kind == "url":
            fname = source.rstrip("/").rsplit("/", 1)[-1]
            path = download(source, cache_dir(cache) / "weights" / name / fname)
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            hint = "a single-file checkpoint needs one of these suffixes"
            raise ConfigError(argument, source, SINGLE_FILE_SUFFIXES, hint=hint)
        subfolder = subfolder if config else None
        model = cls.from_single_file(str(path), config=config, subfolder=subfolder, torch_dtype=torch_dtype)
        return model, LoadedWeights("single-file", str(path.resolve()), {path.name: sha256_file(path)})
    except (ConfigError, WeightsUnavailable):
        raise
    except Exception as e:  # hub, network and format errors all end in the same actionable line
        raise WeightsUnavailable(unavailable_message(name, kind, source, subfolder, config, e)) from None


def _location(kind: str, source: str, subfolder: str | None, revision: str | None) -> str:
    where = str(Path(source).expanduser().resolve()) if kind == "dir" else source
    if subfolder:
        where += f"/{subfolder}"
    if revision:
        where += f"@{revision}"
    return where
