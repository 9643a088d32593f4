"""Batched loading in worker processes, so image decoding overlaps the model's compute."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from evalvae.data.datasets import ImageDataset, Sample
from evalvae.data.streaming import StreamingDataset
from evalvae.data.transforms import below_factor


@dataclass
class Group:
    """Images of one shape, stacked: ``images`` is ``(N, 3, H, W)`` uint8."""

    indices: list[int]
    ids: list[str]
    images: torch.Tensor
    upscaled: list[bool]
    truth: list | None = None  # per image, its ground-truth regions (None: the dataset gives none)


@dataclass
class Batch:
    groups: list[Group] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image id, reason)

    @property
    def n_images(self) -> int:
        return sum(len(g.ids) for g in self.groups)

    def groups_for(self, factor: int, who: str, skipped: list[tuple[str, str]]) -> Iterator[Group]:
        """The groups a model of downsampling ``factor`` can crop; each other group's images go to ``skipped``
        as ``(id, "<who>: <reason>")`` (:func:`~evalvae.data.transforms.below_factor`)."""
        for group in self.groups:
            too_small = below_factor(*group.images.shape[-2:], factor)  # the group's images share a size
            if too_small:
                skipped += [(i, f"{who}: {too_small}") for i in group.ids]
            else:
                yield group


def collate(samples: list[Sample]) -> Batch:
    """Stack same-shape images (all of them under ``crop=center``); set skipped samples aside."""
    batch = Batch()
    by_shape: dict[tuple, list[Sample]] = {}
    for s in samples:
        if s.image is None:
            batch.skipped.append((s.id, s.reason))
        else:
            by_shape.setdefault(tuple(s.image.shape), []).append(s)
    for g in by_shape.values():
        truth = [s.truth for s in g] if any(s.truth is not None for s in g) else None
        images = torch.stack([s.image for s in g])
        batch.groups.append(Group([s.index for s in g], [s.id for s in g], images, [s.upscaled for s in g], truth))
    return batch


def make_loader(
    dataset: ImageDataset | StreamingDataset, batch_size: int, workers: int, device, batches=None
) -> DataLoader:
    """A DataLoader in dataset order; ``workers`` processes decode ahead of the model.

    ``batches`` (dataset positions, one list per batch) loads just those batches, in that order,
    each exactly as given: how a job runs only the batches it has not finished, or its shard.
    A streamed dataset keeps its order too: its workers decode alternate blocks of ``batch_size``
    items, which the DataLoader collects in turn (see :mod:`evalvae.data.streaming`).
    """
    if isinstance(dataset, StreamingDataset):
        if batches is not None:
            raise ValueError("a streamed dataset is read in order; it cannot load chosen batches")
        dataset = dataset.in_blocks(batch_size)
    common = dict(num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda")
    common["prefetch_factor"] = 4 if workers > 0 else None
    if batches is not None:
        return DataLoader(dataset, batch_sampler=batches, **common)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)
