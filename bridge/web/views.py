"""What the API answers, assembled from the running bridge's read view (see
:mod:`bridge.web.port`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bridge.performance import BaselineSettings, evaluate, history_windows
from policies.events import DrEvent, EventStatus
from policies.fleet import Step, value_at
from policies.signals import event_ask
from policies.voltwatt import VoltageReading

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.web.port import (
        OptOut,
        SiteReader,
        StationUpstream,
        StationView,
        Steering,
        Upstream,
        VoltageNotice,
    )

# The VTN is considered reachable while it answered within this time (polls are more often).
VTN_SILENT_AFTER = timedelta(minutes=2)
EVENT_HISTORY = 20
MAX_CHART_POINTS = 1500


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _watts(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, 1)


def baseline_settings(config: Config) -> BaselineSettings:
    report = config.model.report
    return BaselineSettings(days=report.baseline_days, min_days=report.baseline_min_days,
                            comparable=report.comparable_days,
                            pre_event=timedelta(seconds=report.pre_event_s))


# site -----------------------------------------------------------------------------------------
def vtn_view(reader: SiteReader, now: datetime) -> dict[str, Any]:
    vtn = reader.vtn()
    last = vtn.last_contact
    if last is None:
        state = "never contacted"
    elif now - last <= VTN_SILENT_AFTER:
        state = "online"
    else:
        state = "unreachable"
    return {
        "url": vtn.url,
        "protocol": f"OpenADR {vtn.protocol}",
        "programs": list(vtn.programs),
        "state": state,
        "registered": vtn.registered,
        "ven_id": vtn.ven_id,
        "last_contact": _iso(last),
        "seconds_since_contact": round((now - last).total_seconds(), 1) if last else None,
    }


def site_view(reader: SiteReader) -> dict[str, Any]:
    snapshot = reader.snapshot()
    now = snapshot.at
    capacity = reader.config.site.capacity_w
    dr_limited = snapshot.site_limit_w < capacity and bool(snapshot.active_events)
    counts = reader.counts()
    return {
        "at": now.isoformat(),
        "load_w": _watts(snapshot.load_w),
        "limit_w": _watts(snapshot.site_limit_w),
        "limit_reason": snapshot.site_limit_reason,
        "capacity_w": _watts(capacity),
        "dr_banner": {
            "active": dr_limited,
            "events": snapshot.active_events,
            "text": (f"Demand response in force: site limited to "
                     f"{snapshot.site_limit_w / 1000:.1f} kW ({snapshot.site_limit_reason})"
                     if dr_limited else None),
        },
        "vtn": vtn_view(reader, now),
        "stations_connected": counts.connected,
        "stations_known": counts.known,
        "sessions": counts.sessions,
        "upstream": upstream_view(reader.upstream()),
        "voltage": voltage_view(reader, now),
    }


def upstream_view(upstream: Upstream | None) -> dict[str, Any] | None:
    """Local-controller mode: the operator's CSMS behind drbridge (None: there is none)."""
    if upstream is None:
        return None
    return {"url": upstream.url, "links": dict(sorted(upstream.links.items())),
            "queue": upstream.queue, "offline_authorization": upstream.offline_authorization}


def station_upstream_view(upstream: StationUpstream | None) -> dict[str, Any] | None:
    """Local-controller mode: the station's link, its messages waiting for the operator, and
    the operator's own limit and profiles."""
    if upstream is None:
        return None
    limit = upstream.limit
    return {
        "link": upstream.link, "queue": upstream.queue,
        "limit_w": _watts(limit.limit_w) if limit is not None else None,
        "limit_reason": limit.reason if limit is not None else None,
        "profiles": [{"id": p.profile_id, "purpose": p.purpose, "connector": p.connector_id,
                      "stack_level": p.stack_level, "installed_as": p.installed_as,
                      "installed_level": p.installed_level} for p in upstream.profiles],
    }


def voltage_view(reader: SiteReader, now: datetime) -> dict[str, Any]:
    """Per phase over the connected stations' fresh readings: lowest and mean voltage."""
    voltages = reader.voltages(now)
    floor = voltages.floor
    return {"nominal_v": voltages.nominal_v,
            "phases": {name: {"min_v": round(low, 1), "mean_v": round(mean, 1)}
                       for name, low, mean in voltages.phases},
            "over_voltage_floor": None if floor is None or floor.share <= 0 else {
                "share": round(floor.share, 3), "since": floor.since.isoformat(),
                "reason": floor.reason}}


