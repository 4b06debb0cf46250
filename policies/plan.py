"""From DR events, site, fleet and time to a plan: the site limit and each station's schedule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from policies.allocation import Demand, allocate_fair
from policies.fleet import Fleet, Plan, Site, Step, value_at
from policies.model import Policy
from ven.events import DrEvent, EventStatus, OptType

HELD_REASON = "held at 0 W until it acknowledges a limit (counted at what it may draw)"


def decide_opt(event: DrEvent, policy: Policy) -> tuple[OptType, str]:
    """Opt in unless the site cannot respond to any signal of the event."""
    names = {signal.name for signal in event.signals}
    if policy.opt_out_unsupported and not names & policy.handled_signals:
        return "optOut", f"no signal this policy acts on (got {', '.join(sorted(names))})"
    acted_on = ", ".join(sorted(names & policy.handled_signals))
    return "optIn", f"policy {policy.name} acts on {acted_on}"


def event_limit_at(
    event: DrEvent, policy: Policy, site: Site, at: datetime
) -> tuple[float, str] | None:
    """The limit one event asks for at ``at``, with its reason; None if it asks nothing then."""
    if event.status == EventStatus.CANCELLED:
        return None
    best: tuple[float, str] | None = None
    for signal in event.signals:
        if signal.name != "SIMPLE":
            continue
        level = signal.value_at(at)
        if level is None:
            continue
        share = policy.simple.share(level)
        limit = share * site.capacity_w
        reason = f"event {event.event_id}: SIMPLE level {level:g} -> {share:.0%} of capacity"
        if best is None or limit < best[0]:
            best = (limit, reason)
    return best


def _boundaries(events: Iterable[DrEvent], fleet: Fleet, now: datetime) -> list[datetime]:
    times = {now}
    for event in events:
        for signal in event.signals:
            for interval in signal.intervals:
                times.update(t for t in (interval.start, interval.end) if t > now)
    for reservation in fleet.reservations:
        times.update(step.start for step in reservation.steps if step.start > now)
    return sorted(times)


def _merge(steps: Sequence[Step]) -> tuple[Step, ...]:
    merged: list[Step] = []
    for step in steps:
        if merged and abs(merged[-1].limit_w - step.limit_w) < 1e-6:
            continue
        merged.append(step)
    return tuple(merged)


def site_limit_at(
    events: Sequence[DrEvent], policy: Policy, site: Site, at: datetime
) -> tuple[float, str]:
    """The minimum of the capacity and every event's limit at ``at``."""
    limit, reason = site.capacity_w, "site capacity"
    for event in events:
        asked = event_limit_at(event, policy, site, at)
        if asked is not None and asked[0] < limit:
            limit, reason = asked
    return limit, reason


def make_plan(
    events: Sequence[DrEvent], policy: Policy, site: Site, fleet: Fleet, now: datetime
) -> Plan:
    """The plan from ``now`` on. ``events`` are those the site has opted in to.

    Stations with a charging session share the limit, ranked by their first
    session's start (first come, first served when not all fit); stations
    without a session get 0 W, so an EV that arrives while the bridge is away
    cannot break the site limit.
    """
    # One share per station: its profile limits the station as a whole, whatever the number
    # of its sessions, and never above its hardware maximum. First come, first served.
    sessions = sorted(fleet.sessions, key=lambda s: (s.started_at, s.station_id, s.connector_id))
    charging = [fleet.stations[sid] for sid in dict.fromkeys(s.station_id for s in sessions)
                if sid in fleet.stations]
    site_steps: list[Step] = []
    station_steps: dict[str, list[Step]] = {sid: [] for sid in fleet.stations}
    reserved_ids = {r.station_id for r in fleet.reservations}
    for at in _boundaries(events, fleet, now):
        limit, reason = site_limit_at(events, policy, site, at)
        site_steps.append(Step(at, limit, reason))
        reserved = 0.0
        for reservation in fleet.reservations:
            step = value_at(reservation.steps, at)
            reserved += step.limit_w if step else 0.0
        available = max(limit - reserved, 0.0)
        shares = allocate_fair(available, [
            Demand(key=station.station_id,
                   min_w=station.watts(policy.allocation.min_current_a),
                   max_w=station.max_w)
            for station in charging if station.station_id not in reserved_ids
        ])
        for station_id in station_steps:
            if station_id in reserved_ids:
                station_steps[station_id].append(Step(at, 0.0, HELD_REASON))
                continue
            share = shares.get(station_id)
            watts = share.watts if share else 0.0
            why = share.reason if share else "no charging session"
            if reserved:
                why += f"; {reserved:.0f} W held for stations the bridge cannot steer"
            station_steps[station_id].append(Step(at, watts, f"{reason}; {why}"))
    return Plan(
        made_at=now,
        site=_merge(site_steps),
        stations={sid: _merge(steps) for sid, steps in station_steps.items() if steps},
    )
