"""No cyclic garbage collection while a large fleet's plan is read, handed over and sent.

Apart from :mod:`bridge.gc_tuning` because it needs asyncio, which the planning process
never imports (about 10 MB of its memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc


class CollectorPause:
    """No collection while a plan for a large fleet is read, handed over and sent.

    In the steady state the young generation fills with objects that replace long-lived
    ones (the count that triggers a collection barely moves: as many are freed as made),
    so the first burst of allocations after it, a plan's, sets off a collection that walks
    all of them: 0.1 s of the event loop at 10,000 stations while the plan was read, and
    more while its wave of profiles went out. Paused, those collections come after the
    wave instead; reference counting still frees everything not in a cycle meanwhile.

    :meth:`hold` pauses collections; :meth:`release_after` lets them run ``seconds``
    later. However many plans follow one another, a pause ends at the latest
    :data:`LONGEST_S` after it began, and the next begins no sooner than :data:`ON_S`
    after that: cycles are still collected on a fleet that plans without rest. An urgent
    plan (a DR event's) may begin one pause inside that time, not two in a row: a
    periodic plan a few seconds before an event would otherwise leave the event's plan and
    wave to the collections (about 0.3 s of the loop at 10,000 stations, measured).
    """

    LONGEST_S = 10.0
    ON_S = 5.0

    def __init__(self) -> None:
        self._resume: asyncio.TimerHandle | None = None
        self._latest = 0.0  # (loop time) the pause under way ends by then
        self._next = 0.0  # (loop time) no pause before then
        self._closed = False
        self._early = False  # the pause under way (or the last) began inside ON_S
        self.held = 0  # pauses begun

    @property
    def holding(self) -> bool:
        return self._resume is not None

    def hold(self, urgent: bool = False) -> None:
        """Pause collections, unless paused already, stopped, or they only just resumed
        (``urgent``: unless the pause before began early too)."""
        now = asyncio.get_running_loop().time()
        if self._closed or self._resume is not None or \
                not gc.isenabled():  # (someone else turned them off: theirs to turn on)
            return
        early = now < self._next
        if early and (not urgent or self._early):
            return
        self._early = early
        gc.disable()
        self.held += 1
        self._latest = now + self.LONGEST_S
        self._resume_at(self._latest)

    def release_after(self, seconds: float) -> None:
        if self._resume is not None:  # (otherwise not held: nothing to release)
            now = asyncio.get_running_loop().time()
            self._resume_at(min(now + seconds, self._latest))

    def release(self) -> None:
        """Collections run again now, and no pause follows (the bridge stops: no timer is
        left to end one)."""
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
            self._release()

    def _resume_at(self, when: float) -> None:
        if self._resume is not None:
            self._resume.cancel()
        self._resume = asyncio.get_running_loop().call_at(when, self._release)

    def _release(self) -> None:
        self._resume = None
        gc.enable()
        with contextlib.suppress(RuntimeError):  # (no loop: release() at shutdown)
            self._next = asyncio.get_running_loop().time() + self.ON_S
