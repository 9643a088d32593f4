"""The precision a job evaluates a VAE in: the dtype asked for, or fp32 as ``vae.<name>.upcast`` says.

One policy for every task (``task=recon`` and ``task=t2i``), applied by :func:`load_for_run`:

* ``upcast=auto`` (the default): a VAE whose model config sets ``force_upcast`` (the SDXL VAE) and
  that is asked for in fp16 runs in fp32, as diffusers' SDXL pipelines decode it (``needs_upcasting =
  vae.dtype == torch.float16 and vae.config.force_upcast``). bf16 is left alone, as in those
  pipelines: bf16 has fp32's exponent range, so the overflow the flag guards against does not
  happen. (diffusers' img2img pipelines also encode in fp32 under the flag whatever the dtype;
  evalvae runs one dtype for both halves and follows the decode rule.)
* ``upcast=always``: fp32 whenever fp16 or bf16 is asked for. ``evalvae bench`` prints this override
  for each VAE whose outputs it found non-finite in a reduced precision.
* ``upcast=never``: the dtype asked for, whatever the config says.

Nothing else changes the dtype: no file of an earlier job is read. An upcast is logged, ``vaes.json``
records ``upcast``, ``dtype`` (what ran), ``dtype_requested`` and ``upcast_reason``, and ``timings.csv``
the dtype that ran. Upcasting rather than refusing keeps a multi-VAE run going and its quality
numbers meaningful.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from evalvae.device import release_memory
from evalvae.vae import VAEAdapter, load_vae

log = logging.getLogger(__name__)


def upcast_reason(vae: VAEAdapter) -> str | None:
    """Why ``vae``, as loaded, must run in fp32 instead; None if its dtype stands."""
    if vae.dtype_name == "fp32" or vae.upcast == "never":
        return None
    if vae.upcast == "always":
        return f"vae.{vae.name}.upcast=always"
    if vae.dtype_name == "fp16" and vae.force_upcast:
        return "its config sets force_upcast, so diffusers' pipelines decode it in fp32 when it is fp16"
    return None


def run_dtype(spec: Mapping, config: dict | None) -> str | None:
    """The dtype :func:`load_for_run` gives ``spec``, told from its model ``config`` (``config.json``, without
    loading the weights); None where it depends on a ``force_upcast`` that cannot be read (``config`` None)."""
    asked, upcast = spec.get("dtype") or "fp32", spec.get("upcast") or "auto"
    if asked == "fp32" or upcast == "never":
        return asked
    if upcast == "always":
        return "fp32"
    if asked != "fp16":
        return asked
    force = spec.get("force_upcast")
    if force is None:
        if config is None:
            return None
        force = config.get("force_upcast", False)
    return "fp32" if force else asked


def load_for_run(name: str, spec: Mapping, *, device, cache_dir: str | None) -> VAEAdapter:
    """``load_vae``, then the policy above: a VAE that must not run in its dtype is loaded again in fp32.

    The reduced-precision copy is released before the fp32 one loads, so the two are never held
    together (nor counted together in the run's peak memory); under ``upcast=always`` only the fp32
    one loads. Weights are read again rather than cast up, so the fp32 VAE has the checkpoint's own values.
    """
    asked = spec.get("dtype", "fp32")
    if spec.get("upcast") == "always" and asked in ("fp16", "bf16"):
        return _in_fp32(name, spec, device, cache_dir, asked, f"vae.{name}.upcast=always")
    vae = load_vae(name, spec, device=device, cache_dir=cache_dir)
    reason = upcast_reason(vae)
    if reason is None:
        return vae
    requested = vae.dtype_name
    del vae
    release_memory(torch.device(device))
    return _in_fp32(name, spec, device, cache_dir, requested, reason)


def _in_fp32(name: str, spec: Mapping, device, cache_dir: str | None, requested: str, reason: str) -> VAEAdapter:
    asked_for = spec.get("upcast") == "always"  # a warning only where the run did not ask for it itself
    (log.info if asked_for else log.warning)(
        "VAE '%s': %s; evaluating it in fp32 instead of %s.", name, reason, requested
    )
    vae = load_vae(name, {**spec, "dtype": "fp32"}, device=device, cache_dir=cache_dir)
    vae.dtype_requested, vae.upcast_reason = requested, reason
    return vae
