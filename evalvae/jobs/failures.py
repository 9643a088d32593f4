"""What a VAE may raise without stopping the job, and how its failure is recorded."""

from __future__ import annotations

import logging

import torch

from evalvae.errors import EvalvaeError, error_reason

log = logging.getLogger(__name__)

# What a VAE may raise while it loads or is evaluated without stopping the run: it is marked failed.
VAE_FAILURES = (RuntimeError, EvalvaeError)  # torch.cuda.OutOfMemoryError is a RuntimeError


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or any allocator's "out of memory" RuntimeError (MPS, CPU)."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def record_failure(writer, name: str, e: BaseException, vae=None) -> str:
    """Record a VAE that failed while loading (``vae`` None) or part-way through its evaluation: its rows
    are dropped, so it contributes to no table or mean, and ``vaes.json`` says why (``failure``: ``oom``
    or ``error``); return the reason for :attr:`RunOutcome.failed`. ``writer`` is the job's
    :class:`evalvae.results.RunWriter`."""
    failure = "oom" if is_out_of_memory(e) else "error"
    error = f"{type(e).__name__}: {error_reason(e, limit=500)}"
    dropped = writer.discard(name)
    during = "loading" if vae is None else f"evaluation ({dropped} partial row(s) dropped)"
    log.error(
        "evalvae: VAE '%s' %s during %s: %s; the run goes on",
        name,
        "ran out of memory" if failure == "oom" else "failed",
        during,
        error,
    )
    writer.add_vae(
        {
            **(vae.describe() if vae is not None else {"vae": name}),
            "status": "failed",
            "failure": failure,
            "error": error,
        }
    )
    return f"{'out of memory' if failure == 'oom' else 'failed'}: {error}"


def record_load_failure(writer, name: str, e: BaseException) -> str:
    """Record a VAE that could not be loaded: an evalvae error (a missing file, a bad option) as ``failure``
    ``load`` with its message, anything else as :func:`record_failure` does; return the reason."""
    if not isinstance(e, EvalvaeError):
        return record_failure(writer, name, e)
    log.error("evalvae: %s", e)
    writer.add_vae({"vae": name, "status": "failed", "failure": "load", "error": str(e)})
    return str(e)


def log_failures(failed: dict[str, str], n_vaes: int) -> None:
    """With several VAEs, one line naming those that failed (each one's reason was logged as it failed)."""
    if failed and n_vaes > 1:
        rest = n_vaes - len(failed)
        others = (
            "nothing was evaluated"
            if not rest
            else "the other VAE's results are complete"
            if rest == 1
            else f"the other {rest} VAEs' results are complete"
        )
        log.error("%d of %d VAE(s) failed (%s, reasons above); %s", len(failed), n_vaes, ", ".join(failed), others)


def unavailable_metrics(metrics) -> list[str]:
    """``"<names> unavailable"`` for each metric of ``metrics`` that could not be built (its weights are
    missing): a metric asked for and not measured (:attr:`evalvae.jobs.runtime.RunOutcome.missing`)."""
    from evalvae.metrics import Unavailable, result_columns

    return [f"{'/'.join(result_columns(m))} unavailable" for m in metrics if isinstance(m, Unavailable)]


def closing_line(incomplete: list[str], strict: bool, out=None) -> str:
    """The last line of an incomplete job: what is missing and the exit status it gives (3, or 0 when
    ``strict`` is false)."""
    what = "; ".join(incomplete)
    kept = f"; the results written are in {out}" if out is not None else ""
    if strict:
        return f"evalvae: incomplete run (exit status 3): {what}{kept}; strict=false accepts an incomplete run"
    return f"incomplete run, accepted by strict=false (exit status 0): {what}{kept}"
