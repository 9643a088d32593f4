"""Which VAEs a job evaluates, as specs, worked out without importing torch (the command line asks first).

``cfg.vae`` holds what ``+vae=NAME`` selected (``conf/vae/NAME.yaml``, whose one top-level key is the
name) and field overrides (``vae.NAME.FIELD=...``). Three things are laid over it, in this order:

* **Named variants.** An entry with ``base: NAME`` and no ``_target_`` is NAME's spec (as this job
  selected and configured it, else as shipped) with the entry's own fields laid over it, evaluated
  under the entry's name: ``+vae.taef2-ft={base: taef2, source: DIR}`` beside ``+vae=taef2`` compares a
  fine-tune with its base in one run. A variant that gives a ``source`` but no ``sha256`` drops its
  base's pinned hashes, which describe the base's files.
* **The task's default selection.** With no VAE selected (and no ``dataset=pairs``), the names in
  ``task.default_vaes`` (``conf/task/recon.yaml``) are evaluated, with any field overrides given for them.
* **``vae_dir=DIR``.** Every spec with a ``weights_prefix`` (the tiny family) whose ``source`` is
  still its shipped default reads DIR when DIR holds ``<prefix>_encoder`` or ``<prefix>_decoder``
  (``.safetensors`` or ``.pth``); the others keep their source, and the log says so. A ``source``
  given on the command line (or by a variant) wins over ``vae_dir``.

:func:`resolve` works on a copy and says what it would do; :func:`apply` writes the result into
``cfg.vae`` (so the run's ``config.yaml`` records what ran) and logs it. Applying twice changes nothing.
"""

from __future__ import annotations

import copy
import difflib
import logging
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from evalvae.errors import ConfigError
from evalvae.hub import PACKAGED, holds_pair
from evalvae.jobs.checking import UnknownName

log = logging.getLogger(__name__)

BASE = "base"  # the field that makes an entry of cfg.vae a named variant of another VAE


def available_vaes() -> list[str]:
    """Names of the VAE configs shipped in ``conf/vae``."""
    return sorted(
        p.name[: -len(".yaml")] for p in files("evalvae.conf").joinpath("vae").iterdir() if p.name.endswith(".yaml")
    )


def did_you_mean(name: str, choices: list[str]) -> str:
    """``"; did you mean A, B?"`` for the close matches of ``name`` among ``choices``, else ``""``."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


@cache
def _shipped(name: str) -> dict | None:
    path = files("evalvae.conf").joinpath("vae", f"{name}.yaml")
    if not path.is_file():
        return None
    doc = OmegaConf.to_container(OmegaConf.create(path.read_text(encoding="utf-8")), resolve=False)
    return doc.get(name) if isinstance(doc, dict) else None


def shipped_spec(name: str) -> dict | None:
    """The spec of ``conf/vae/<name>.yaml`` as shipped (interpolations such as ``${dtype}`` unresolved), or None."""
    spec = _shipped(name)
    return copy.deepcopy(spec) if spec is not None else None


def describe_source(source) -> str:
    """How a spec's ``source`` reads in messages: the weights shipped inside evalvae are said to be."""
    if isinstance(source, str) and source.startswith(PACKAGED):
        return f"the weights shipped with evalvae ({source})"
    return str(source)


@dataclass
class Selection:
    """The VAEs of a job, and how they came to be selected."""

    specs: dict[str, DictConfig]  # name -> spec (with _target_), in the order of cfg.vae
    default: list[str] = field(default_factory=list)  # the task's default selection, when nothing was selected
    notes: list[str] = field(default_factory=list)  # what vae_dir did, for the log
    ignored: list[str] = field(default_factory=list)  # field overrides of VAEs this job does not select


def resolve(cfg: DictConfig) -> Selection:
    """The VAEs ``cfg`` selects, with variants, the default selection and ``vae_dir`` worked out; ``cfg`` is unchanged."""
    return _resolve_into(copy.deepcopy(cfg))


def apply(cfg: DictConfig) -> Selection:
    """:func:`resolve`, written into ``cfg.vae`` and logged."""
    selection = _resolve_into(cfg)
    for note in selection.notes:
        log.info("%s", note)
    return selection


