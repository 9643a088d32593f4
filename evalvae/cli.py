"""Hydra applications behind ``python -m evalvae <command>``; each runs the task its config names (``task._target_``)."""

from __future__ import annotations

import itertools
import logging
import sys

import hydra
from omegaconf import DictConfig

import evalvae.config  # noqa: F401  (registers the configs' ${evalvae.*} resolvers)
from evalvae.errors import ConfigError, EvalvaeError, Exit, Interrupted
from evalvae.jobs.overrides import check_overrides
from evalvae.jobs.schema import SCHEMAS, validate

log = logging.getLogger("evalvae")
CONFIG_PATH = "pkg://evalvae.conf"
_status = Exit.OK  # the worst status of the jobs run so far (a sweep runs several); see exit_status()


def exit_status() -> Exit:
    """The status the command exits with once its jobs are done: 3 if any job was incomplete, else 0."""
    return _status


def reset_status() -> None:
    global _status
    _status = Exit.OK


def _validate(cfg: DictConfig) -> None:
    """Check ``cfg`` against its command's schema before the task's modules are imported (seconds of torch);
    an invalid config exits with status 2 and one message listing every problem."""
    try:
        validate(cfg)
    except ConfigError as e:
        log.error("evalvae: %s", e)
        sys.exit(2)


def _refuse_unloadable(cfg: DictConfig) -> None:
    """Exit with status 2, before torch is imported (seconds), when no VAE of a reconstruction or bench job
    can be loaded here: every one is a hub id missing from the local Hugging Face cache, offline. The
    messages are those the loader would give. With one loadable VAE the job runs and records the others."""
    from evalvae.hub import unloadable_offline
    from evalvae.jobs.selection import resolve

    try:
        vaes = resolve(cfg).specs  # named variants, the default selection and vae_dir, as the job will see them
    except ConfigError as e:
        log.error("evalvae: %s", e)
        sys.exit(2)
    if not vaes or (cfg.get("task") or {}).get("name") not in ("recon", "bench"):
        return
    unloadable = unloadable_offline(vaes)
    if unloadable:
        for message in unloadable.values():
            log.error("evalvae: %s", message)
        if len(vaes) > 1:
            log.error("none of the %d VAEs can be loaded here; nothing was evaluated", len(vaes))
        sys.exit(2)


def _call(func, cfg: DictConfig) -> None:
    """``func(cfg)``. An evalvae error exits with status 2 and Ctrl-C with 130, each with one line. An
    incomplete outcome (failed VAEs, a VAE that scored nothing, an unavailable metric) ends with one line
    saying so and makes the command exit with status 3 once every job of a sweep has run, unless
    ``strict=false``."""
    global _status
    try:
        outcome = func(cfg)
    except EvalvaeError as e:
        log.error("evalvae: %s", e)
        sys.exit(Exit.USAGE)
    except Interrupted as e:
        log.error("evalvae: %s", e.message())
        sys.exit(Exit.INTERRUPTED)
    incomplete = getattr(outcome, "incomplete", None)
    if incomplete:
        from evalvae.jobs.failures import closing_line

        strict = cfg.get("strict", True) is not False
        line = closing_line(incomplete, strict, getattr(outcome, "out_dir", None))
        (log.error if strict else log.warning)("%s", line)
        if strict:
            _status = max(_status, Exit.INCOMPLETE)


def hydra_app(config_name: str, refuse_unloadable: bool = False):
    """The Hydra application of ``evalvae <config_name>``: the config checked once (schema, then, for
    ``refuse_unloadable``, that some VAE can be loaded here), then :func:`evalvae.run.evaluate`."""

    @hydra.main(config_path=CONFIG_PATH, config_name=config_name, version_base="1.3")
    def app(cfg: DictConfig) -> None:
        _validate(cfg)
        if refuse_unloadable:
            _refuse_unloadable(cfg)
        from evalvae.run import evaluate

        _call(evaluate, cfg)

    return app


run_app = hydra_app("run", refuse_unloadable=True)
ref_app = hydra_app("ref")
bench_app = hydra_app("bench", refuse_unloadable=True)
latents_app = hydra_app("latents")
robustness_app = hydra_app("robustness")


