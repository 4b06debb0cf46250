"""How long the store keeps each of the tables that only grow (pure, no I/O).

The runtime's pruner (:mod:`bridge.runtime.retention`) asks :meth:`Retention.cutoffs` for
each table's cut-off and has the store delete what is older, a :class:`Pass` over each
table in bounded batches (:meth:`bridge.store.Store.prune`), keeping what something still
reads: here which profiles stay (:func:`profiles_to_delete`) and where a table's rows
turn younger than the cut-off (:func:`young_from`); the store knows the other tables'.

The defaults, and why (``storage.retention`` in the config changes them; the README's
configuration table says the same to the site operator):

- the profile log and the meter samples, 30 days: an event's report judges each station
  by its meter samples against the schedule it had accepted, so both go together, and a
  month covers a DR programme's monthly settlement. The samples are the bulk of the file
  (a row per connector per meter interval; see the README for the size per station).
- plans, 7 days: a plan holds every station's schedule, so at thousands of stations each
  row is large and a busy site plans every half minute; what each station was actually
  sent, with the reasons, stays in the profile log for longer.
- the site load, 400 days: one row per 10 s whatever the fleet's size, and the baselines
  of event reports read it up to weeks back (``report.baseline_days`` comparable days):
  400 days keep every event of the past year reportable with any baseline allowed.
- closed transactions, 400 days: a row per charging session, the site's record of who
  charged how much; a year and a month covers a yearly reconciliation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# table -> the retention (a field of Retention) that applies to it; the grid readings sit
# beside the meter samples of the same reading and go with them
TABLES: Mapping[str, str] = {
    "profiles": "profiles",
    "samples": "samples",
    "grid_samples": "samples",
    "site_load": "site_load",
    "plans": "plans",
    "transactions": "transactions",
}

DEFAULT_DAYS: Mapping[str, int] = {
    "profiles": 30, "samples": 30, "plans": 7, "site_load": 400, "transactions": 400,
}


def _days(name: str) -> timedelta:
    return timedelta(days=DEFAULT_DAYS[name])


@dataclass(frozen=True)
class Retention:
    """How long each log is kept; None keeps it for good."""

    profiles: timedelta | None = _days("profiles")
    samples: timedelta | None = _days("samples")
    plans: timedelta | None = _days("plans")
    site_load: timedelta | None = _days("site_load")
    transactions: timedelta | None = _days("transactions")

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        """Each table with a retention -> the time before which its rows may go."""
        found: dict[str, datetime] = {}
        for table, name in TABLES.items():
            keep: timedelta | None = getattr(self, name)
            if keep is not None:
                found[table] = now - keep
        return found


@dataclass
class Pass:
    """One pruning pass over a table: from where its rows turn younger than the cut-off
    (found when the pass starts) back to its first row, a batch at a time, by rowid."""

    table: str
    cutoff: datetime
    before: int | None = None  # the rowid the next batch ends before; None: not started
    # the profile log: (station, answer) of the rows met so far, each of which has a row
    # newer than it and older than the cut-off (see :func:`profiles_to_delete`)
    newer: set[tuple[str, str]] = field(default_factory=set)
    deleted: int = 0
    done: bool = False


# ISO 8601 text in UTC, as the store writes times: it sorts as the times do.
IsoText = str


def profiles_to_delete(rows: Iterable[tuple[int, str, str, IsoText]], cutoff: IsoText,
                       newer: set[tuple[str, str]]) -> list[tuple[int, str]]:
    """(id, answer) of the profiles to delete among ``rows`` (id, station, answer, sent
    at), newest first, continuing a walk that met the (station, answer) pairs in ``newer``
    (updated).

    A profile older than the cut-off goes once its station has a newer one with the same
    answer, itself older than the cut-off: each station keeps its newest profile of each
    answer, the latest sent and the latest accepted, which is the schedule in force where
    the kept log begins (reports of events in the kept window judge the station by it).
    Newer is later in the log, as :meth:`~bridge.store.Store.accepted_schedules` reads it
    (the profiles of a wave share a time)."""
    gone: list[tuple[int, str]] = []
    for row_id, station_id, status, sent_at in rows:
        if sent_at >= cutoff:  # a clock set back: younger, and not a newer row either
            continue
        key = (station_id, status)
        if key in newer:
            gone.append((row_id, status))
        else:
            newer.add(key)
    return gone


# Rows on either side of a spot a probe of :func:`young_from` reads: the median time of
# the rows around it stands for the spot's, so that a few rows with a wrong time (meter
# samples carry the station's own clock) cannot send the search astray.
PROBE_SIDE = 4


def median_around(before: Sequence[IsoText], after: Sequence[IsoText]) -> IsoText:
    """The median of the times around a spot: ``before`` it, nearest first, and from it
    on (``after``, at least one), as many on each side of the spot's own row as both have
    (up to :data:`PROBE_SIDE`), so that on clean data the median is the row's own time."""
    side = min(len(before), len(after) - 1, PROBE_SIDE)
    return sorted([*before[:side], *after[:side + 1]])[side]


def young_from(first: int, last: int, probe: Callable[[int], tuple[int, IsoText] | None],
               cutoff: IsoText) -> int:
    """The rowid from which a table's rows are younger than the cut-off, between its
    ``first`` and ``last`` rowids: a binary search over a table appended to in time order
    (near enough). ``probe(rowid)`` gives the first rowid at or after it and the time
    there (:func:`median_around`), or None past the table's end."""
    low, high = first, last + 1
    while low < high:
        middle = (low + high) // 2
        found = probe(middle)
        if found is None or found[1] >= cutoff:
            high = middle
        else:
            low = found[0] + 1
    return low