def _resolve_into(cfg: DictConfig) -> Selection:
    entries = cfg.get("vae")
    if not isinstance(entries, DictConfig):
        return Selection({})
    nodes = {str(k): entries[k] for k in entries}
    specs: dict[str, DictConfig] = {}
    origin: dict[str, str] = {}  # name -> the shipped config its default source comes from
    variants, partial = {}, {}
    for name, node in nodes.items():
        if not isinstance(node, DictConfig):
            partial[name] = node
        elif "_target_" in node:
            if BASE in node:
                raise ConfigError(
                    f"vae.{name}.{BASE}",
                    node.get(BASE),
                    hint=f"a selected VAE has no base; a variant takes a name of its own: +vae.NEW={{base: {name}, ...}}",
                )
            specs[name], origin[name] = node, name
        elif BASE in node:
            variants[name] = node
        else:
            partial[name] = node

    def expand(name: str, seen: tuple[str, ...]) -> None:
        node = variants[name]
        base = node[BASE]
        argument = f"vae.{name}.{BASE}"
        if base == name or base in seen:
            cycle = " -> ".join((*seen, name, base))
            raise ConfigError(argument, base, hint=f"variants whose bases form a cycle ({cycle}) have no spec")
        if not isinstance(base, str):
            raise ConfigError(argument, base, hint="the name of another VAE (conf/vae/NAME.yaml or a selected one)")
        if base in variants and base not in specs:
            expand(base, (*seen, name))
        if base in specs:
            parent = OmegaConf.to_container(specs[base], resolve=False)
            origin[name] = origin[base]
        else:
            parent = shipped_spec(base)
            if parent is None:
                raise UnknownName("VAE", base, f"{argument}={base}", [*available_vaes(), *specs, *variants])
            origin[name] = base
        own = {k: v for k, v in OmegaConf.to_container(node, resolve=False).items() if k != BASE}
        merged = OmegaConf.to_container(OmegaConf.merge(parent, own), resolve=False)
        if "source" in own and "sha256" not in own and merged.get("sha256") is not None:
            merged["sha256"] = None  # the base's pins describe the base's files, not the variant's
        specs[name] = OmegaConf.create(merged)

    for name in variants:
        if name not in specs:
            expand(name, ())

    default: list[str] = []
    test = (cfg.get("dataset") or {}).get("test")
    task = cfg.get("task")
    names = task.get("default_vaes") if isinstance(task, DictConfig) else None
    if not specs and test is None and names:
        for name in names:
            spec = shipped_spec(str(name))
            if spec is None:
                raise UnknownName("VAE", str(name), f"task.default_vaes={list(names)}", available_vaes())
            given = partial.pop(str(name), None)
            if isinstance(given, DictConfig):
                spec = OmegaConf.to_container(OmegaConf.merge(spec, given), resolve=False)
            specs[str(name)], origin[str(name)] = OmegaConf.create(spec), str(name)
            default.append(str(name))

    notes = _vae_dir(cfg.get("vae_dir"), specs, origin)
    order = [*default, *(n for n in nodes if n in specs and n not in default)]
    with open_dict(cfg):
        cfg.vae = {**{n: specs[n] for n in order}, **partial}
    resolved = {n: cfg.vae[n] for n in order}  # attached to cfg, so ${dtype} resolves against it
    return Selection(resolved, default, notes, list(partial))


def _vae_dir(vae_dir, specs: dict[str, DictConfig], origin: dict[str, str]) -> list[str]:
    """Point each tiny-family spec still at its shipped source at ``vae_dir`` where it holds its files."""
    if not vae_dir:
        return []
    folder = Path(str(vae_dir)).expanduser()
    notes = []
    for name, spec in specs.items():
        prefix = spec.get("weights_prefix")
        if not prefix:
            continue
        source = spec.get("source")
        default = (shipped_spec(origin[name]) or {}).get("source")
        if source == str(folder.resolve()):
            continue  # already applied
        if default is None or source != default:
            notes.append(f"vae.{name}.source={source} is set, so vae_dir is not used for {name}")
        elif holds_pair(folder, prefix):
            spec.source = str(folder.resolve())
            notes.append(f"{name}: {prefix}_encoder / {prefix}_decoder from vae_dir={vae_dir}")
        else:
            notes.append(
                f"vae_dir={vae_dir} holds no {prefix}_encoder / {prefix}_decoder (.safetensors or .pth): "
                f"{name} keeps its default source, {describe_source(default)}"
            )
    return notes
