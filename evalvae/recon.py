"""The reconstruction loop: encode, decode and score every image of a dataset with one VAE."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from evalvae.data.loader import Batch
from evalvae.data.transforms import crop_to_multiple
from evalvae.device import synchronize
from evalvae.metrics import PairMetric, from_uint8, to_pixels
from evalvae.vae import VAEAdapter


@dataclass
class StageTimes:
    """Wall-clock seconds per stage; the device is synchronised at each stage boundary."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def stage(self, name: str):
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] += time.perf_counter() - start


@dataclass
class BatchResult:
    rows: list[dict]
    skipped: list[tuple[str, str]]
    # Per group, on the VAE's device: the originals as the dataset yields them, uint8 (N, 3, H, W), the
    # input of the reference statistics; the reconstructions of their crop to the downsampling factor,
    # rounded to 8 bits.
    originals: list[torch.Tensor] = field(default_factory=list)
    reconstructions: list[torch.Tensor] = field(default_factory=list)


def reconstruct(
    vae: VAEAdapter,
    batches: Iterable[Batch],
    metrics: list[PairMetric],
    *,
    quantize: bool = True,
    channels_last: bool = False,
    seed: int = 0,
    times: StageTimes | None = None,
    keep_pixels: bool = False,
) -> Iterator[BatchResult]:
    """Yield per-image metric rows for each batch (and, with ``keep_pixels``, the 8-bit images).

    Images are cropped to a multiple of the VAE's downsampling factor (a no-op under the default
    square protocol). With ``posterior=sample`` image ``i`` of the dataset uses seed ``seed + i``.
    Set-level metrics always see reconstructions rounded to 8 bits, whatever ``quantize`` says.
    """
    times = times or StageTimes(vae.device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batches = iter(batches)
    while True:
        with times.stage("data"):
            batch = next(batches, None)
        if batch is None:
            return
        result = BatchResult([], batch.skipped)
        for group in batch.groups:
            with times.stage("encode"):
                uncropped = group.images.to(vae.device, non_blocking=True)
                images = crop_to_multiple(uncropped, vae.downsample)
                x = from_uint8(images).contiguous(memory_format=memory_format)
                z = vae.encode(x, seeds=[seed + i for i in group.indices])
            with times.stage("decode"):
                y = vae.decode(z.contiguous(memory_format=memory_format))
            with times.stage("metrics"):
                original = images.double()
                recon = to_pixels(y, quantize)
                values = {m.name: m(original, recon).cpu().tolist() for m in metrics}
                if keep_pixels:
                    result.originals.append(uncropped)
                    result.reconstructions.append((recon if quantize else recon.round()).to(torch.uint8))
            h, w = images.shape[-2:]
            for j, image_id in enumerate(group.ids):
                row = {"vae": vae.name, "image": image_id}
                row.update({name: v[j] for name, v in values.items()})
                row.update(height=h, width=w, upscaled=group.upscaled[j])
                result.rows.append(row)
        yield result
