"""Operator holds on stations: paused (0 W) or exempt from DR (still within site capacity).

Pure: wraps the policy's planner without changing it. A paused station's sessions
are left out of the fleet, so the others share its capacity and it gets a true 0 W
whatever the policy's ``allocation.pause`` (no minimum current is held for it); the
plan's state keeps it as paused, so that once the hold is lifted it resumes as any
paused session does, at the minimum current first. An exempt station
is planned first against the site capacity alone (no event), then counted as a
reservation when the others share the DR limit: the sum of what is commanded never
exceeds the capacity, and the event's limit is kept as far as the exempt stations
leave room for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal

from policies.events import DrEvent
from policies.fleet import Fleet, Plan, PlanState, Reservation, Site, StationState, Step
from policies.model import Policy
from policies.plan import Conditions, make_plan

HoldMode = Literal["pause", "exempt"]
HOLD_MODES: tuple[HoldMode, ...] = ("pause", "exempt")
PAUSED_REASON = "paused by the operator"
EXEMPT_REASON = "exempt from DR by the operator"


def plan_with_holds(events: Sequence[DrEvent], policy: Policy, site: Site, fleet: Fleet,
                    now: datetime, holds: Mapping[str, HoldMode],
                    state: PlanState | None = None,
                    conditions: Conditions | None = None) -> Plan:
    paused = {sid for sid, mode in holds.items() if mode == "pause"}
    exempt = {sid for sid, mode in holds.items() if mode == "exempt"} & fleet.stations.keys()
    sessions = tuple(s for s in fleet.sessions if s.station_id not in paused)
    if not exempt:
        plan = make_plan(events, policy, site, replace(fleet, sessions=sessions), now, state,
                         conditions)
        return _paused(plan, paused, fleet, state)
    free = make_plan((), policy, site, replace(
        fleet,
        stations={sid: info for sid, info in fleet.stations.items() if sid in exempt},
        sessions=tuple(s for s in sessions if s.station_id in exempt),
        reservations=fleet.reservations,
    ), now, _voltage_only(state, site), conditions)
    # the exempt stations stay in the fleet, so that their reservations are counted
    others = make_plan(events, policy, site, replace(
        fleet,
        sessions=tuple(s for s in sessions if s.station_id not in exempt),
        reservations=fleet.reservations + tuple(
            Reservation(sid, steps) for sid, steps in free.stations.items()),
    ), now, state, conditions)
    stations = dict(others.stations)
    for sid, steps in free.stations.items():
        stations[sid] = tuple(Step(s.start, s.limit_w, f"{EXEMPT_REASON}; {s.reason}")
                              for s in steps)
    return _paused(replace(others, stations=stations), paused, fleet, state)


def _voltage_only(state: PlanState | None, site: Site) -> PlanState | None:
    """What an exempt station's plan keeps of the previous state: its volt-watt
    restriction (hysteresis, hold time), none of the DR allocation's."""
    if state is None or not state.voltage:
        return None
    return PlanState(at=state.at, site_limit_w=site.capacity_w, voltage=state.voltage)


def _paused(plan: Plan, paused: set[str], fleet: Fleet, state: PlanState | None) -> Plan:
    if not paused & plan.stations.keys():
        return plan
    stations = {
        sid: (tuple(Step(s.start, 0.0, PAUSED_REASON) for s in steps) if sid in paused
              else steps)
        for sid, steps in plan.stations.items()
    }
    plan = replace(plan, stations=stations)
    if plan.state is None:
        return plan
    # a held session is paused (since the hold's first plan); not a switch the guard
    # time counts, since the operator chose it
    before = state.stations if state is not None else {}
    states = dict(plan.state.stations)
    for sid in {s.station_id for s in fleet.sessions} & paused:
        old = before.get(sid)
        states[sid] = replace(old, resume_until=None, then=None) \
            if old is not None and not old.charging and old.limit_w == 0 \
            else StationState(0.0, False, plan.made_at)
    return replace(plan, state=replace(plan.state, stations=states))
