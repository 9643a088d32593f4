"""Sharding a job across processes started by ``torchrun`` (``torch.distributed``).

``torchrun --nproc_per_node=N -m evalvae run ...`` starts N copies of the job; each reads
``RANK``/``WORLD_SIZE`` from the environment and joins one process group (NCCL on CUDA, gloo on
CPU). The dataset's batches, fixed by position (``batch_size`` consecutive images), are dealt out
whole: rank ``r`` takes batches ``r, r + N, r + 2N, ...``. So no image is duplicated or padded,
and every batch is the same batch a single process runs, with the same seeds and the same float
kernels' batch composition: per-image values equal the single-process ones exactly on the same
kind of device. Rank 0 gathers the per-image rows and writes every file; set-level statistics are
combined by summing each rank's float64 sums (``all_reduce``), which equals the single-process
sums up to float64 round-off (about 1e-12 relative). Kept per-item features (KID's) are gathered
in dataset order with their images' dataset positions, so KID's subsets draw the same images and
the paired KID pairs each reconstruction with its own original.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def batches(self, n_batches: int) -> list[int]:
        """The positions of the batches this process runs."""
        return list(range(self.rank, n_batches, self.world))


def from_environment(device: torch.device) -> tuple[Shard, torch.device]:
    """This process's shard (joining the process group torchrun set up), and its device: ``cuda:LOCAL_RANK``
    for a CUDA job, so each rank has its own GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard(), device
    import torch.distributed as dist

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    shard = Shard(dist.get_rank(), dist.get_world_size())
    if shard.main:
        log.info("sharded over %d processes (torch.distributed, %s)", shard.world, dist.get_backend())
    return shard, device


def _dist():
    import torch.distributed as dist

    return dist


def broadcast(shard: Shard, obj):
    """Rank 0's ``obj`` on every rank."""
    if not shard.active:
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def all_gather(shard: Shard, obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not shard.active:
        return [obj]
    out = [None] * shard.world
    _dist().all_gather_object(out, obj)
    return out


def gather(shard: Shard, obj) -> list | None:
    """Every rank's ``obj`` in rank order on rank 0 (None elsewhere)."""
    if not shard.active:
        return [obj]
    out = [None] * shard.world if shard.main else None
    _dist().gather_object(obj, out, dst=0)
    return out


def all_reduce_sum(shard: Shard, array: np.ndarray) -> np.ndarray:
    """The float64 sum of ``array`` over the ranks."""
    if not shard.active:
        return array
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    _dist().all_reduce(t, op=_dist().ReduceOp.SUM)
    return t.numpy()


def combine_stats(shard: Shard, stats, order: list[tuple[int, int]]) -> None:
    """Sum :class:`evalvae.metrics.frechet.FeatureStats` over the ranks in place. Kept features are
    gathered and put in dataset order: ``order[i]`` is the (batch, group) position of ``stats.chunks[i]``."""
    if not shard.active:
        return
    stats.n = int(all_reduce_sum(shard, np.array([stats.n], np.float64))[0])
    stats.total = all_reduce_sum(shard, stats.total)
    stats.outer = all_reduce_sum(shard, stats.outer)
    if stats.keep_features:
        index = stats.index_chunks if stats.index_chunks is not None else [None] * len(stats.chunks)
        parts = all_gather(shard, list(zip(order, stats.chunks, index)))
        ordered = sorted((p for part in parts for p in part), key=lambda p: p[0])
        stats.chunks = [c for _, c, _ in ordered]
        # the images' dataset positions follow their features; one rank without them leaves none
        stats.index_chunks = None if any(i is None for _, _, i in ordered) else [i for _, _, i in ordered]
