"""Tasks, and choosing one through the config: ``task._target_`` names the class, never an ``if``.

Every task (``recon``, ``t2i``, ``bench``, ``ref``) is a :class:`Task`: built from the composed
config and its output directory, then :meth:`Task.run` does the work and returns its outcome.
``conf/task/<name>.yaml`` (for ``evalvae run``) and the ``task`` entries of ``conf/bench.yaml`` and
``conf/ref.yaml`` name the class, so adding a task is one module and one YAML.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig

from evalvae.errors import ConfigError
from evalvae.jobs.runtime import output_dir

log = logging.getLogger(__name__)


class Task:
    """One kind of job. Subclasses set ``name`` and implement :meth:`run`."""

    name = ""

    def __init__(self, cfg: DictConfig, out: Path):
        self.cfg, self.out = cfg, Path(out)

    def run(self):
        raise NotImplementedError


def task_class(cfg: DictConfig) -> type[Task]:
    """The :class:`Task` subclass ``cfg.task._target_`` names."""
    spec = cfg.get("task")
    target = spec.get("_target_") if isinstance(spec, DictConfig) else None
    if not target:
        raise ConfigError("task", spec, ["recon", "t2i"], hint="select a task with task=NAME (conf/task/NAME.yaml)")
    try:
        cls = get_class(target)
    except Exception as e:  # ImportError or an attribute missing from the module
        raise ConfigError("task._target_", target, hint=f"not an importable class ({type(e).__name__}: {e})") from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError("task._target_", target, hint="must name a subclass of evalvae.jobs.task.Task")
    return cls


def execute(cfg: DictConfig, out_dir: str | Path | None = None):
    """Build the task the config selects and run it; return its outcome."""
    cls = task_class(cfg)
    return cls(cfg, resume_dir(cfg) or output_dir(out_dir)).run()


def resume_dir(cfg: DictConfig) -> Path | None:
    """``resume=DIR``: the earlier run directory to continue in (its finished batches are read, not redone)."""
    resume = cfg.get("resume")
    if not resume:
        return None
    out = Path(str(resume)).expanduser()
    if not (out / "config.yaml").is_file():
        raise ConfigError("resume", str(resume), hint="the directory of an earlier run (it holds config.yaml)")
    log.info("resuming in %s", out)
    return out