def thin(rows: list[tuple[datetime, float, float]], most: int
         ) -> list[tuple[datetime, float, float]]:
    """At most ``most`` points: consecutive rows merged into their mean load and their
    lowest limit, so that a DR limit stays visible however long the window."""
    if len(rows) <= most:
        return rows
    size = -(-len(rows) // most)
    result = []
    for first in range(0, len(rows), size):
        group = rows[first:first + size]
        result.append((group[0][0], sum(r[1] for r in group) / len(group),
                       min(r[2] for r in group)))
    return result


def load_series(reader: SiteReader, hours: float) -> dict[str, Any]:
    now = reader.now()
    rows = thin(reader.site_load(now - timedelta(hours=hours)), MAX_CHART_POINTS)
    return {
        "since": (now - timedelta(hours=hours)).isoformat(),
        "capacity_w": reader.config.site.capacity_w,
        "points": [{"at": at.isoformat(), "load_w": _watts(load), "limit_w": _watts(limit)}
                   for at, load, limit in rows],
    }


# events ----------------------------------------------------------------------------------------
def event_state(event: DrEvent, now: datetime) -> str:
    if event.status == EventStatus.CANCELLED:
        return "cancelled"
    if event.is_over(now):
        return "completed"
    return "active" if event.start <= now else "upcoming"


def event_cap_w(config: Config, event: DrEvent,
                baselines_w: Mapping[str, float] | None = None) -> float | None:
    """The lowest site limit the event asks for, under this site's policy."""
    asked = [event_ask(event, config.policy, config.site, interval.start, baselines_w or {})
             for signal in event.signals for interval in signal.intervals]
    limits = [a.limit_w for a in asked if a is not None]
    return min(limits) if limits else None


def event_end(event: DrEvent) -> datetime:
    if event.end is not None:
        return event.end
    return max((i.end for s in event.signals for i in s.intervals), default=event.start)


def event_view(reader: SiteReader, event: DrEvent, opt: str, opt_reason: str,
               now: datetime, baselines_w: Mapping[str, float]) -> dict[str, Any]:
    state = event_state(event, now)
    cap = event_cap_w(reader.config, event, baselines_w)
    result: dict[str, Any] = {
        "event_id": event.event_id,
        "modification_number": event.modification_number,
        "status": event.status.value,
        "state": state,
        "start": event.start.isoformat(),
        "end": _iso(event.end),
        "opt": opt,
        "opt_reason": opt_reason,
        "market_context": event.market_context,
        "test_event": event.test_event,
        "signals": [
            {"name": s.name, "type": s.type, "unit": s.unit,
             "intervals": [{"start": i.start.isoformat(), "end": i.end.isoformat(),
                            "value": i.value} for i in s.intervals]}
            for s in event.signals
        ],
        "cap_w": _watts(cap),
        "baseline_w": None, "measured_w": None, "shed_w": None, "baseline_method": None,
    }
    if state in ("active", "completed") and event.start <= now:
        end = min(event_end(event), now)
        if end > event.start:
            settings = baseline_settings(reader.config)
            rows = []
            for a, b in history_windows(event.start, end, settings):
                rows.extend(reader.site_load_between(a, b))
            rows.extend(reader.site_load_between(event.start, end))
            perf = evaluate(event.event_id, event.start, end, rows, end - event.start,
                            settings, cap_w=cap)
            result.update(baseline_w=_watts(perf.baseline_w), measured_w=_watts(perf.measured_w),
                          shed_w=_watts(perf.achieved_shed_w), baseline_method=perf.method)
    return result


def events_view(reader: SiteReader) -> dict[str, Any]:
    now = reader.now()
    operator: Mapping[str, OptOut] = reader.standing_opt_outs()
    baselines = reader.baselines_w()
    ordered = sorted(reader.events(), key=lambda e: e.event.start)
    current = [e for e in ordered if event_state(e.event, now) in ("active", "upcoming")]
    past = [e for e in ordered if event_state(e.event, now) in ("completed", "cancelled")]
    views = []
    # each past event's figures take a few queries: only the latest ones are shown
    for stored in current + past[-EVENT_HISTORY:]:
        view = event_view(reader, stored.event, stored.opt, stored.opt_reason, now, baselines)
        opt = operator.get(stored.event.event_id)
        view["operator_opt"] = None if opt is None else {
            "opt_id": opt.opt_id, "reason": opt.reason,
            "requested_at": opt.requested_at.isoformat(),
            "vtn_acknowledged_at": _iso(opt.acknowledged_at)}
        views.append(view)
    return {
        "active": [v for v in views if v["state"] == "active"],
        "upcoming": [v for v in views if v["state"] == "upcoming"],
        "history": [v for v in reversed(views)
                    if v["state"] in ("completed", "cancelled")][:EVENT_HISTORY],
    }


# stations --------------------------------------------------------------------------------------
def profile_state(state: Steering) -> str:
    """accepted / rejected / unverified / non-compliant, as the operator needs to know.

    Non-compliance is the dispatcher's own finding (drawing above an accepted limit for
    longer than its grace time), the one the planner acts on.
    """
    if state.non_compliant:
        return "non-compliant"
    if state.refused or state.unmanageable:
        return "rejected"
    if not state.confirmed or state.awaiting_answer:
        return "unverified"
    return "accepted"


def _step_view(step: Step | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {"since": step.start.isoformat(), "limit_w": _watts(step.limit_w),
            "reason": step.reason}


def _profile_detail(state: Steering | None) -> str:
    if state is None:
        return "not connected since the bridge started"
    detail = state.status
    if state.non_compliant and state.compliance_detail:
        detail += f": {state.compliance_detail}"
    elif state.counted is not None:
        detail += f": counted at {state.counted.reason}"
    if state.verified:
        detail += "; its composite schedule confirms the limit"
    return detail


def _limit_reason(applied: Step | None, planned: Step | None, state: Steering | None,
                  ) -> str:
    if applied is None and state is not None and state.counted is not None:
        # no limit of ours: the planner counts it at what it may draw, and says why
        return f"counted at {state.counted.reason}"
    if applied is None:
        return "no limit acknowledged yet" if state is not None \
            else "not connected since the bridge started"
    # A profile starts a decrease a second before the plan does, and its copy of the reason
    # is the one of that earlier second: the plan's own step says why, once they agree.
    if planned is not None and abs(planned.limit_w - applied.limit_w) <= 100:
        return planned.reason
    if planned is not None:
        return f"{applied.reason} (changing to {planned.limit_w / 1000:.1f} kW: {planned.reason})"
    return applied.reason


def _station_voltage(reading: VoltageReading | None, now: datetime,
                     stale: timedelta) -> dict[str, float] | None:
    """Its latest line-to-neutral voltage per phase, while fresh."""
    if reading is None or now - reading.at > stale:
        return None
    return {name: round(volts, 1) for name, volts in zip(("L1", "L2", "L3"),
                                                         reading.phases_v, strict=False)
            if volts is not None}


def _notice_view(notice: VoltageNotice | None) -> dict[str, Any] | None:
    if notice is None:
        return None
    return {"at": notice.at.isoformat(), "source": notice.source, "volts": notice.volts,
            "phase": notice.phase, "detail": notice.detail,
            "returned_to_normal": notice.returned_to_normal}


def _voltage_control_view(station: StationView) -> dict[str, Any]:
    """How the volt-watt rule reaches the station, and what it last told of its voltage."""
    control = station.voltage_control
    return {
        "monitors": {"state": control.monitors, "detail": control.monitors_detail,
                     "held": control.monitors_held},
        "der": {"state": control.der, "detail": control.der_detail,
                "notice": _notice_view(station.der_notice)},
        "last_event": _notice_view(station.voltage_event),
    }


def _der_note(station: StationView) -> str:
    """The station's own DER control holding it back now, for its limit's reason."""
    notice = station.der_notice
    if station.voltage_control.der != "in-force" or notice is None \
            or notice.returned_to_normal:
        return ""
    return f"; {notice.detail} at {notice.at:%H:%M:%S}: it draws less by itself"


def stations_view(reader: SiteReader) -> dict[str, Any]:
    now = reader.now()
    stale = timedelta(seconds=reader.config.model.telemetry.stale_after_s)
    stations = []
    for station in reader.stations():
        state = station.steering
        connectors = []
        station_power: float | None = None
        for connector in station.connectors:
            latest = connector.latest_w
            power = latest[1] if latest and now - latest[0] <= stale else None
            if power is not None:
                station_power = (station_power or 0.0) + power
            slot_step = value_at(connector.profile, now) if connector.profile else None
            connectors.append({
                "connector_id": connector.connector_id,
                "status": connector.status,
                "status_since": _iso(connector.status_since),
                "power_w": _watts(power),
                # a profile of this connector's own, where the station takes them
                "limit_w": _watts(slot_step.limit_w) if slot_step else None,
                "profile_purpose": connector.profile_purpose,
                "session": {"transaction_id": connector.transaction_id,
                            "started_at": connector.session_started_at.isoformat()}
                if connector.session_started_at is not None else None,
            })
        applied = value_at(state.applied, now) if state and state.applied else None
        desired = value_at(state.desired, now) if state and state.desired else None
        hold = station.hold
        stations.append({
            "station_id": station.station_id,
            "connected": state is not None and state.connected,
            "last_seen": _iso(station.last_seen),
            "power_w": _watts(station_power),
            "limit_w": _watts(applied.limit_w) if applied else None,
            "limit_reason": _limit_reason(applied, desired, state) + _der_note(station),
            "planned": _step_view(desired),
            "profile_state": profile_state(state) if state else "unverified",
            "profile_detail": _profile_detail(state),
            "verified": bool(state and state.verified),
            # where it is in its life: its phase, since when, and how the planner counts it
            "life": {"phase": state.life.phase, "since": _iso(state.life.since),
                     "counted_as": state.life.counted_as} if state else None,
            "max_w": _watts(state.max_w) if state and state.max_w is not None else None,
            # while it cannot be steered: what the planner counts it at, and why
            "counted": {"watts": _watts(state.counted.watts), "reason": state.counted.reason}
            if state and state.counted is not None else None,
            "hold": {"mode": hold.mode, "reason": hold.reason, "since": hold.since.isoformat()}
            if hold else None,
            "voltage_v": _station_voltage(station.voltage, now, stale),
            # where the volt-watt rule gets the voltage: meter values, monitors, der-control
            "voltage_source": station.voltage_control.source,
            "voltage_control": _voltage_control_view(station),
            "upstream": station_upstream_view(station.upstream),
            "connectors": connectors,
        })
    return {"at": now.isoformat(), "stations": stations}
