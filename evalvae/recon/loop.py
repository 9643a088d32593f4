"""The reconstruction loop: encode, decode and score every image of a dataset with one VAE."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from evalvae.data.loader import Batch, Group
from evalvae.data.transforms import crop_offsets, crop_to_multiple, rgb8_sha256
from evalvae.jobs.runtime import StageTimes
from evalvae.metrics import PairMetric, from_uint8, result_columns, to_pixels
from evalvae.metrics.regions import REGIONS, RegionMetric, shift_all
from evalvae.recon.heap import HeapTrimmer
from evalvae.recon.rate import Rate
from evalvae.vae import VAEAdapter


@dataclass
class BatchResult:
    rows: list[dict]
    skipped: list[tuple[str, str]]
    # Per group, on the VAE's device, uint8 (N, 3, H, W): the originals cropped to the downsampling
    # factor, exactly what the VAE and the per-image metrics saw (the input of the reference
    # statistics), and their reconstructions rounded to 8 bits; ``finite`` (N,) bool says which
    # reconstructions came from a finite output (the others are clamped NaN/inf, for no metric);
    # ``indices`` are the images' dataset positions, which pair a reconstruction with its original.
    originals: list[torch.Tensor] = field(default_factory=list)
    reconstructions: list[torch.Tensor] = field(default_factory=list)
    finite: list[torch.Tensor] = field(default_factory=list)
    indices: list[list[int]] = field(default_factory=list)
    # Per group the VAE could crop (every image of the batch but those below its factor), on the VAE's
    # device: all its originals, cropped, uint8 (N, 3, H, W), in the group's order; their dataset positions;
    # and which have a finite reconstruction among the fakes (False: left out by ``prepare_group``, such as
    # a missing file, or non-finite). The reference statistics are of all of them; a VAE whose fakes lack
    # some is scored against the originals of the others (evalvae.recon.task).
    scope: list[tuple[torch.Tensor, list[int], list[bool]]] = field(default_factory=list)

    def finite_reconstructions(self) -> list[torch.Tensor]:
        """Per group, the reconstructions of finite outputs only: the fakes of the set-level metrics."""
        return [rec if bool(ok.all()) else rec[ok] for rec, ok in zip(self.reconstructions, self.finite)]

    def finite_indices(self) -> list[list[int]]:
        """Per group, the dataset positions of :meth:`finite_reconstructions`' images, in the same order."""
        out = []
        for index, finite in zip(self.indices, self.finite):
            flags = finite.cpu().tolist()
            out.append([i for i, ok in zip(index, flags) if ok])
        return out

    @property
    def n_nonfinite(self) -> int:
        return sum(bool(r["nonfinite"]) for r in self.rows)


