"""What finished work is known by: the keys of result chunks (resume) and latent shards (the latent cache).

* **Batches.** A job cuts its dataset into batches fixed by position: batch ``b`` holds the
  images at positions ``b * batch_size`` to ``(b + 1) * batch_size - 1``. A batch is known by its
  images: each one's position (the posterior seed follows it), id and file sha256, the protocol
  geometry, and the version of the code that decodes and resizes them with Pillow's
  (:func:`evalvae.data.transforms.images_identity`). Fixing batches by position keeps every image
  in the same batch whatever was done before or runs elsewhere, so a result never depends on a
  cache hit or a shard.
* **Result chunks** (``<cache>/results/``, or ``<run>/chunks/`` with ``cache.results=false``): the
  per-image rows and per-item set-level features of one VAE on one batch, keyed by the VAE's
  identity (:func:`vae_identity`: adapter, the content hashes of its weight files, its config, the
  dtype it runs in; all known before loading it), the scoring protocol (each metric's protocol, code version and its libraries'
  versions, :func:`evalvae.metrics.base.pair_identity` and ``features_identity``; quantization,
  memory format, device type, seed), the reconstruction code's version (:data:`RECONSTRUCTION_VERSION`)
  with torch's and diffusers' versions, and the batch. A rerun, or a run started again after a kill,
  reads them instead of recomputing; the originals' features for the reference statistics are chunks too
  (every original of the batch the VAE's factor can crop), and a VAE's chunk holds the features of the
  originals it has no finite reconstruction of (:data:`ORIGINALS_VERSION`). Beside them, a VAE's
  record (:func:`record_key`: what ``vaes.json`` and ``timings.csv`` say of it), so that a rerun whose
  every batch of a VAE is done reads its results without loading it.
* **Latent shards** (``<cache>/latents/``): the latents of one encoder on one batch, keyed by the
  encoder's identity: the sha256 of its weights (not its name), the adapter, the latent
  convention (scaling, shift, posterior), dtype, memory mode, memory format and device type, the
  encoding code's version (:data:`LATENTS_VERSION`) and torch's and diffusers' versions.
  VAEs with equal encoders (kl-f8, ft-EMA and ft-MSE: Stability fine-tuned only the decoder)
  have equal keys, so within a run and across runs an image is encoded once per encoder. With
  ``cache.latents=false`` the shards live in the run directory and are removed at its end.

VAEs built in memory (``weights.kind == "module"``) have no identity that outlives the process, so
nothing of theirs is stored or shared. Adapters with ``stores_latents = False`` (:mod:`evalvae.vae.files`,
whose latents are the reconstructions read from files) have no latent shards. :class:`evalvae.store.Store` does the storing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import evalvae
from evalvae.checkpoints import weight_files
from evalvae.data.transforms import images_identity
from evalvae.jobs.policy import run_dtype
from evalvae.provenance import versions
from evalvae.store import digest

FORMAT = 2  # of the keys and of what a chunk holds (2: rows carry image_sha256)
# Bump with any change to evalvae's code that moves a VAE's latents (the adapters' encode, the crop to
# the factor and the conversion to [-1, 1]): every latent shard and result chunk is then computed again.
LATENTS_VERSION = 1
# Bump with any change that moves reconstructions or what is scored of them (the adapters' decode,
# tiling, the rounding to 8 bits, bpp): every result chunk is then computed again.
RECONSTRUCTION_VERSION = 1
# Bump with any change to which originals' features the result chunks hold: every result chunk and originals
# chunk is then computed again. 2: an originals chunk holds every original of its batch the VAE's factor can
# crop, including those the VAE left out, and a result chunk the features of the originals without a finite
# reconstruction (``drop/``); before, both held only the originals the VAE reconstructed.
ORIGINALS_VERSION = 2
VAE_LIBRARIES = ("torch", "diffusers")  # the packages that run the VAEs' networks


def vae_code() -> dict:
    """What latents depend on of evalvae's and the libraries' code (in every latent and result key)."""
    return {"latents_version": LATENTS_VERSION, "libraries": versions(VAE_LIBRARIES)}


def _class(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def vae_identity(spec: Mapping, cache: Path, vae=None) -> dict | None:
    """What a VAE's reconstructions depend on: its adapter, its config, the content hashes of the files its
    weights are read from (:func:`evalvae.checkpoints.weight_files`) and the dtype it runs in.

    Before loading (``vae`` None) the dtype is :func:`evalvae.jobs.policy.run_dtype`'s; None where the files
    or the dtype cannot be told yet. After loading, the dtype that ran, and the files the adapter read where
    the spec does not tell them (an unpinned download, reconstructions read from files); None for a VAE
    built in memory.
    """
    plain = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
    if vae is not None and vae.weights.kind == "module":
        return None
    found = weight_files(plain, cache)
    if vae is None:
        dtype = run_dtype(plain, found[1]) if found is not None else None
        if dtype is None:
            return None
        files = found[0]
    else:
        files, dtype = (found[0] if found is not None else dict(vae.weights.files)), vae.dtype_name
    # the dtype that runs is keyed: the dtype asked for and upcast only choose it; the files, not where they are
    config = {k: v for k, v in plain.items() if k not in ("source", "dtype", "upcast", "cache_dir", "device")}
    return {"adapter": plain.get("_target_"), "files": files, "config": config, "dtype": dtype}


def record_key(identity: dict, spec: Mapping, device: torch.device) -> str:
    """The key of what ``vaes.json`` and ``timings.csv`` say of a VAE read from ``spec``'s source and run on
    ``device`` (they name both), so that a VAE whose every batch is done is described without loading it."""
    where = [str(spec.get("source")), str(device)]
    return digest({"format": FORMAT, "record": identity, "where": where, "evalvae": evalvae.__version__})


def encoder_identity(vae, *, device: torch.device, channels_last: bool, seed: int) -> dict | None:
    """What ``vae``'s latents depend on, by the content of its encoder's weights; None for a VAE built in memory
    or one that stores no latents (``stores_latents``: the reconstructions of :mod:`evalvae.vae.files`)."""
    if vae.weights.kind == "module" or not vae.stores_latents:
        return None
    return {
        "format": FORMAT,
        "encoder_sha256": vae.encoder_hash,
        "adapter": getattr(vae, "encoder_kind", None) or _class(vae),
        "latent_space": [vae.latent_space.family, vae.latent_channels, vae.downsample],
        "scaling_factor": vae.scaling_factor,
        "shift_factor": vae.shift_factor,
        "posterior": vae.posterior,
        "seed": seed if vae.posterior == "sample" else None,
        "dtype": vae.dtype_name,
        **({"precision": vae.precision} if vae.precision != vae.dtype_name else {}),  # tf32
        **({"compile": vae.compiled} if vae.compiled else {}),
        "memory_mode": [vae.memory_mode, vae.tile_size],
        "device": device.type,
        "channels_last": bool(channels_last),
        "code": vae_code(),
    }


class BatchPlan:
    """The dataset's batches, fixed by position, and what each is known by (None: not identifiable)."""

    def __init__(self, dataset, batch_size: int):
        n = len(dataset)
        self.batch_size = batch_size
        self.positions = [
            list(range(b * batch_size, min((b + 1) * batch_size, n))) for b in range(math.ceil(n / batch_size))
        ]
        self.keys: list[str | None] = [None] * len(self.positions)
        digests = dataset.file_digests() if hasattr(dataset, "file_digests") else None
        if digests is not None:
            geometry = dataset.geometry.describe()
            for b, positions in enumerate(self.positions):
                images = [[i, dataset.records[i].id, digests[i]] for i in positions]
                self.keys[b] = digest(
                    {"format": FORMAT, "geometry": geometry, "decoding": images_identity(), "images": images}
                )

    def __len__(self) -> int:
        return len(self.positions)


def result_key(vae: dict, protocol: dict, batch: str) -> str:
    code = {
        **vae_code(),
        "reconstruction_version": RECONSTRUCTION_VERSION,
        "originals_version": ORIGINALS_VERSION,
        "evalvae": evalvae.__version__,
    }
    return digest({"format": FORMAT, "code": code, "vae": vae, "protocol": protocol, "batch": batch})


def originals_key(metric_identity: dict, crop_multiple: int | None, batch: str) -> str:
    return digest(
        {
            "format": FORMAT,
            "version": ORIGINALS_VERSION,
            "originals": metric_identity,
            "crop_multiple": crop_multiple,
            "batch": batch,
        }
    )


def latent_key(encoder: dict, batch: str, group: list[int]) -> str:
    return digest({"encoder": encoder, "batch": batch, "group": group})
