"""Datasets read as a stream (Hugging Face ``datasets``, webdataset tar shards): a torch ``IterableDataset``.

A :class:`StreamingDataset` yields the same :class:`~evalvae.data.datasets.Sample` objects as an
:class:`~evalvae.data.datasets.ImageDataset`, in the source's order, ``index`` being the running
position (0, 1, 2, ...) over the whole stream. Each item's encoded bytes are decoded by
:func:`~evalvae.data.images.load_rgb8`, the rule every file goes through, so a streamed image equals
the same file read from a folder pixel for pixel. An item that cannot be decoded is a skipped
sample with the reason, never dropped.

Nothing is kept: the stream is read item by item and every image is handed on, so memory stays flat
whatever the size of the dataset.

Loader workers (see :func:`evalvae.data.loader.make_loader`): with ``W`` workers and batch size
``B`` the stream is cut into blocks of ``B`` consecutive items and worker ``w`` decodes blocks
``w, w + W, w + 2W, ...``; the DataLoader collects batches from its workers in turn, so batches come
out as blocks 0, 1, 2, ...: the order of a single process, and every image decoded once (a
DataLoader built elsewhere gets blocks of one item: still disjoint, but its batches interleave). Each
worker reads the whole stream (it must, to count positions) and skips the bytes of items it does
not own; with a remote source that is ``W`` downloads, so keep ``workers`` small there.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from torch.utils.data import IterableDataset, get_worker_info

from evalvae.data.datasets import Sample, check_shard
from evalvae.data.images import UnreadableImage, load_rgb8
from evalvae.data.transforms import Geometry, TooSmall
from evalvae.errors import EvalvaeError, check_positive_int

INSTALL = 'pip install "evalvae[stream]"'


class MissingDependency(EvalvaeError):
    """An optional package a dataset needs is not installed."""


def require(module: str, dataset: str):
    """Import ``module`` for ``dataset=<dataset>``, or raise :class:`MissingDependency` with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        why = f"dataset={dataset} needs the '{module}' package, which cannot be imported ({e}); install it with: {INSTALL}"
        raise MissingDependency(why) from None


@dataclass
class Item:
    """One item of a stream before decoding."""

    id: str | None  # None: the running index, zero-padded to 6 digits
    data: bytes | str | None = None  # the encoded image file, or a path/URL to read it from
    reason: str = ""  # why there is no image (data None)


class StreamingDataset(IterableDataset):
    """Images of a stream decoded to 8-bit RGB and put through the protocol geometry, in the stream's order.

    Subclasses provide :meth:`items` (the raw stream) and :meth:`identity` (what names it).
    ``size`` is the number of items if known before reading (``limit``, or the source's metadata),
    else None; ``len()`` raises ``TypeError`` when it is None.
    """

    def __init__(self, name: str, root: str, geometry: Geometry, limit: int | None = None, size: int | None = None):
        if limit is not None:
            check_positive_int("dataset.limit", limit, "a positive integer, or null for all images")
        self.name, self.root, self.geometry, self.limit = name, root, geometry, limit
        self.listing_skipped: list[tuple[str, str]] = []  # a stream has no listing: every item is a sample
        self.size = size if limit is None else (limit if size is None else min(limit, size))
        self.shards: tuple[tuple[int, int], ...] = ()  # (rank, world_size) views, applied in turn
        self.block = 1  # items per worker block (the loader's batch size)

    # --- what a source provides
    def items(self) -> Iterator[Item]:
        raise NotImplementedError

    def identity(self) -> dict:
        raise NotImplementedError

    def file_stamps(self) -> list:
        """``[path, size, mtime_ns]`` of the local files the stream reads, where a source lists them."""
        return []

    def read(self, location: str) -> bytes:
        """The bytes of an item given by path or URL (sources whose items point at files)."""
        with open(location, "rb") as f:
            return f.read()

    # --- the dataset interface
    def __len__(self) -> int:
        n = self.size
        if n is None:
            raise TypeError(
                f"dataset '{self.name}' ({self.root}) is streamed and its size is not known before it is read; "
                "set dataset.limit to bound it"
            )
        for rank, world in self.shards:
            n = len(range(rank, n, world))
        return n

    def __bool__(self) -> bool:
        return True  # not len(): a stream of unknown size is still a dataset

    def __iter__(self) -> Iterator[Sample]:
        positions = self.positions()
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            positions = _blocks(positions, self.block, info.id, info.num_workers)
        for index, item in positions:
            yield self.sample(index, item)

    def positions(self) -> Iterator[tuple[int, Item]]:
        """``(index, item)`` of this view, before decoding: the first ``limit`` items, then each shard's part."""
        positions: Iterator[tuple[int, Item]] = enumerate(islice(self.items(), self.limit))
        for rank, world in self.shards:
            positions = _every(positions, rank, world)
        return positions

    def sample(self, index: int, item: Item) -> Sample:
        image_id = item.id if item.id is not None else f"{index:06d}"
        if item.data is None:
            return Sample(index, image_id, reason=item.reason or "no image")
        try:
            data = self.read(item.data) if isinstance(item.data, str) else item.data
            rgb, _ = load_rgb8(io.BytesIO(data))
            image, upscaled = self.geometry.apply(rgb)
        except (UnreadableImage, TooSmall) as e:
            return Sample(index, image_id, reason=str(e))
        except OSError as e:
            return Sample(index, image_id, reason=f"cannot read {item.data}: {e}")
        return Sample(index, image_id, image, upscaled)

    def describe(self) -> dict:
        head = {"name": self.name, "root": self.root, "n_files": self.size, "streaming": True}
        return {**head, "source": self.identity(), **self.geometry.describe()}

    def fingerprint(self) -> str:
        """sha256 of the declared identity (:meth:`identity`: source, subset, split, revision, limit,
        image column), plus the size and modification time of the local files it lists (tar shards).

        A stream cannot be hashed before it is read, so unlike a folder's content hash this names the
        data rather than measuring it: equal declarations hash equally, and data changed behind an
        unchanged declaration (an unpinned hub revision) is not seen. Pin ``dataset.revision`` to a
        commit where the reference statistics cache must stay exact. It is the whole dataset's, for
        every shard of it.
        """
        doc = json.dumps({"identity": self.identity(), "files": self.file_stamps()}, sort_keys=True, default=str)
        return hashlib.sha256(doc.encode()).hexdigest()

    def shard(self, rank: int, world_size: int) -> StreamingDataset:
        """A view yielding only the items with ``index % world_size == rank`` (original indices kept)."""
        check_shard(rank, world_size)
        view = copy.copy(self)
        view.shards = (*self.shards, (rank, world_size))
        return view

    def in_blocks(self, block: int) -> StreamingDataset:
        """A view whose loader workers take blocks of ``block`` consecutive items in turn (the batch size)."""
        view = copy.copy(self)
        view.block = check_positive_int("batch_size", block)
        return view


def known_len(dataset) -> int | None:
    """``len(dataset)``, or None for a stream whose size is not known before it is read (progress bars, logs)."""
    try:
        return len(dataset)
    except TypeError:
        return None


def _every(positions: Iterator[tuple[int, Item]], rank: int, world: int) -> Iterator[tuple[int, Item]]:
    return (p for j, p in enumerate(positions) if j % world == rank)


def _blocks(positions: Iterator[tuple[int, Item]], block: int, worker: int, workers: int) -> Iterator[tuple[int, Item]]:
    return (p for j, p in enumerate(positions) if (j // block) % workers == worker)
