"""Python's cyclic garbage collector, tuned for a process holding thousands of connections.

With its defaults (a collection every 700 net allocations, a full one every hundred of
those) the collector walks every live object again and again; a bridge serving thousands
of stations holds hundreds of thousands of them (connections, transports, futures), almost
all long-lived. In a 5,000-station connect storm the collector took about 4 of the
bridge's 11.5 CPU seconds; with the settings below, under half a second (see
``docs/benchmarks.md``). Reference counting still frees almost everything at once: only
objects in reference cycles wait for a collection, and collections still run.
"""

from __future__ import annotations

import asyncio
import gc

# Net allocations between young collections, and how many of those per older collection.
YOUNG_THRESHOLD = 50_000
OLDER_EVERY = 20


def tune_for_many_connections() -> None:
    """Freeze what start-up allocated (modules, config) and collect less often."""
    gc.collect()
    gc.freeze()  # never scanned again: it lives as long as the process
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_EVERY, OLDER_EVERY)


class CollectorPause:
    """No collection while a plan for a large fleet is read, handed over and sent.

    In the steady state the young generation fills with objects that replace long-lived
    ones (the count that triggers a collection barely moves: as many are freed as made),
    so the first burst of allocations after it, a plan's, sets off a collection that walks
    all of them: 0.1 s of the event loop at 10,000 stations while the plan was read, and
    more while its wave of profiles went out. Paused, those collections come after the
    wave instead; reference counting still frees everything not in a cycle meanwhile.

    :meth:`hold` pauses collections (again, if they were); :meth:`release_after` lets them
    run ``seconds`` later, the last call's time winning. Collections resume at the latest
    :data:`LONGEST_S` after the last :meth:`hold`, whatever else happens.
    """

    LONGEST_S = 10.0

    def __init__(self) -> None:
        self._resume: asyncio.TimerHandle | None = None
        self.held = 0  # times collections were paused

    def hold(self) -> None:
        gc.disable()
        self.held += 1
        self._resume_in(self.LONGEST_S)

    def release_after(self, seconds: float) -> None:
        if self._resume is not None:  # (otherwise not held: nothing to release)
            self._resume_in(seconds)

    def release(self) -> None:
        """Collections run again now (the bridge stops: no timer is left to do it)."""
        if self._resume is not None:
            self._resume.cancel()
            self._release()

    def _resume_in(self, seconds: float) -> None:
        if self._resume is not None:
            self._resume.cancel()
        self._resume = asyncio.get_running_loop().call_later(seconds, self._release)

    def _release(self) -> None:
        self._resume = None
        gc.enable()
