"""The reconstruction loop: encode, decode and score every image of a dataset with one VAE."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from evalvae.data.loader import Batch, Group
from evalvae.data.transforms import crop_offsets, crop_to_multiple, rgb8_sha256
from evalvae.device import host_copy, release_memory
from evalvae.jobs.runtime import StageTimes
from evalvae.metrics import PairMetric, from_uint8, result_columns, to_pixels
from evalvae.metrics.regions import REGIONS, RegionMetric, shift_all
from evalvae.recon.heap import HeapTrimmer
from evalvae.recon.rate import Rate
from evalvae.vae import VAEAdapter

log = logging.getLogger(__name__)


@dataclass
class _Scored:
    """One group's work as the loop issued it: what its rows are made of once its values are on the host."""

    group: Group  # the images scored (less those prepare_group left out)
    whole_ids: list[str]  # the ids of the whole group, in order (the scope's)
    hashes: list[str]
    values: dict[str, torch.Tensor | list]  # per metric column, one value per image (device tensors until settled)
    rated: dict[str, list]  # the rate's columns; those in ``rate_results`` are left out for a non-finite output
    finite: torch.Tensor  # (N,) bool, on the device until settled
    size: tuple[int, int]
    rate_results: frozenset[str] = frozenset()


@dataclass
class BatchResult:
    skipped: list[tuple[str, str]]
    vae: str = ""
    # Per group, on the VAE's device, uint8 (N, 3, H, W): the originals cropped to the downsampling
    # factor, exactly what the VAE and the per-image metrics saw (the input of the reference
    # statistics), and their reconstructions rounded to 8 bits (a non-finite output is all zeros here);
    # ``finite`` (N,) bool says which reconstructions came from a finite output (the others are for no
    # metric); ``indices`` are the images' dataset positions, which pair a reconstruction with its original.
    originals: list[torch.Tensor] = field(default_factory=list)
    reconstructions: list[torch.Tensor] = field(default_factory=list)
    finite: list[torch.Tensor] = field(default_factory=list)
    indices: list[list[int]] = field(default_factory=list)
    # Per group the VAE could crop (every image of the batch but those below its factor), on the VAE's
    # device: all its originals, cropped, uint8 (N, 3, H, W), in the group's order; their dataset positions;
    # and which have a finite reconstruction among the fakes (False: left out by ``prepare_group``, such as
    # a missing file, or non-finite). The reference statistics are of all of them; a VAE whose fakes lack
    # some is scored against the originals of the others (evalvae.recon.task). The flags are known once the
    # batch is on the host (:attr:`rows`).
    scope: list[tuple[torch.Tensor, list[int], list[bool] | None]] = field(default_factory=list)
    _scored: list[_Scored] = field(default_factory=list)
    _rows: list[dict] | None = None
    _event: object = None  # a CUDA event after the copies of :meth:`to_host`

    def to_host(self, *extra: list[dict[str, torch.Tensor]]) -> list[list[dict[str, torch.Tensor]]]:
        """Start copying the batch's per-image values, finite flags and ``extra`` (per group, tensors by key: the
        set metrics' features) to the host, without waiting: non-blocking copies into pinned memory, then an event
        that :attr:`rows` waits for. The work of later batches can be queued meanwhile, so the device never waits
        for the host. Returns ``extra`` with host tensors (valid once :attr:`rows` has been read)."""
        cuda = any(sc.finite.device.type == "cuda" for sc in self._scored)
        moved = [[{k: host_copy(v) for k, v in d.items()} for d in groups] for groups in extra]
        for sc in self._scored:
            sc.values = {k: host_copy(v) for k, v in sc.values.items()}
            sc.finite = host_copy(sc.finite)
        if self.finite:  # with keep_pixels, one per scored group, in order
            self.finite = [sc.finite for sc in self._scored]
        if cuda:
            self._event = torch.cuda.Event()
            self._event.record()
        return moved

    @property
    def rows(self) -> list[dict]:
        """Per image, its row (the VAE, the image, each metric's value, its facts); computed once, on first use,
        after the values reached the host."""
        if self._rows is None:
            self._settle()
        return self._rows

    def _settle(self) -> None:
        if self._event is not None:
            self._event.synchronize()
        self._rows = []
        pending = iter([i for i, entry in enumerate(self.scope) if entry[2] is None])  # one per scored group
        for sc in self._scored:
            flags = [bool(f) for f in sc.finite.tolist()]
            values = {name: masked(name, v, flags) for name, v in sc.values.items()}
            for name, column in sc.rated.items():  # a non-finite output is left out of the rate's results too
                values[name] = masked(name, column, flags) if name in sc.rate_results else column  # (not its facts)
            h, w = sc.size
            for j, image_id in enumerate(sc.group.ids):
                row = {"vae": self.vae, "image": image_id}
                row.update({name: v[j] for name, v in values.items()})
                row.update(
                    height=h, width=w, upscaled=sc.group.upscaled[j], nonfinite=not flags[j], image_sha256=sc.hashes[j]
                )
                self._rows.append(row)
            if self.scope:
                ok = dict(zip(sc.group.ids, flags))
                i = next(pending)
                images, index, _ = self.scope[i]
                self.scope[i] = (images, index, [ok.get(x, False) for x in sc.whole_ids])


