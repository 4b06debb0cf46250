"""Telemetry and reports: what the VEN reports to the VTN, and readings into the store.

The VEN's :class:`~ven.interface.ReportSource` (and
:class:`~ven.interface.VoltageSource`): the measured site load and energy, each
group's load, the site's status, its voltages and its load history. The flush loop
stores the meter samples every :data:`FLUSH_PERIOD_S` and a site-load row (load and
limit) every telemetry interval, at most every 10 s: the history reports, the dashboard's
chart and the event reports read them. After each flush the store's retention gets its
turn (``prune``, :class:`bridge.runtime.retention.Pruner`): the same timer, off the paths
stations and the VTN wait on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from bridge.clock import Clock
from bridge.config import Config
from bridge.dispatch import Dispatcher
from bridge.runtime.dr import DrEvents
from bridge.runtime.planning import Planner
from bridge.runtime.stations import StationEvents
from bridge.store import Store
from ven.interface import SiteStatus

FLUSH_PERIOD_S = 1.0


class Reports:
    def __init__(self, config: Config, store: Store, clock: Clock, fleet: StationEvents,
                 dr: DrEvents, planner: Planner, dispatcher: Dispatcher,
                 prune: Callable[[], Awaitable[None]] | None = None) -> None:
        self.config = config
        self._prune = prune
        self._store = store
        self._clock = clock
        self._fleet = fleet
        self._dr = dr
        self._planner = planner
        self._dispatcher = dispatcher

    # report values (TELEMETRY_USAGE, TELEMETRY_STATUS, HISTORY_USAGE) -----------------------
    def measured_load_w(self) -> float:
        return self._fleet.load_w()

    def measured_energy_wh(self) -> float:
        """The sum of the stations' energy registers, as last read."""
        return sum(m.last_energy[1] for m in self._fleet.meters.values() if m.last_energy)

    def group_load_w(self, group_id: str) -> float:
        return self._fleet.stations_load_w(
            frozenset(self.config.model.ven.groups.get(group_id, ())))

    def site_limit_w(self, now: datetime) -> float:
        """The site limit in force: the plan's, or the capacity before the first plan."""
        step = self._planner.site_step(now)
        return step.limit_w if step else self.config.site.capacity_w

    def site_status(self) -> SiteStatus:
        now = self._clock()
        capacity = self.config.site.capacity_w
        return SiteStatus(
            online=any(s.link is not None for s in self._dispatcher.stations.values()),
            manual_override=self._dr.overridden(now),
            current_w=self.site_limit_w(now), min_w=0.0, max_w=capacity,
        )

    def site_voltages(self) -> dict[str, tuple[float, float]]:
        """Per phase over the connected stations' fresh readings: (lowest V, mean V)."""
        site = self._fleet.grid.site(self._clock(), self._dispatcher.stations)
        return {phase: (low, mean) for phase, low, mean in site.phases}

    def load_history(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        return [(at, load) for at, load, _ in self._store.site_load(start) if at < end]

    # into the store ---------------------------------------------------------------------------
    def flush(self) -> None:
        self._store.flush()
        if self._fleet.samples:
            self._store.add_samples(self._fleet.take_samples())

    async def run(self) -> None:
        """Flush every FLUSH_PERIOD_S, then prune; a site-load row every telemetry interval
        (10 s at most)."""
        last_site_row = self._clock() - timedelta(days=1)
        every_s = min(self.config.model.telemetry.interval_s, 10)
        while True:
            await asyncio.sleep(FLUSH_PERIOD_S)
            self.flush()
            if self._prune is not None:
                await self._prune()
            now = self._clock()
            if (now - last_site_row).total_seconds() >= every_s:
                self._store.add_site_load(now, self.measured_load_w(), self.site_limit_w(now))
                last_site_row = now
