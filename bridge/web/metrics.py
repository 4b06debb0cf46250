"""Prometheus metrics in the text exposition format (0.0.4), written by hand: a few
gauges, counters and histograms read from the bridge at scrape time need no client
library."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from bridge.web import views

if TYPE_CHECKING:
    from bridge.web.port import HistogramView, SiteReader

EVENT_STATES = ("upcoming", "active", "completed", "cancelled")


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Literal["gauge", "counter", "histogram"]
    help: str
    samples: tuple[tuple[Mapping[str, str], float], ...] = field(default=())
    # a histogram's samples: (name suffix, labels, value), _bucket{le=...}, _sum, _count
    parts: tuple[tuple[str, Mapping[str, str], float], ...] = field(default=())


@dataclass(frozen=True)
class HistogramMetric:
    """A histogram: ``<name>_bucket{le=...}`` (cumulative), ``<name>_sum``, ``<name>_count``."""

    name: str
    help: str
    view: HistogramView


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def format_metrics(metrics: Iterable[Metric | HistogramMetric]) -> str:
    lines: list[str] = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {metric.help.replace(chr(10), ' ')}")
        if isinstance(metric, HistogramMetric):
            view = metric.view
            lines.append(f"# TYPE {metric.name} histogram")
            for bound, n in zip((*view.bounds, math.inf), view.cumulative, strict=True):
                lines.append(f'{metric.name}_bucket{{le="{_le(bound)}"}} {n}')
            lines.append(f"{metric.name}_sum {_number(view.total)}")
            lines.append(f"{metric.name}_count {view.count}")
            continue
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        samples = [("", labels, value) for labels, value in metric.samples] + list(metric.parts)
        for suffix, labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            name = metric.name + suffix + (f"{{{label_text}}}" if label_text else "")
            lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _one(name: str, kind: Literal["gauge", "counter"], help_text: str, value: float) -> Metric:
    return Metric(name, kind, help_text, (({}, value),))


MONITOR_STATES = ("off", "pending", "installed", "refused", "not-supported")
DER_STATES = ("off", "pending", "in-force", "superseded", "mismatch", "refused",
              "not-supported", "unexpressible")


def _voltage_controls(reader: SiteReader) -> list[Metric]:
    """Voltage notices by source; stations by the state of their monitors and DER control."""
    monitors = dict.fromkeys(MONITOR_STATES, 0)
    controls = dict.fromkeys(DER_STATES, 0)
    by_monitors, by_der = reader.voltage_control_states()
    for state, n in by_monitors.items():
        monitors[state] = monitors.get(state, 0) + n
    for state, n in by_der.items():
        controls[state] = controls.get(state, 0) + n
    events = reader.counters().voltage_events
    return [
        Metric("drbridge_voltage_events_total", "counter",
               "Voltages stations reported outside their meter values, by source (monitor: "
               "a variable monitor's event; der-control: a notice of their own DER control).",
               tuple(({"source": source}, float(events.get(source, 0)))
                     for source in sorted({"monitor", "der-control", *events}))),
        Metric("drbridge_voltage_monitors", "gauge",
               "Stations by the state of drbridge's voltage monitors on them.",
               tuple(({"state": state}, float(n)) for state, n in monitors.items())),
        Metric("drbridge_der_controls", "gauge",
               "Stations by the state of drbridge's VoltWatt DER control on them.",
               tuple(({"state": state}, float(n)) for state, n in controls.items())),
    ]


def collect(reader: SiteReader) -> list[Metric | HistogramMetric]:
    snapshot = reader.site_now()  # not the per-station views: this runs every scrape
    now = snapshot.at
    capacity = reader.config.site.capacity_w
    counts = reader.counts()
    profiles = reader.profile_counts()
    sent = sum(profiles.values())
    states = {state: 0 for state in EVENT_STATES}
    current: list[tuple[Mapping[str, str], float]] = []
    for stored in reader.events():
        state = views.event_state(stored.event, now)
        states[state] += 1
        if state in ("active", "upcoming"):
            current.append(({"event_id": stored.event.event_id, "state": state,
                             "opt": stored.opt}, 1.0))
    vtn = reader.vtn()
    last_contact = vtn.last_contact
    counters = reader.counters()
    voltage = views.voltage_view(reader, now)
    dr_active = snapshot.site_limit_w < capacity and bool(snapshot.active_events)
    timings = reader.timings()
    last_plan = timings.last_plan_ended_at
    return [
        _one("drbridge_site_load_watts", "gauge", "Measured EV charging load of the site.",
             snapshot.load_w),
        _one("drbridge_site_limit_watts", "gauge", "Site limit in force now.",
             snapshot.site_limit_w),
        _one("drbridge_site_capacity_watts", "gauge", "Configured site capacity.", capacity),
        _one("drbridge_dr_limit_active", "gauge",
             "1 while a DR event holds the site below its capacity.", float(dr_active)),
        _one("drbridge_stations_connected", "gauge", "Stations with an open OCPP connection.",
             float(counts.connected)),
        _one("drbridge_stations_known", "gauge", "Stations the bridge has seen.",
             float(counts.known)),
        _one("drbridge_sessions_active", "gauge", "Open charging transactions.",
             float(counts.sessions)),
        _one("drbridge_stations_dispatching", "gauge",
             "Stations the bridge is sending a limit to, holding a raise for, or checking.",
             float(counts.dispatching)),
        _one("drbridge_profiles_sent_total", "counter", "Charging profiles sent to stations.",
             float(sent)),
        _one("drbridge_profiles_rejected_total", "counter",
             "Charging profiles a station rejected or did not answer.",
             float(sent - profiles.get("Accepted", 0))),
        Metric("drbridge_profiles_total", "counter",
               "Charging profiles sent, by the station's answer.",
               tuple(({"status": status}, float(n)) for status, n in sorted(profiles.items()))),
        Metric("drbridge_events", "gauge", "DR events known, by state.",
               tuple(({"state": state}, float(n)) for state, n in states.items())),
        Metric("drbridge_event_info", "gauge",
               "1 for each active or upcoming DR event, with its state and opt.",
               tuple(current)),
        _one("drbridge_vtn_registered", "gauge", "1 once registered with the VTN.",
             float(vtn.registered)),
        _one("drbridge_vtn_last_contact_timestamp_seconds", "gauge",
             "Unix time of the VTN's last answer (0: never).",
             last_contact.timestamp() if last_contact else 0.0),
        Metric("drbridge_ocpp_messages_received_total", "counter",
               "OCPP requests received from stations, by 1.6 action (a 2.0.1 "
               "TransactionEvent counts as the start, stop or meter values it carries).",
               tuple(({"action": action}, float(n))
                     for action, n in sorted(counters.messages_in.items()))),
        Metric("drbridge_ocpp_calls_sent_total", "counter",
               "OCPP calls sent to stations, by action (profiles, configuration, checks).",
               tuple(({"action": action}, float(n))
                     for action, n in sorted(counters.calls_out.items()))),
        Metric("drbridge_ocpp_lenient_total", "counter",
               "Station requests off the OCPP schema read after a repair with one meaning,"
               " by action and kind of repair (a request counts once per kind).",
               tuple(({"action": action, "kind": kind}, float(n))
                     for (action, kind), n in sorted(counters.lenient.items()))),
        Metric("drbridge_meter_samples_ignored_total", "counter",
               "Meter samples left out of the site load, energy and voltages, by measurand"
               " and why (unreadable, not_finite, negative, out_of_range).",
               tuple(({"measurand": measurand, "reason": why}, float(n))
                     for (measurand, why), n in
                     sorted(counters.samples_ignored.items()))),
        _one("drbridge_start_time_seconds", "gauge", "Unix time the bridge started.",
             counters.started_at.timestamp()),
        _one("drbridge_over_voltage_floor_ratio", "gauge",
             "Share of site capacity that price signals may not hold back while the "
             "feeder is over-voltage (0: no floor).",
             float((voltage["over_voltage_floor"] or {}).get("share", 0.0))),
        Metric("drbridge_site_voltage_volts", "gauge",
               "Line-to-neutral voltage over the stations' fresh readings, by phase and "
               "statistic (min, mean).",
               tuple(({"phase": phase, "stat": stat}, values[stat + "_v"])
                     for phase, values in voltage["phases"].items()
                     for stat in ("min", "mean"))),
        HistogramMetric("drbridge_event_loop_lag_seconds",
                  "How late a task asking to wake every 0.1 s woke: the time every station's"
                  " replies waited on whatever held the event loop (the sum is about the"
                  " time it was held).", timings.loop_lag),
        HistogramMetric("drbridge_plan_duration_seconds",
                  "How long each plan took, from its inputs taken to its schedules handed to"
                  " the dispatcher and stored (the policy runs in the planning process or"
                  " thread: what held the event loop shows in the loop lag).",
                  timings.plan_seconds),
        _one("drbridge_plans_in_process_total", "counter",
             "Plans made in the planning process (the others in the bridge's planning"
             " thread: a small fleet's, or while the process was not running).",
             timings.plans_in_process),
        _one("drbridge_planning_process_up", "gauge",
             "1 while the planning process runs and takes plans.",
             1.0 if timings.planning_process_up else 0.0),
        _one("drbridge_planning_process_failures_total", "counter",
             "Times the planning process failed or could not start (plans were made in the"
             " thread meanwhile; it is started again after a growing wait).",
             timings.planning_process_failures),
        _one("drbridge_plan_last_end_timestamp_seconds", "gauge",
             "Unix time the last plan ended (0: none yet).",
             last_plan.timestamp() if last_plan else 0.0),
        *_voltage_controls(reader),
    ]


def upstream_metrics(reader: SiteReader) -> list[Metric]:
    """Local-controller mode: the links to the operator's CSMS, the replay queue, and the
    time a forwarded message spends in drbridge (a histogram)."""
    upstream = reader.upstream()
    if upstream is None:
        return []
    parts: list[tuple[str, Mapping[str, str], float]] = [
        ("_bucket", {"le": repr(bound)}, float(count)) for bound, count in upstream.added_buckets]
    parts += [("_bucket", {"le": "+Inf"}, float(upstream.added_count)),
              ("_sum", {}, upstream.added_sum_s), ("_count", {}, float(upstream.added_count))]
    return [
        Metric("drbridge_upstream_links", "gauge",
               "Stations' links to the operator's CSMS, by state.",
               tuple(({"state": state}, float(upstream.links.get(state, 0)))
                     for state in ("connecting", "up", "replaying", "down"))),
        _one("drbridge_upstream_queue_length", "gauge",
             "Station messages kept for the operator's CSMS, not yet delivered.",
             float(upstream.queue)),
        Metric("drbridge_upstream_messages_total", "counter",
               "Messages between stations and the operator's CSMS, by direction and how "
               "they went (forwarded, answered_locally, queued, replayed).",
               tuple(({"direction": direction, "how": how}, float(n))
                     for (direction, how), n in sorted(upstream.messages.items()))),
        Metric("drbridge_upstream_forward_added_seconds", "histogram",
               "Time a station's message forwarded to the operator spent in drbridge, on its "
               "way up and its answer's way back.", parts=tuple(parts)),
    ]


def render_metrics(reader: SiteReader) -> str:
    return format_metrics([*collect(reader), *upstream_metrics(reader)])
