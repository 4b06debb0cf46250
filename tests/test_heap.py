"""Freed memory given back to the system (bridge.heap), seen in a process's own RSS.

Each case runs in a fresh interpreter: the C library's settings last a process's lifetime,
and what it holds depends on everything allocated before."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge import heap

pytestmark = pytest.mark.skipif(heap._LIBC is None, reason="needs glibc's malloc")

_RSS = '''
def rss():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) / 1024
'''

LARGE_BLOCKS = _RSS + '''
import sys
from bridge import heap
if sys.argv[1] == "apart":
    assert heap.map_large_blocks_apart()
block = bytearray(1_500_000); del block  # glibc's own threshold rises past this size
before = rss()
large, small = [], []
for _ in range(60):  # each large block with a small one after it on the heap
    large.append(bytearray(1_500_000))
    small.append(bytearray(2_000))
large.clear()
print(rss() - before)
'''

HOLES = _RSS + '''
from bridge import heap
before = rss()
blocks = [bytearray(3_000) for _ in range(40_000)]  # about 120 MB on the heap
del blocks[:-1]  # all freed but the last, which keeps them from the top of the heap
held = rss() - before
took = heap.give_back()
print(held, rss() - before, took)
'''


def run(code: str, *args: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [float(word) for word in out.split()]


def test_large_blocks_mapped_apart_are_given_back_when_freed():
    kept_by_default = run(LARGE_BLOCKS, "default")[0]
    kept_apart = run(LARGE_BLOCKS, "apart")[0]
    assert kept_by_default > 40  # MB: 60 blocks of 1.5 MB left in the heap's middle
    assert kept_apart < 10


def test_give_back_returns_the_holes_in_the_heap():
    held, after, took = run(HOLES)
    assert held > 80  # MB freed but still resident
    assert after < held / 4
    assert 0 <= took < 5
