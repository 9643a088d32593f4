"""Keeping a long run's memory flat: glibc's mmap threshold, fixed once at the start of a job.

glibc's ``malloc`` serves a request of at least ``M_MMAP_THRESHOLD`` bytes with its own ``mmap``,
which ``free`` hands straight back to the system. The threshold starts at 128 KiB but is dynamic:
each time such a block is freed it rises to that block's size (up to 32 MiB on 64-bit). A run
allocates and frees image batches, decoded files, metric buffers and result rows of a few MiB
each, so after the first batches these come from the heap instead, whose free space is
fragmented and rarely returned: the process's resident memory then grows with the number of
images although nothing is kept (1,510 MiB at 1,000 images against 919 MiB at 100, measured with
``+vae=identity`` at 256 px). Fixing the threshold turns the dynamic adjustment off, as setting
``MALLOC_MMAP_THRESHOLD_`` in the environment would.

Only glibc on Linux is touched; elsewhere (macOS, musl, Windows) nothing is done. A threshold the
user chose in ``MALLOC_MMAP_THRESHOLD_`` is left as it is: that is also how to pick another value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (<malloc.h>)
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed
ENV = "MALLOC_MMAP_THRESHOLD_"

_done: int | None = None


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # gnu_get_libc_version exists only in glibc; musl has mallopt as a no-op stub
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> int | None:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (and the loader workers
    it forks); the threshold set, or None where nothing was changed (not glibc, or the user set
    ``MALLOC_MMAP_THRESHOLD_``). Calling it again is free."""
    global _done
    if _done is not None:
        return _done
    if ENV in os.environ:
        return None
    libc = _libc()
    if libc is None:
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    if libc.mallopt(M_MMAP_THRESHOLD, int(threshold)) != 1:  # mallopt returns 1 on success
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) was refused; the dynamic threshold stays", threshold)
        return None
    _done = int(threshold)
    return _done
