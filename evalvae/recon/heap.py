"""Keeping a long run's memory flat: freed heap memory handed back to the system between batches.

glibc's ``malloc`` serves a request of at least ``M_MMAP_THRESHOLD`` bytes with its own ``mmap``,
which ``free`` returns to the system at once. That threshold starts at 128 KiB but rises, each
time such a block is freed, to its size (up to 32 MiB). A run allocates and frees image batches,
float64 copies, metric buffers and result rows of a few MiB per batch, so after the first batch
these come from the heap, whose free space is fragmented and only returned from its top: a
process's resident memory then grows with the number of images although nothing is kept.

:class:`HeapTrimmer` calls glibc's ``malloc_trim(0)`` (which also releases free pages inside the
heap) whenever the resident set has grown more than ``slack`` beyond the process's steady size
with a batch in flight. It keeps glibc's fast, dynamic threshold for the allocations themselves. Measured on 1,000 images with
``+vae=identity`` at 256 px on a 2-core CPU (the cheapest model, so the allocator's share is the
largest): glibc's defaults 1,672 MiB peak in 48 s; a fixed 128 KiB mmap threshold 768 MiB in
113 s (every batch-sized buffer an mmap and fresh page faults); ``malloc_trim`` after every batch
822 MiB in 65 s; docs/results.md (Memory) gives the trimmer's own numbers.

Only glibc (Linux) is touched; elsewhere :class:`HeapTrimmer` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

SLACK = 64 << 20  # bytes of resident growth beyond the steady size that trigger a trim


def _libc():
    """glibc, or None (not Linux, or another C library: musl's malloc_trim is a stub)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "malloc_trim"):
        return None
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def resident_bytes() -> int | None:
    """This process's resident set size now (``/proc/self/statm``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class HeapTrimmer:
    """Call :meth:`check` between batches. It learns the process's steady size with a batch's working
    set (its size one batch after each trim, the largest such) and trims the heap once the process has
    grown ``slack`` bytes beyond it, so what a batch frees is reused in place and only the growth that
    fragmentation adds is handed back. ``trims`` counts the trims done."""

    def __init__(self, slack: int = SLACK):
        self.slack = int(slack)
        self.libc = _libc()
        self.trims = 0
        self.base: int | None = None
        self._learn = True  # the next check measures the steady size

    def check(self) -> bool:
        """Trim if the resident set grew past the steady size plus the slack; whether it trimmed."""
        if self.libc is None:
            return False
        now = resident_bytes()
        if now is None:
            return False
        if self._learn:
            self.base, self._learn = now if self.base is None else max(self.base, now), False
            return False
        if now - self.base <= self.slack:
            return False
        self.libc.malloc_trim(0)
        self.trims += 1
        self._learn = True
        return True
