"""Python's cyclic garbage collector, tuned for a process holding thousands of connections.

With its defaults (a collection every 700 net allocations, a full one every hundred of
those) the collector walks every live object again and again; a bridge serving thousands
of stations holds hundreds of thousands of them (connections, transports, futures), almost
all long-lived. In a 5,000-station connect storm the collector took about 4 of the
bridge's 11.5 CPU seconds; with the settings below, under half a second (see
``docs/benchmarks.md``). Reference counting still frees almost everything at once: only
objects in reference cycles wait for a collection, and collections still run.

The planning process imports this module and runs no event loop: what pauses the
collector around a plan is in :mod:`bridge.runtime.collector_pause`.
"""

from __future__ import annotations

import gc

# Net allocations between young collections, and how many of those per older collection.
YOUNG_THRESHOLD = 50_000
OLDER_EVERY = 20


def tune_for_many_connections() -> None:
    """Freeze what start-up allocated (modules, config) and collect less often."""
    gc.collect()
    gc.freeze()  # never scanned again: it lives as long as the process
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_EVERY, OLDER_EVERY)
