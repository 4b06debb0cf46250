"""Retention: the store's growing tables kept within ``storage.retention``.

Run once a second by the reports' flush loop (:meth:`Pruner.tick`), after the flush.
Every :data:`PASS_EVERY` each table with a retention gets a pass: its rows older than the
cut-off (fixed when the pass starts) are deleted by :meth:`~bridge.store.Store.prune`, one
bounded batch after another (a few milliseconds each), the event loop free between
batches; a tick runs batches, the tables in turn, for about :data:`TICK_BUDGET_S` and
leaves the rest to the next tick. However much there is to delete (the first passes over
a file from before retention existed may take hours), pruning holds the loop for one
batch at a time and takes at most about a twentieth of it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from datetime import datetime, timedelta

from bridge.clock import Clock
from bridge.retention import Pass, Retention
from bridge.store import Store

log = logging.getLogger(__name__)

# Once the backlog is gone a pass takes a few ticks: the rows aged in the meantime, and
# the few kept per station.
PASS_EVERY = timedelta(minutes=10)
# Pruning per tick (once a second; a tick runs a batch of each table being pruned at the
# least): a twentieth of the event loop. A batch's CPU is 1-3 ms; the commit that brings
# the WAL past SQLite's 1,000 pages also waits for the disk (a checkpoint, 20-50 ms and
# more on a busy disk). A tick deleted 6,000-9,000 rows of a backlog of profiles and
# readings at 1,000 stations (bench.retention_cost); 5,000 stations write about 1,200 a
# second at worst (a reading and a grid reading each every 10 s, a profile every 30 s).
TICK_BUDGET_S = 0.050


class Pruner:
    def __init__(self, store: Store, retention: Retention, clock: Clock,
                 budget_s: float = TICK_BUDGET_S, every: timedelta = PASS_EVERY) -> None:
        self._store = store
        self._retention = retention
        self._clock = clock
        self._budget_s = budget_s
        self._every = every
        self._passes: dict[str, Pass] = {}  # tables being pruned
        self._started: dict[str, datetime] = {}  # when each table's last pass began

    @property
    def busy(self) -> bool:
        """Whether a pass is under way."""
        return bool(self._passes)

    async def tick(self) -> None:
        """Start the passes that are due; run batches for about the budget, letting the
        event loop run between them."""
        now = self._clock()
        for table, cutoff in self._retention.cutoffs(now).items():
            started = self._started.get(table)
            if table not in self._passes and (started is None or now - started >= self._every
                                              or now < started):
                self._passes[table] = Pass(table, cutoff)
                self._started[table] = now
        deadline = time.perf_counter() + self._budget_s
        while self._passes:
            for table, run in list(self._passes.items()):
                try:
                    self._store.prune(run)
                except sqlite3.Error:  # a full disk, a locked file: tried again next pass
                    log.exception("retention: pruning %s failed", table)
                    del self._passes[table]
                    continue
                if run.done:
                    del self._passes[table]
                    if run.deleted:
                        log.debug("retention: %d rows of %s from before %s deleted",
                                 run.deleted, table, run.cutoff.isoformat(timespec="seconds"))
                await asyncio.sleep(0)
            if time.perf_counter() >= deadline:
                return
