"""evalvae.memory: glibc's mmap threshold fixed at job start, so freed batches go back to the system."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evalvae import memory

glibc = pytest.mark.skipif(memory._libc() is None, reason="glibc only (Linux)")

# In a fresh process: free a 4 MiB block (which raises glibc's dynamic threshold to 4 MiB), then
# hold a 2 MiB one and count the blocks glibc serves by mmap while it is held.
PROBE = r"""
import ctypes, json, sys
from evalvae import memory
fixed = memory.fix_mmap_threshold() if sys.argv[1] == "fix" else None
libc = memory._libc()
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(2 << 20)
during = libc.mallinfo2().hblks
libc.free(block)
print(json.dumps({"fixed": fixed, "mmapped": during - before}))
"""


def probe(mode: str, **env) -> dict:
    env = {k: v for k, v in os.environ.items() if k != memory.ENV} | env
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


@glibc
def test_a_fixed_threshold_keeps_large_blocks_mmapped_after_a_larger_one_was_freed():
    try:
        dynamic = probe("none")
    except subprocess.CalledProcessError as e:  # glibc < 2.33 has no mallinfo2
        pytest.skip(f"no mallinfo2: {e.stderr[-200:]}")
    assert dynamic == {"fixed": None, "mmapped": 0}, "glibc's dynamic threshold served 2 MiB from the heap"
    assert probe("fix") == {"fixed": memory.MMAP_THRESHOLD, "mmapped": 1}


@glibc
def test_the_users_own_threshold_is_left_alone():
    assert probe("fix", **{memory.ENV: str(8 << 20)})["fixed"] is None


def test_every_job_fixes_the_threshold_first(monkeypatch, tmp_path):
    """jobs.task.execute calls it before building the task (so the loader's workers inherit it)."""
    from evalvae.jobs import task

    calls = []
    monkeypatch.setattr(task, "fix_mmap_threshold", lambda: calls.append("fixed"))
    monkeypatch.setattr(task, "task_class", lambda cfg: calls.append("built") or (lambda *a: None))
    with pytest.raises(AttributeError):  # the stand-in task has no run(): only the order matters here
        task.execute({}, tmp_path)
    assert calls == ["fixed", "built"]


def test_nothing_is_done_off_linux(monkeypatch):
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory._libc() is None
