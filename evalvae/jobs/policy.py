"""The precision a job evaluates a VAE in: the one asked for, or fp32 where fp16/bf16 is known to fail.

One policy for every task (``task=recon`` and ``task=t2i``), applied by :func:`load_for_run`:

* **force_upcast.** A VAE whose model config sets ``force_upcast`` (the SDXL VAE) and that is asked
  for in fp16 runs in fp32, as diffusers' SDXL pipelines decode it (``needs_upcasting =
  vae.dtype == torch.float16 and vae.config.force_upcast``). bf16 is left alone, as in those
  pipelines: bf16 has fp32's exponent range, so the overflow the flag guards against does not
  happen. (diffusers' img2img pipelines also encode in fp32 under the flag whatever the dtype;
  evalvae runs one dtype for both halves and follows the decode rule.)
* **The bench's findings.** A VAE whose weights ``evalvae bench`` found non-finite in the asked
  dtype runs in fp32 (see :mod:`evalvae.vae.findings`).

Either way a warning says so, ``vaes.json`` records ``dtype`` (what ran), ``dtype_requested``
and ``upcast_reason``, and ``timings.csv`` the dtype that ran. Upcasting rather than refusing keeps
a multi-VAE run going and its quality numbers meaningful.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from evalvae.device import release_memory
from evalvae.vae import VAEAdapter, load_vae
from evalvae.vae.findings import finding_for, registry_path

log = logging.getLogger(__name__)


def upcast_reason(vae: VAEAdapter, cache_dir: str | None) -> str | None:
    """Why ``vae``, as loaded, must run in fp32 instead; None if its dtype stands."""
    if vae.dtype_name == "fp16" and vae.force_upcast:
        return "its config sets force_upcast, so diffusers' pipelines decode it in fp32 when it is fp16"
    finding = finding_for(vae, cache_dir)
    if finding is not None:
        where = ", ".join(f"{w['op']} at {w['resolution']} px" for w in finding["nonfinite"][:3])
        return (
            f"evalvae bench found non-finite {vae.dtype_name} outputs for these weights ({where}; {finding.get('date', '?')}); "
            f"the finding is in {registry_path(cache_dir)}, and a bench that runs finite in {vae.dtype_name} clears it"
        )
    return None


def load_for_run(name: str, spec: Mapping, *, device, cache_dir: str | None) -> VAEAdapter:
    """``load_vae``, then the policy above: a VAE that must not run in its dtype is reloaded in fp32.

    The reduced-precision copy is released before the fp32 one loads, so the two are never held
    together (nor counted together in the run's peak memory). Weights are read again rather than
    cast up, so the fp32 VAE has the checkpoint's own values.
    """
    vae = load_vae(name, spec, device=device, cache_dir=cache_dir)
    reason = upcast_reason(vae, cache_dir)
    if reason is None:
        return vae
    requested = vae.dtype_name
    log.warning("VAE '%s': %s; evaluating it in fp32 instead of %s.", name, reason, requested)
    del vae
    release_memory(torch.device(device))
    upcast = load_vae(name, {**spec, "dtype": "fp32"}, device=device, cache_dir=cache_dir)
    upcast.dtype_requested, upcast.upcast_reason = requested, reason
    return upcast