def vaes_main() -> None:
    """``evalvae vaes``: every VAE config (``conf/vae/*.yaml``) with its default weights and what it is."""
    from importlib.resources import files

    from evalvae.config import compose
    from evalvae.hub import PACKAGED
    from evalvae.jobs.selection import available_vaes, shipped_spec

    if sys.argv[1:]:
        print(f"evalvae: vaes takes no arguments (got {' '.join(sys.argv[1:])})", file=sys.stderr)
        sys.exit(2)
    rows = []
    for name in available_vaes():
        spec = shipped_spec(name) or {}
        text = files("evalvae.conf").joinpath("vae", f"{name}.yaml").read_text(encoding="utf-8")
        comment = " ".join(
            line.lstrip("# ") for line in itertools.takewhile(lambda x: x.startswith("#"), text.splitlines())
        )
        what = comment.split(". ")[0].rstrip(".")
        what = what if len(what) <= 100 else what[:99].rsplit(" ", 1)[0] + " …"
        source = spec.get("source")
        if source == "???":  # a required field: the generic entry names its class and weights on the command line
            where = f"(vae.{name}.source=...)"
        else:
            where = "shipped with evalvae" if str(source).startswith(PACKAGED) else (source or "(no weights)")
        rows.append((name, where, what))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    default = list(compose([]).task.get("default_vaes") or [])
    print(
        "select with +vae=NAME or +vae=[A,B] (conf/vae/NAME.yaml); a named variant: +vae.NEW={base: NAME, source: DIR}"
    )
    print(f"with none selected, evalvae run evaluates {', '.join(default)}\n")
    for name, where, what in rows:
        print(f"{name:<{width[0]}}  {where:<{width[1]}}  {what}")


def protocols_main() -> None:
    """``evalvae protocols``: every published protocol preset (``conf/protocol/*.yaml``), its title and source."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    if sys.argv[1:]:
        print(f"evalvae: protocols takes no arguments (got {' '.join(sys.argv[1:])})", file=sys.stderr)
        sys.exit(2)
    folder = files("evalvae.conf").joinpath("protocol")
    presets = sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
    print("select with protocol=NAME (conf/protocol/NAME.yaml); docs/protocols.md gives each one's published numbers\n")
    width = max(map(len, presets))
    for name in presets:
        named = OmegaConf.create(folder.joinpath(f"{name}.yaml").read_text(encoding="utf-8")).protocol
        print(f"{name:<{width}}  {named.title}\n{'':<{width}}  source: {named.source}")


def check_command_line(command: str, args: list[str]) -> None:
    """Before Hydra composes: misspelt keys and config-group options in ``args`` exit with status 2 and
    one line naming the closest choices (Hydra's own error would stop at a composition failure)."""
    from hydra._internal.utils import get_args_parser

    if command not in SCHEMAS:
        return
    parser = get_args_parser()

    def refuse(message: str):
        raise ValueError(message)

    parser.error = refuse  # malformed flags are left to Hydra's own message
    try:
        parsed = parser.parse_args(args)
    except ValueError:
        return
    other = (parsed.config_name, parsed.config_path, parsed.config_dir, parsed.experimental_rerun)
    if parsed.help or parsed.hydra_help or parsed.info or parsed.shell_completion or any(other):
        return
    try:
        check_overrides(parsed.overrides, command)
        _check_run_dir(parsed.overrides, parsed.multirun)
    except ConfigError as e:
        print(f"evalvae: {e}", file=sys.stderr)
        sys.exit(2)


def _check_run_dir(overrides: list[str], multirun: bool) -> None:
    """The folder Hydra will make for the job (``hydra.run.dir``, ``hydra.sweep.dir`` with ``-m``; else
    under ./outputs) must be makeable: Hydra's own failure there is a traceback."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from evalvae.io import check_creatable

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # Hydra's own message
    given = [o.value() for o in parsed if o.key_or_group == key and isinstance(o.value(), str)]
    check_creatable(given[-1] if given else "outputs", key)
