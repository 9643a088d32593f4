"""The reconstruction loop: encode, decode and score every image of a dataset with one VAE."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from evalvae.data.loader import Batch, Group
from evalvae.data.transforms import crop_to_multiple
from evalvae.jobs.runtime import StageTimes
from evalvae.metrics import PairMetric, from_uint8, to_pixels
from evalvae.vae import VAEAdapter


@dataclass
class BatchResult:
    rows: list[dict]
    skipped: list[tuple[str, str]]
    # Per group, on the VAE's device, uint8 (N, 3, H, W): the originals cropped to the downsampling
    # factor, exactly what the VAE and the per-image metrics saw (the input of the reference
    # statistics), and their reconstructions rounded to 8 bits; ``finite`` (N,) bool says which
    # reconstructions came from a finite output (the others are clamped NaN/inf, for no metric).
    originals: list[torch.Tensor] = field(default_factory=list)
    reconstructions: list[torch.Tensor] = field(default_factory=list)
    finite: list[torch.Tensor] = field(default_factory=list)

    def finite_reconstructions(self) -> list[torch.Tensor]:
        """Per group, the reconstructions of finite outputs only: the fakes of the set-level metrics."""
        return [rec if bool(ok.all()) else rec[ok] for rec, ok in zip(self.reconstructions, self.finite)]

    @property
    def n_nonfinite(self) -> int:
        return sum(bool(r["nonfinite"]) for r in self.rows)


def finite_images(y: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: which images of a float output hold no NaN or inf."""
    return torch.isfinite(y).flatten(1).all(1)


def score(
    metrics: list[PairMetric], original: torch.Tensor, recon: torch.Tensor, finite: torch.Tensor
) -> dict[str, list[float]]:
    """Per-image values of each metric; NaN for images whose output was not finite (never scored)."""
    n = len(original)
    if bool(finite.all()):
        return {m.name: m(original, recon).cpu().tolist() for m in metrics}
    keep = finite.nonzero().flatten().tolist()
    values = {}
    for m in metrics:
        column = [math.nan] * n
        if keep:
            for j, v in zip(keep, m(original[keep], recon[keep]).cpu().tolist()):
                column[j] = v
        values[m.name] = column
    return values


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
    encode: Callable[[Group, torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[BatchResult]:
    """Yield per-image metric rows for each batch (and, with ``keep_pixels``, the 8-bit images).

    Images are cropped to a multiple of the VAE's downsampling factor (a no-op under the default
    square protocol). With ``posterior=sample`` image ``i`` of the dataset uses seed ``seed + i``.
    Set-level metrics always see reconstructions rounded to 8 bits, whatever ``quantize`` says.
    An image whose float output holds NaN or inf gets ``nonfinite=True``, NaN for every metric,
    and ``False`` in ``BatchResult.finite``. ``encode(group, x)``, if given, returns the latents of a
    group's model input ``x`` in place of ``vae.encode`` (the latent cache of :mod:`evalvae.jobs.latents`).
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
                images = crop_to_multiple(group.images.to(vae.device, non_blocking=True), vae.downsample)
                x = from_uint8(images).contiguous(memory_format=memory_format)
                z = encode(group, x) if encode else vae.encode(x, seeds=[seed + i for i in group.indices])
            with times.stage("decode"):
                y = vae.decode(z.contiguous(memory_format=memory_format))
            with times.stage("metrics"):
                finite = finite_images(y)
                original = images.double()
                recon = to_pixels(y, quantize)
                values = score(metrics, original, recon, finite)
                if keep_pixels:
                    result.originals.append(images)
                    result.reconstructions.append((recon if quantize else recon.round()).nan_to_num_(0).to(torch.uint8))
                    result.finite.append(finite)
            h, w = images.shape[-2:]
            flags = finite.cpu().tolist()
            for j, image_id in enumerate(group.ids):
                row = {"vae": vae.name, "image": image_id}
                row.update({name: v[j] for name, v in values.items()})
                row.update(height=h, width=w, upscaled=group.upscaled[j], nonfinite=not flags[j])
                result.rows.append(row)
        yield result
