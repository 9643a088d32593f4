"""Tasks, and choosing one through the config: ``task._target_`` names the class, never an ``if``.

Every task (``recon``, ``t2i``, ``bench``, ``ref``) is a :class:`Task`: built from the composed
config and its output directory, then :meth:`Task.run` does the work and returns its outcome.
``conf/task/<name>.yaml`` (for ``evalvae run``) and the ``task`` entries of ``conf/bench.yaml`` and
``conf/ref.yaml`` name the class, so adding a task is one module and one YAML.

The tasks that evaluate VAEs one after another share one loop, :meth:`Task.each_vae`: load, run,
record a failure, release memory, write a timing row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig

from evalvae.device import fp32_math, job_heap, release_memory, tf32_available
from evalvae.errors import ConfigError
from evalvae.jobs.failures import VAE_FAILURES, record_failure, record_load_failure
from evalvae.jobs.runtime import StageTimes, output_dir, timing_row
from evalvae.jobs.vaes import Loaded, load

log = logging.getLogger(__name__)


@dataclass
class Done:
    """What a VAE's run gives its ``timings.csv`` row (:func:`evalvae.jobs.runtime.timing_row`)."""

    dtype: str
    n_images: int
    load_s: float
    times: StageTimes
    extra: dict = field(default_factory=dict)


class Task:
    """One kind of job. Subclasses set ``name`` and implement :meth:`run`; those that evaluate VAEs set
    ``device`` and ``stages`` (the columns of their timing rows) and run them through :meth:`each_vae`."""

    name = ""
    stages: tuple[str, ...] = ()
    failures: tuple[type[BaseException], ...] = VAE_FAILURES  # what a VAE may raise without stopping the job

    def __init__(self, cfg: DictConfig, out: Path):
        self.cfg, self.out = cfg, Path(out)
        self.loaded: Loaded | None = None  # the VAE of :meth:`each_vae`'s turn, once loaded
        self.batch_size = cfg.get("batch_size")  # a number (batch_size=auto: the task resolves it)
        self._said_no_tf32 = False

    def run(self):
        raise NotImplementedError

    def record_failure(self, writer, name: str, e: BaseException) -> str:
        """Record VAE ``name``'s failure into ``writer`` as one of loading or of evaluation
        (:mod:`evalvae.jobs.failures`); return the reason."""
        vae = self.loaded.vae if self.loaded is not None else None
        return record_failure(writer, name, e, vae) if vae is not None else record_load_failure(writer, name, e)

    def check(self, name: str, vae) -> None:
        """Refuse a loaded VAE this task cannot evaluate (raise); its failure is then one of loading."""

    def load(self, name: str, spec: Mapping, **kwargs) -> Loaded:
        """Load VAE ``name`` (:func:`evalvae.jobs.vaes.load`, ``kwargs`` passed on) and :meth:`check` it; a
        failure from then on is recorded as one of its evaluation."""
        loaded = load(name, spec, device=self.device, cache_dir=self.cfg.cache_dir, **kwargs)
        self.check(name, loaded.vae)
        if self.cfg.get("precision") == "tf32":
            loaded.vae.tf32 = tf32_available(self.device)
            if not loaded.vae.tf32 and not self._said_no_tf32:
                self._said_no_tf32 = True
                log.warning(
                    "precision=tf32: %s has no TF32 tensor cores; the VAEs run in IEEE fp32 (vaes.json: precision fp32)",
                    self.device,
                )
        if self.cfg.get("compile"):
            loaded.vae.compile(str(self.cfg.get("compile_backend") or "inductor"))
        self.loaded = loaded
        return loaded

    def each_vae(
        self, specs: Mapping, one: Callable[[str, Mapping], Done | None], writer, *, flush: bool = True
    ) -> dict[str, str]:
        """``one(name, spec)`` for each VAE in turn, which loads it through :meth:`load`; return the failed
        VAEs with their reasons.

        A VAE failure (``failures``) is recorded into ``writer`` (None: not recorded) by
        :meth:`record_failure`, and the loop goes on; a ``one`` that returns
        :class:`Done` gets its row in ``timings.csv``, its seconds counted from before it loaded. The
        device's memory is released after each VAE and, with ``flush``, the results so far written.
        Float32 arithmetic outside the VAEs (metrics, feature networks) is IEEE float32, TF32 off
        (:func:`evalvae.device.fp32_math`); a VAE with ``precision=tf32`` turns it on for its own calls.
        """
        with fp32_math(self.device, False):
            return self._each_vae(specs, one, writer, flush)

    def _each_vae(self, specs: Mapping, one, writer, flush: bool) -> dict[str, str]:
        failed: dict[str, str] = {}
        for name, spec in specs.items():
            self.loaded, start = None, time.perf_counter()
            try:
                done = one(name, spec)
            except self.failures as e:
                if writer is not None:
                    failed[name] = self.record_failure(writer, name, e)
            else:
                if done is not None:
                    total = time.perf_counter() - start
                    row = timing_row(
                        name, done.dtype, self.device, self.batch_size, done.n_images, done.load_s, done.times,
                        self.stages, total, **done.extra,
                    )  # fmt: skip
                    writer.add_timing(row)
            finally:
                self.loaded = None
                release_memory(self.device)
            if flush and writer is not None:
                writer.flush()
        return failed


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
    with job_heap():
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
