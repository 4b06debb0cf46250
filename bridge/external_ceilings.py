"""Limits other parties put on a station, as a ceiling the plan counts (pure).

A station reports the limits an energy manager, the grid operator or another party holds
it to (OCPP 2.0.1/2.1 NotifyChargingLimit; 2.1 names such a profile
``ChargingStationExternalConstraints``): :class:`~bridge.ocpp.external_limits.ExternalLimit`.
It applies them whatever drbridge sends, the lower of both holding. Giving the station a
share above such a limit would strand the difference; :func:`station_ceiling` turns the
limits into a series of steps the planner gives the station no more than
(:attr:`policies.fleet.Fleet.ceilings`), so the others get it.

- a limit on the whole station (EVSE 0) caps the station;
- a limit on one EVSE caps that EVSE: the station may draw the sum over its sessions'
  EVSEs of the lower of each EVSE's limit and its hardware (an EVSE without a limit counts
  at its hardware);
- of several limits in force at once, the lowest holds; a period without a limit, a
  schedule not started or ended, and a notice without a schedule limit nothing (what such
  a station holds is unknown; its composite schedule and meter values tell).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime

from bridge.ocpp.external_limits import WHOLE_STATION, ExternalLimit
from policies.fleet import StationInfo, Step, Why, step_of

NO_LIMIT = math.inf


def station_ceiling(limits: Iterable[ExternalLimit], info: StationInfo,
                    connectors: Sequence[int], now: datetime) -> tuple[Step, ...]:
    """The most the station may draw from ``now`` on under these limits (each step from its
    start; :data:`NO_LIMIT` where none holds). ``connectors``: the EVSEs with a session.
    Empty when no limit holds now or later."""
    limits = [limit for limit in limits if not limit.cleared and limit.schedules]
    if not limits:
        return ()
    times = {now}
    for limit in limits:
        for schedule in limit.schedules:
            times.update(p.start for p in schedule.periods if p.start > now)
            if schedule.end is not None and schedule.end > now:
                times.add(schedule.end)
    steps: list[Step] = []
    for at in sorted(times):
        watts, why = _ceiling_at(limits, info, connectors, at)
        if steps and steps[-1].limit_w == watts:
            continue
        steps.append(step_of(at, watts, (Why("external", why),) if why else ()))
    if all(not math.isfinite(step.limit_w) for step in steps):
        return ()
    return tuple(steps)


def _ceiling_at(limits: Sequence[ExternalLimit], info: StationInfo, connectors: Sequence[int],
                at: datetime) -> tuple[float, str]:
    """The ceiling at ``at`` and the limit that sets it (NO_LIMIT, "": none)."""
    best: tuple[float, str] = (NO_LIMIT, "")
    for limit in limits:
        if limit.evse_id != WHOLE_STATION:
            continue
        watts = limit.watts_at(at, info.voltage_v, info.phases)
        if watts is not None and watts < best[0]:
            best = (watts, _describe("station's external constraint", limit, watts))
    per_evse = _evse_ceiling(limits, info, connectors, at)
    if per_evse is not None and per_evse[0] < best[0]:
        best = per_evse
    return best


def _evse_ceiling(limits: Sequence[ExternalLimit], info: StationInfo,
                  connectors: Sequence[int], at: datetime) -> tuple[float, str] | None:
    """The sum over the sessions' EVSEs of each one's limit or hardware; None when no
    EVSE with a session is limited at ``at``."""
    hardware = dict(info.connector_max_a)
    total = 0.0
    texts = []
    for evse in dict.fromkeys(connectors):
        own = info.watts(min(hardware.get(evse, info.max_current_a), info.max_current_a))
        limited = [(watts, limit) for limit in limits if limit.evse_id == evse
                   and (watts := limit.watts_at(at, info.voltage_v, info.phases)) is not None]
        if limited:
            watts, limit = min(limited, key=lambda item: item[0])
            if watts < own:
                own = watts
                texts.append(_describe(f"external constraint on EVSE {evse}", limit, watts))
        total += own
    if not texts:
        return None
    return min(total, info.max_w), "; ".join(texts)


def _describe(what: str, limit: ExternalLimit, watts: float) -> str:
    """``station's external constraint (EMS): 7.4 kW``."""
    critical = ", grid critical" if limit.grid_critical else ""
    return f"{what} ({limit.source}{critical}): {watts / 1000:.1f} kW"