def finite_images(y: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: which images of a float output hold no NaN or inf."""
    return torch.isfinite(y).flatten(1).all(1)


def _call(m: PairMetric, original: torch.Tensor, recon: torch.Tensor, truth: list | None) -> dict[str, list]:
    """One metric's values by column (a region metric's per-region records under
    :data:`~evalvae.metrics.regions.REGIONS`, a list per image)."""
    out = m(original, recon, truth=truth) if m.takes_truth else m(original, recon)
    return {k: v if k == REGIONS else v.cpu().tolist() for k, v in out.items()}


def score(
    metrics: list[PairMetric],
    original: torch.Tensor,
    recon: torch.Tensor,
    finite: torch.Tensor,
    truth: list | None = None,
) -> dict[str, list]:
    """Per-image values of each metric by column; NaN for images whose output was not finite (never scored).

    ``truth`` (per image, the dataset's ground-truth regions or None) goes to the metrics that take it.
    Region metrics' records of all metrics go, per image, into one list under ``REGIONS``.
    """
    n = len(original)
    keep = list(range(n)) if bool(finite.all()) else finite.nonzero().flatten().tolist()
    values: dict[str, list] = {}
    for m in metrics:
        if not keep:
            got = {}
        elif len(keep) == n:
            got = _call(m, original, recon, truth)
        else:
            got = _call(m, original[keep], recon[keep], None if truth is None else [truth[j] for j in keep])
        declared = [*(i.name for i in m.infos), *([REGIONS] if isinstance(m, RegionMetric) else [])]
        for name in dict.fromkeys([*declared, *got]):
            column = values.setdefault(name, [[] for _ in range(n)] if name == REGIONS else [math.nan] * n)
            for j, v in zip(keep, got.get(name, [])):
                if name == REGIONS:
                    column[j].extend(v)
                else:
                    column[j] = v
    return values


def _without(group: Group, ids) -> Group:
    """``group`` less the images ``ids``."""
    keep = [j for j, i in enumerate(group.ids) if i not in ids]
    return Group(
        [group.indices[j] for j in keep],
        [group.ids[j] for j in keep],
        group.images[keep],
        [group.upscaled[j] for j in keep],
        None if group.truth is None else [group.truth[j] for j in keep],
    )


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
    rate: Rate | None = None,
) -> Iterator[BatchResult]:
    """Yield per-image metric rows for each batch (and, with ``keep_pixels``, the 8-bit images).

    Images are cropped to a multiple of the VAE's downsampling factor (a no-op under the default
    square protocol). With ``posterior=sample`` (and for a stochastic decoder) image ``i`` of the
    dataset uses seed ``seed + i``.
    Set-level metrics always see reconstructions rounded to 8 bits, whatever ``quantize`` says.
    An image whose float output holds NaN or inf gets ``nonfinite=True``, NaN for every metric,
    and ``False`` in ``BatchResult.finite``. ``encode(group, x)``, if given, returns the latents of a
    group's model input ``x`` in place of ``vae.encode`` (the latent cache of :mod:`evalvae.jobs.latents`).
    Images with a side below the VAE's downsampling factor (no crop to a multiple of it is left) and
    images the VAE's :meth:`~evalvae.vae.base.VAEAdapter.prepare_group` leaves out get no row; they are
    in ``BatchResult.skipped`` with ``"vae '<name>': <reason>"``; with ``keep_pixels`` the originals of
    those ``prepare_group`` left out are in ``BatchResult.scope`` all the same (those below the factor are not).
    ``rate`` decodes and adds the ``bpp`` columns (:mod:`evalvae.recon.rate`; default: no ``latent_bits``).
    """
    times = times or StageTimes(vae.device)
    rate = rate or Rate(quantize=quantize)
    heap = HeapTrimmer()  # freed batches back to the system, so memory stays flat over many images
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batches = iter(batches)
    while True:
        with times.stage("data"):
            heap.check()
            batch = next(batches, None)
        if batch is None:
            return
        result = BatchResult([], list(batch.skipped))
        for group in batch.groups_for(vae.downsample, f"vae '{vae.name}'", result.skipped):
            left_out = vae.prepare_group(group.ids, group.images)  # {id: reason}: e.g. evalvae.vae.files' missing
            whole = group
            if left_out:
                result.skipped += [(i, f"vae '{vae.name}': {why}") for i, why in left_out.items()]
                group = _without(group, left_out)
                if not group.ids:
                    if keep_pixels:
                        cropped = crop_to_multiple(whole.images.to(vae.device, non_blocking=True), vae.downsample)
                        result.scope.append((cropped, list(whole.indices), [False] * len(whole.ids)))
                    continue
            with times.stage("data"):  # what identifies the scored originals (per_image.image_sha256)
                hashes = rgb8_sha256(crop_to_multiple(group.images, vae.downsample))
            with times.stage("encode"):
                images = crop_to_multiple(group.images.to(vae.device, non_blocking=True), vae.downsample)
                truth = group.truth
                if truth is not None and images.shape != group.images.shape:  # the crop moved the origin
                    top, left = crop_offsets(*group.images.shape[-2:], vae.downsample)
                    truth = [shift_all(t, -left, -top) for t in truth]
                x = from_uint8(images).contiguous(memory_format=memory_format)
                z = encode(group, x) if encode else vae.encode(x, seeds=[seed + i for i in group.indices])
            with times.stage("decode"):
                y, rated = rate.decode(
                    vae,
                    z.contiguous(memory_format=memory_format),
                    images,
                    group.ids,
                    seeds=[seed + i for i in group.indices],
                )
            with times.stage("metrics"):
                finite = finite_images(y)
                original = images.double()
                recon = to_pixels(y, quantize)
                values = score(metrics, original, recon, finite, truth)
                flags = finite.cpu().tolist()
                # a non-finite reconstruction is left out of every metric, the rate's too (its facts stay)
                for name in result_columns(rate):
                    rated[name] = [v if ok else math.nan for v, ok in zip(rated[name], flags)]
                values.update(rated)
                if keep_pixels:
                    result.originals.append(images)
                    result.reconstructions.append((recon if quantize else recon.round()).nan_to_num_(0).to(torch.uint8))
                    result.finite.append(finite)
                    result.indices.append(list(group.indices))
                    if left_out:
                        cropped = crop_to_multiple(whole.images.to(vae.device, non_blocking=True), vae.downsample)
                        ok = dict(zip(group.ids, flags))
                        result.scope.append((cropped, list(whole.indices), [ok.get(i, False) for i in whole.ids]))
                    else:
                        result.scope.append((images, list(group.indices), flags))
            h, w = images.shape[-2:]
            for j, image_id in enumerate(group.ids):
                row = {"vae": vae.name, "image": image_id}
                row.update({name: v[j] for name, v in values.items()})
                row.update(
                    height=h, width=w, upscaled=group.upscaled[j], nonfinite=not flags[j], image_sha256=hashes[j]
                )
                result.rows.append(row)
        yield result
