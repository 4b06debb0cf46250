"""How long the bridge keeps its stations waiting: event-loop lag and plan durations.

Every station is served by one asyncio event loop, so anything that holds the loop (a
plan for thousands of stations, a burst of profiles) delays every station's replies by
as long. Two histograms show it in ``/metrics``:

- the *event-loop lag*, sampled by :func:`sample_loop_lag`: a task that asks to wake up
  every :data:`LAG_SAMPLE_INTERVAL_S` and records how late it woke. Ten wake-ups a second
  cost a few microseconds each. A stall of ``s`` seconds shows as one sample near ``s``
  (the samples are not evenly spread over stalled time), and the histogram's sum grows by
  about ``s``: the sum over an interval is the time the loop was held in it, to within a
  sample interval;
- the *plan duration*: each plan (:class:`bridge.runtime.planning.Planner`), from its
  inputs taken to its schedules handed to the dispatcher and stored, timed on the
  monotonic clock. The policy runs in the planning process or thread meanwhile, so
  most of it does not hold the loop; what does shows in the lag.

A :class:`Histogram` is cumulative in the Prometheus way only when read
(:meth:`Histogram.buckets`); observing a value is one bisection and two additions.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Sequence

# Bucket upper bounds, in seconds: from a millisecond (a busy loop's normal jitter) to ten
# seconds (a stall no station should ever see).
LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PLAN_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_SAMPLE_INTERVAL_S = 0.1


class Histogram:
    """Counts of observed values by bucket (an observation counts in the first bucket whose
    upper bound it does not exceed, else in +Inf), with their sum and count."""

    __slots__ = ("bounds", "_counts", "total", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def buckets(self) -> tuple[int, ...]:
        """Cumulative counts: observations <= each bound, then all of them (+Inf)."""
        cumulative, running = [], 0
        for n in self._counts:
            running += n
            cumulative.append(running)
        return tuple(cumulative)


async def sample_loop_lag(histogram: Histogram,
                          interval_s: float = LAG_SAMPLE_INTERVAL_S) -> None:
    """Forever: sleep ``interval_s`` and record how much later than asked the loop woke us."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        # asyncio may run a timer up to its clock resolution early: never a negative lag
        histogram.observe(max(loop.time() - due, 0.0))
