"""What the site operator may ask of the running bridge (the dashboard's actions).

Holds on stations (paused, or exempt from DR) and opts towards the VTN (out of an event,
unavailable for a window, withdrawn). Each is stored first, so that it survives a
restart, and takes effect at once: a hold in a new plan, an opt on the events it concerns
and then at the VTN (:class:`~bridge.runtime.dr.DrEvents` applies and sends opts).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from bridge.clock import Clock
from bridge.holds import HoldMode
from bridge.runtime.dr import DrEvents
from bridge.store import OperatorOpt, Store
from bridge.web.port import EventOver, UnknownEvent

log = logging.getLogger(__name__)


class Operator:
    def __init__(self, store: Store, clock: Clock, dr: DrEvents,
                 replan_now: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._clock = clock
        self._dr = dr
        self._replan_now = replan_now
        self.holds = store.holds()  # station id -> (mode, reason, since)

    # holds ------------------------------------------------------------------------------------
    async def set_hold(self, station_id: str, mode: HoldMode, reason: str) -> None:
        """Pause a station (0 W) or exempt it from DR, until :meth:`clear_hold`."""
        now = self._clock()
        self._store.set_hold(station_id, mode, reason, now)
        self.holds[station_id] = (mode, reason, now)
        log.info("%s: %s by the operator (%s)", station_id, mode, reason)
        await self._replan_now()

    async def clear_hold(self, station_id: str) -> None:
        self._store.clear_hold(station_id, self._clock())
        if self.holds.pop(station_id, None) is not None:
            log.info("%s: operator hold lifted", station_id)
        await self._replan_now()

    # opts -------------------------------------------------------------------------------------
    async def opt_out_event(self, event_id: str, reason: str) -> None:
        """The site operator opts out of an event: stored first (it survives a restart), then
        the plan drops the event and the VTN is told (oadrCreateOpt; retried until it
        acknowledges). Raises :class:`UnknownEvent` or :class:`EventOver`."""
        known = self._dr.events.get(event_id)
        if known is None:
            raise UnknownEvent(event_id)
        if known.event.is_over(self._clock()):
            raise EventOver(f"event {event_id} is over")
        self._store.request_opt_out(event_id, reason, self._clock())
        await self._dr.apply_operator_opts()
        await self._dr.send_operator_opts()

    async def declare_unavailable(self, start: datetime, end: datetime, reason: str) -> str:
        """The site cannot take part in events from ``start`` to ``end``; sent to the VTN as an
        availability schedule (oadrCreateOpt). Returns the opt id, for :meth:`cancel_opt`."""
        if end <= start:
            raise ValueError("the window must end after it starts")
        opt = self._store.request_unavailability(start, end, reason, self._clock())
        await self._dr.apply_operator_opts()
        await self._dr.send_operator_opts()
        return opt.opt_id

    async def cancel_opt(self, opt_id: str) -> None:
        """Withdraw an operator opt (oadrCancelOpt); an event opted out of goes back to the
        policy's decision. Raises KeyError for an unknown or already withdrawn opt."""
        if not self._store.request_opt_cancel(opt_id, self._clock()):
            raise KeyError(opt_id)
        await self._dr.apply_operator_opts()
        await self._dr.send_operator_opts()

    def operator_opts(self) -> list[OperatorOpt]:
        return self._store.operator_opts()
