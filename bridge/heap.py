"""Memory the process has freed, given back to the system (glibc's malloc; elsewhere a no-op).

glibc keeps what a process frees for its own next allocations, and gives back only the
free space at the top of its heap. A bridge with thousands of stations frees a great deal
at once after a plan or a DR wave (the planning process's answer, a few MB; the frames and
futures of a wave), and the holes that leaves in the middle of the heap stay in its
resident memory until something of the same size is allocated there again. Two settings
keep that small:

- :func:`map_large_blocks_apart`: blocks of at least :data:`MMAP_THRESHOLD` bytes are
  mapped on their own and unmapped when freed. glibc's default starts there too, but
  raises the threshold (up to 32 MB) each time such a block is freed, after which the
  next plan's buffers come from the heap and leave holes there;
- :func:`give_back`: ``malloc_trim(0)``, which hands every free page of the heap back to
  the system (the holes included, with ``madvise``). The bridge calls it every
  :data:`GIVE_BACK_EVERY_S` in a thread, when the heap holds enough free to be worth it.

Neither changes what the process may use at its peak; the resident memory between peaks
is what falls.
"""

from __future__ import annotations

import ctypes
import logging
import time

log = logging.getLogger(__name__)

# Above asyncio's buffer for each read from a socket (256 KiB, allocated whole and shrunk
# to what was read): at or below it, every read would map and unmap memory (measured: 4
# points more of a core in the 10,000-station steady state).
MMAP_THRESHOLD = 1024 * 1024  # bytes
GIVE_BACK_EVERY_S = 30.0
WORTH_TRIMMING = 4 * 1024 * 1024  # bytes free in the heap, below which no trim is made
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33 on): what its heap holds, in bytes."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _glibc() -> ctypes.CDLL | None:
    """The C library the process runs on, if it has glibc's malloc_trim and mallopt
    (musl and others do not)."""
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, the C library's among them
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return None
    try:
        libc.mallinfo2.argtypes, libc.mallinfo2.restype = [], _MallInfo2
    except AttributeError:  # glibc before 2.33: every trim is made
        pass
    return libc


_LIBC = _glibc()


def free_in_heap() -> int | None:
    """Bytes the heap holds free (None when the C library does not tell)."""
    if _LIBC is None or not hasattr(_LIBC, "mallinfo2"):
        return None
    return int(_LIBC.mallinfo2().fordblks)


def map_large_blocks_apart() -> bool:
    """Blocks of :data:`MMAP_THRESHOLD` bytes or more mapped apart, for good; whether the C
    library took the setting."""
    return _LIBC is not None and _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def give_back() -> float:
    """Hand the heap's free pages back to the system; the seconds it took (0 without
    glibc)."""
    if _LIBC is None:
        return 0.0
    started = time.perf_counter()
    _LIBC.malloc_trim(0)
    return time.perf_counter() - started


async def give_back_periodically(every_s: float = GIVE_BACK_EVERY_S) -> None:
    """:func:`give_back` every ``every_s`` seconds when the heap holds at least
    :data:`WORTH_TRIMMING` free, until cancelled. In a thread: a trim walks every free
    block of the heap (14-28 ms with a few hundred MB, measured), and the C call lets the
    event loop run meanwhile."""
    import asyncio  # here: the planning process imports this module, and never asyncio

    while True:
        await asyncio.sleep(every_s)
        free = free_in_heap()
        if free is not None and free < WORTH_TRIMMING:
            continue
        took = await asyncio.to_thread(give_back)
        log.debug("freed memory given back to the system in %.1f ms", took * 1000)
