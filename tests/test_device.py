"""The device helpers: memory release within a job, channels_last for 2-D convolutions."""

import gc
import weakref

import pytest
import torch

from evalvae.device import job_heap, release_memory


class Node:
    pass


def cycle() -> weakref.ref:
    """A dropped object that only the cyclic collector can free (it refers to itself)."""
    a = Node()
    a.me = a
    return weakref.ref(a)


def test_release_memory_frees_cyclic_garbage_inside_a_job_and_the_heap_is_handed_back_after():
    cpu = torch.device("cpu")
    gc.disable()  # only the collections release_memory makes
    try:
        with job_heap():
            assert gc.get_freeze_count() > 0
            kept = Node()
            kept.me = kept
            release_memory(cpu)  # frozen from here on: alive at a release
            dropped = cycle()
            assert dropped() is not None
            release_memory(cpu)
            assert dropped() is None
            with job_heap():  # a nested job leaves the outer one's state alone
                pass
            assert gc.get_freeze_count() > 0
            survivor = weakref.ref(kept)
            del kept
            release_memory(cpu)
            assert survivor() is not None  # frozen: out of the collector's view while the job runs
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert survivor() is None  # handed back: collected once the job is over
    finally:
        gc.enable()


def test_channels_last_takes_a_model_with_3d_convolutions():
    from evalvae.device import to_channels_last

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv3d(4, 4, 3))
    with pytest.raises(RuntimeError):  # what torch's own conversion does with a 5-D weight
        torch.nn.Sequential(torch.nn.Conv3d(4, 4, 3)).to(memory_format=torch.channels_last)
    to_channels_last(model)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last) and not model[0].weight.is_contiguous()
    assert model[1].weight.is_contiguous() and model[1].weight.dim() == 5
