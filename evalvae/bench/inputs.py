"""Realistic inputs: real photos for the encoder, their fp32 latents for the decoder.

Timing convolutions on zeros or on noise can differ from timing them on images (denormals,
non-finite values, data-dependent kernels), and fidelity on noise means little, so the bench
always encodes real photographs and decodes the latents of those photographs.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from evalvae.config import instantiate
from evalvae.errors import DatasetError
from evalvae.metrics.base import from_uint8
from evalvae.vae import VAEAdapter


def bench_images(dataset: DictConfig, resolution: int, count: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """``count`` photos from ``dataset`` at ``resolution`` x ``resolution``, as (count, 3, R, R) uint8.

    Images are drawn in a seeded random order (the same for every resolution), each resized and
    centre-cropped as the dataset's protocol says (``Resize(R, bicubic) + CenterCrop(R)``).
    A dataset with fewer readable images than ``count`` is cycled.
    """
    ds = instantiate(dataset, resolution=resolution, crop="center", small="upscale")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    images, ids, reasons = [], [], []
    for index in order:
        sample = ds[index]
        if sample.image is None:
            reasons.append(f"{sample.id}: {sample.reason}")
            continue
        images.append(sample.image)
        ids.append(sample.id)
        if len(images) == count:
            break
    if not images:
        raise DatasetError(f"dataset '{ds.name}' at {ds.root} has no readable image: " + "; ".join(reasons[:3]))
    n = len(images)
    for i in range(count - n):
        images.append(images[i % n])
        ids.append(ids[i % n])
    return torch.stack(images), ids


def reference_latents(vae: VAEAdapter, images: torch.Tensor) -> torch.Tensor:
    """Diffusion-space latents of ``images`` (uint8) from ``vae``, one image at a time, on the CPU.

    The bench calls this with the VAE in fp32 and plain mode, so every dtype and mode decodes
    the same latents; one image at a time keeps the memory of this step at batch size 1.
    """
    return torch.cat([vae.encode(from_uint8(im[None]).to(vae.device)).float().cpu() for im in images])
