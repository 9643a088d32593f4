"""The bench's non-finite findings (:mod:`evalvae.vae.findings`), under the name the bench has always used."""

from __future__ import annotations

from evalvae.vae.findings import finding_for, load_findings, registry_path, update_findings, weights_identity

__all__ = ["finding_for", "load_findings", "registry_path", "update_findings", "weights_identity"]


def __getattr__(name: str):
    # a job's loading policy lives in evalvae.jobs.policy (it also honours force_upcast); kept importable here
    if name == "load_for_run":
        from evalvae.jobs.policy import load_for_run

        return load_for_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