def finite_images(y: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: which images of a float output hold no NaN or inf."""
    return torch.isfinite(y).flatten(1).all(1)


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
    flags = finite.cpu().tolist()
    return {k: masked(k, v, flags) for k, v in score_on_device(metrics, original, recon, finite, truth).items()}


def masked(name: str, column: torch.Tensor | list, flags: list[bool]) -> list:
    """A column's per-image values on the host, those of non-finite outputs left out: NaN (no records under
    ``REGIONS``)."""
    column = column if isinstance(column, list) else column.tolist()
    return [x if ok else ([] if name == REGIONS else math.nan) for x, ok in zip(column, flags)]


def score_on_device(
    metrics: list[PairMetric],
    original: torch.Tensor,
    recon: torch.Tensor,
    finite: torch.Tensor,
    truth: list | None = None,
) -> dict[str, torch.Tensor | list]:
    """:func:`score`'s values before the host sees them: per column a tensor on the device the metric ran on
    (a list for a metric computed on the host, and for ``REGIONS``), with a value for every image, the
    non-finite ones included (their values mean nothing: :attr:`BatchResult.rows` makes them NaN).

    Nothing here waits for the device: each metric sees every image, a non-finite reconstruction replaced by
    zeros (so no metric is ever fed NaN or inf), and whether any output was non-finite is never asked.
    """
    recon = torch.where(finite.view(-1, 1, 1, 1), recon, torch.zeros((), dtype=recon.dtype, device=recon.device))
    values: dict[str, torch.Tensor | list] = {}
    for m in metrics:
        got = m(original, recon, truth=truth) if m.takes_truth else m(original, recon)
        declared = [*(i.name for i in m.infos), *([REGIONS] if isinstance(m, RegionMetric) else [])]
        for name in dict.fromkeys([*declared, *got]):
            v = got.get(name)
            if name == REGIONS:
                column = values.setdefault(REGIONS, [[] for _ in range(len(original))])
                for j, records in enumerate(v or []):
                    column[j].extend(records)
            else:
                values[name] = v.detach() if v is not None else torch.full((len(original),), math.nan)
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
    masked = frozenset(result_columns(rate))

    def issue(result: BatchResult, group: Group, whole: Group, left_out: dict) -> None:
        """Queue ``group``'s work on the device and add it to ``result`` (nothing here waits for the device)."""
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
            recon = to_pixels(y, quantize)
            values = score_on_device(metrics, images.double(), recon, finite, truth)
            if keep_pixels:  # (all allocated before anything is added: a batch that ran out of memory adds nothing)
                rec8 = (recon if quantize else recon.round()).nan_to_num_(0).to(torch.uint8)
                cropped = (
                    crop_to_multiple(whole.images.to(vae.device, non_blocking=True), vae.downsample)
                    if left_out
                    else images
                )
                scope = (cropped, list(whole.indices), None)  # its flags: once on the host
                result.originals.append(images)
                result.reconstructions.append(rec8)
                result.finite.append(finite)
                result.indices.append(list(group.indices))
                result.scope.append(scope)
            result._scored.append(
                _Scored(group, list(whole.ids), hashes, values, rated, finite, images.shape[-2:], masked)
            )

    def split_on_oom(result: BatchResult, group: Group, whole: Group, left_out: dict) -> None:
        """:func:`issue`, in halves while the device runs out of memory (a batch larger than a VAE fits, as
        ``batch_size=auto`` sized by an earlier VAE may be): the numbers do not depend on the batch."""
        try:
            issue(result, group, whole, left_out)
        except torch.OutOfMemoryError:
            if len(group.ids) < 2 or left_out:
                raise
            release_memory(vae.device)
            half = len(group.ids) // 2
            log.warning(
                "VAE '%s': out of memory on a batch of %d images; it is run in halves (a smaller batch_size avoids "
                "the retries)",
                vae.name,
                len(group.ids),
            )
            first, second = set(group.ids[:half]), set(group.ids[half:])
            split_on_oom(result, _without(group, second), _without(whole, second), left_out)
            split_on_oom(result, _without(group, first), _without(whole, first), left_out)

    batches = iter(batches)
    while True:
        with times.stage("data"):
            heap.check()
            batch = next(batches, None)
        if batch is None:
            return
        result = BatchResult(list(batch.skipped), vae.name)
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
            split_on_oom(result, group, whole, left_out)
        yield result
