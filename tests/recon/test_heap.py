"""evalvae.recon.heap: the heap trimmer that keeps a long run's memory flat."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evalvae.recon import heap as memory

glibc = pytest.mark.skipif(memory._libc() is None, reason="glibc only (Linux)")

# In a fresh process: raise glibc's dynamic mmap threshold (free a 4 MiB block), fill 200 MiB of
# heap in 1 MiB blocks, free all but the last (which pins the heap's top, so free() alone returns
# nothing), then let the trimmer see the growth.
PROBE = r"""
import ctypes, json
from evalvae.recon import heap as memory
libc = memory._libc()
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
trimmer = memory.HeapTrimmer(slack=32 << 20)
trimmer.check()  # learns the steady size
libc.free(libc.malloc(4 << 20))
blocks = [libc.malloc(1 << 20) for _ in range(200)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
for b in blocks[:-1]:
    libc.free(b)
held = memory.resident_bytes()
trimmed = trimmer.check()
print(json.dumps({"held_mib": held / 2**20, "after_mib": memory.resident_bytes() / 2**20, "trimmed": trimmed}))
"""


@glibc
@pytest.mark.slow  # a fresh process's heap
def test_the_trimmer_hands_freed_heap_back_once_the_process_has_grown():
    out = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout)
    assert out["trimmed"] is True
    assert out["held_mib"] - out["after_mib"] > 150, out  # ~199 MiB freed but held until the trim


class FakeLibc:
    def __init__(self):
        self.calls = 0

    def malloc_trim(self, pad):
        assert pad == 0
        self.calls += 1


def test_it_trims_only_past_the_steady_size_plus_the_slack(monkeypatch):
    """Sizes in MiB: 100 before the first batch, 160 with a batch's working set (the steady size),
    then growth; after each trim the next size seen is the new steady size (the largest so far)."""
    sizes = iter([100, 160, 170, 230, 150, 170, 190, 240, 245])
    monkeypatch.setattr(memory, "resident_bytes", lambda: next(sizes) << 20)
    monkeypatch.setattr(memory, "_libc", lambda: FakeLibc())
    trimmer = memory.HeapTrimmer(slack=64 << 20)
    did = [trimmer.check() for _ in range(9)]
    # 100 learnt; 160 is within 100 + 64; 170 is not: trim; 230 learnt; the rest stay within 230 + 64
    assert did == [False, False, True, False, False, False, False, False, False]
    assert trimmer.trims == trimmer.libc.calls == 1 and trimmer.base == 230 << 20


def test_nothing_is_done_off_linux(monkeypatch):
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory._libc() is None
    assert memory.HeapTrimmer().check() is False


def test_the_reconstruction_loop_checks_between_batches(monkeypatch, tmp_path, image_dir):
    """At least one check per batch read, in the loop every recon run goes through."""
    from evalvae.recon import loop
    from evalvae.run import run
    from tests.helpers import compose_run

    checks = []
    monkeypatch.setattr(loop.HeapTrimmer, "check", lambda self: checks.append(1) or False)
    cfg = compose_run(
        [
            "+vae=identity",
            "dataset=folder",
            f"dataset.path={image_dir}",
            "dataset.resolution=32",
            "workers=0",
            "batch_size=2",
        ]
    )
    run(cfg, out_dir=tmp_path / "o")
    assert len(checks) >= 3  # 6 images in batches of 2
