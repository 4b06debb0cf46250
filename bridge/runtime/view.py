"""The read view of the running bridge: :class:`bridge.web.port.SiteReader`.

Copies what the dashboard, the API, the metrics and the demo show out of the runtime's
parts into the port's frozen views; nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from itertools import chain

from bridge.clock import Clock
from bridge.config import Config
from bridge.dispatch import Dispatcher, StationRecord
from bridge.ocpp.voltage_observation import VoltageObservation
from bridge.runtime.dr import DrEvents
from bridge.runtime.operator import Operator
from bridge.runtime.planning import Planner
from bridge.runtime.stations import StationEvents
from bridge.runtime.voltage_controls import VoltageControls
from bridge.station_life import Phase
from bridge.store import Store
from bridge.timings import Histogram
from bridge.upstream.controller import ADDED_BUCKETS_S, LocalController
from bridge.web.port import (
    NO_VOLTAGE_CONTROL,
    ConnectorView,
    Counted,
    Counters,
    HistogramView,
    Hold,
    KnownEvent,
    Life,
    LoadRow,
    OperatorProfile,
    OptOut,
    SiteNow,
    SiteVoltages,
    Snapshot,
    StationCounts,
    StationUpstream,
    StationView,
    Steering,
    Timings,
    Upstream,
    VoltageControl,
    VoltageNotice,
    VtnLink,
)
from policies.fleet import value_at
from ven.interface import VenDriver


class RuntimeView:
    def __init__(self, config: Config, store: Store, clock: Clock, started_at: datetime,
                 dispatcher: Dispatcher, fleet: StationEvents, dr: DrEvents, planner: Planner,
                 operator: Operator, ven: VenDriver, loop_lag: Histogram,
                 voltage_controls: VoltageControls | None = None,
                 upstream: LocalController | None = None) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._started_at = started_at
        self._dispatcher = dispatcher
        self._fleet = fleet
        self._dr = dr
        self._planner = planner
        self._operator = operator
        self._ven = ven
        self._loop_lag = loop_lag
        self._voltage_controls = voltage_controls
        self._upstream = upstream  # local-controller mode

    @property
    def config(self) -> Config:
        return self._config

    def now(self) -> datetime:
        return self._clock()

    def snapshot(self) -> Snapshot:
        site = self.site_now()
        now = site.at
        records = self._dispatcher.stations
        limits = {}
        for station_id, record in records.items():
            step = value_at(record.applied, now) if record.applied else None
            limits[station_id] = step.limit_w if step else float("nan")
        stale = timedelta(seconds=self._config.model.telemetry.stale_after_s)
        power: dict[str, float] = {}
        for (station_id, _), meter in self._fleet.meters.items():
            if meter.latest and now - meter.latest[0] <= stale:
                power[station_id] = power.get(station_id, 0.0) + meter.latest[1]
        return Snapshot(
            at=now,
            site_limit_w=site.site_limit_w,
            site_limit_reason=site.site_limit_reason,
            load_w=site.load_w,
            station_limits_w=limits,
            station_power_w=power,
            active_events=site.active_events,
            station_status={sid: r.status for sid, r in records.items()},
            station_detail={sid: r.detail for sid, r in records.items() if r.detail},
        )

    def site_now(self) -> SiteNow:
        now = self._clock()
        site_step = self._planner.site_step(now)
        return SiteNow(
            at=now,
            site_limit_w=site_step.limit_w if site_step else self._config.site.capacity_w,
            site_limit_reason=site_step.reason if site_step else "site capacity",
            load_w=self._fleet.load_w(),
            active_events=[e.event_id for e in self._dr.active_events(now) if e.start <= now],
        )

    def vtn(self) -> VtnLink:
        registration = self._ven.registration
        return VtnLink(url=self._config.model.ven.vtn_url, registered=registration is not None,
                       ven_id=registration.ven_id if registration else None,
                       last_contact=self._ven.last_contact,
                       protocol=self._ven.openadr_version,
                       programs=tuple(sorted(self._ven.program_names.values())))

    def counts(self) -> StationCounts:
        records = self._dispatcher.stations
        connected = dispatching = 0
        for record in records.values():  # one pass: /metrics asks every scrape
            connected += record.link is not None
            dispatching += record.task is not None or record.starting
        return StationCounts(connected=connected, known=len(records),
                             sessions=len(self._fleet.sessions), dispatching=dispatching)

    def voltages(self, now: datetime) -> SiteVoltages:
        site = self._fleet.grid.site(now, self._dispatcher.stations)
        plan = self._planner.plan
        state = plan.state if plan is not None else None
        return SiteVoltages(nominal_v=self._config.site.voltage_v, phases=site.phases,
                            floor=state.absorb if state is not None else None)

    def site_load(self, since: datetime) -> list[LoadRow]:
        return self._store.site_load(since)

    def site_load_between(self, start: datetime, end: datetime) -> list[LoadRow]:
        return self._store.site_load_between(start, end)

    def events(self) -> list[KnownEvent]:
        return [KnownEvent(e.event, e.opt, e.opt_reason) for e in self._dr.events.values()]

    def baselines_w(self) -> Mapping[str, float]:
        return dict(self._dr.baselines)

    def standing_opt_outs(self) -> Mapping[str, OptOut]:
        return {o.event_id: OptOut(o.opt_id, o.reason, o.requested_at, o.sent_at)
                for o in self._store.operator_opts()
                if o.event_id is not None and o.cancelled_at is None}

    def has_station(self, station_id: str) -> bool:
        return station_id in self._dispatcher.stations or station_id in self._operator.holds

    def profile_counts(self) -> Mapping[str, int]:
        return self._store.profile_counts()

    def counters(self) -> Counters:
        fleet = self._fleet
        return Counters(started_at=self._started_at, messages_in=dict(fleet.messages_in),
                        calls_out=dict(fleet.calls_out),
                        lenient=dict(fleet.near_misses.repaired),
                        samples_ignored=dict(fleet.near_misses.ignored_samples),
                        voltage_events=dict(fleet.voltage_events))

    def upstream(self) -> Upstream | None:
        controller = self._upstream
        if controller is None:
            return None
        stats = controller.stats
        total, buckets = 0, []
        for bound, count in zip(ADDED_BUCKETS_S, stats.added_buckets, strict=True):
            total += count
            buckets.append((bound, total))
        return Upstream(url=controller.url, links=dict(controller.link_states()),
                        queue=controller.queue_length(),
                        offline_authorization=controller.policy.value,
                        messages=dict(stats.messages), added_buckets=tuple(buckets),
                        added_sum_s=stats.added_sum_s, added_count=stats.added_count)

    def _station_upstream(self, station_id: str,
                          sessions: Mapping[int, int]) -> StationUpstream | None:
        controller = self._upstream
        if controller is None:
            return None
        now = self._clock()
        info = self._config.station_info(station_id)
        return StationUpstream(
            link=controller.link_state(station_id), queue=controller.backlog(station_id),
            limit=controller.operator_limit(station_id, info, sessions, now),
            profiles=tuple(OperatorProfile(p.upstream_id, p.purpose, p.connector,
                                           p.upstream_level, p.station_id, p.station_level)
                           for p in controller.operator_profiles(station_id)))

    def timings(self) -> Timings:
        return Timings(loop_lag=_histogram(self._loop_lag),
                       plan_seconds=_histogram(self._planner.durations),
                       last_plan_ended_at=self._planner.last_ended_at,
                       plans_in_process=self._planner.process.plans,
                       planning_process_up=self._planner.process.ready,
                       planning_process_failures=self._planner.process.failures)

    def stations(self) -> list[StationView]:
        fleet = self._fleet
        records = self._dispatcher.stations
        holds = self._operator.holds
        sessions = {(s.station_id, s.connector_id): (tx, s) for tx, s in fleet.sessions.items()}
        # grouped once: a scan of every session for each station made a fleet of 10,000
        # cost 10^8 steps per view, seconds of a stalled event loop at each /metrics scrape
        running_by_station: dict[str, dict[int, int]] = {}
        for (sid, connector_id), (tx, _) in sessions.items():
            running_by_station.setdefault(sid, {})[connector_id] = tx
        connectors: dict[str, set[int]] = {}
        for station_id, connector_id in chain(fleet.connector_status, fleet.meters, sessions):
            connectors.setdefault(station_id, set()).add(connector_id)
        views = []
        for station_id in sorted(set(records) | set(holds)):
            record = records.get(station_id)
            rows = []
            for connector_id in sorted(connectors.get(station_id, ())):
                status = fleet.connector_status.get((station_id, connector_id))
                meter = fleet.meters.get((station_id, connector_id))
                session = sessions.get((station_id, connector_id))
                slot = record.slots.get(connector_id) if record else None
                rows.append(ConnectorView(
                    connector_id=connector_id,
                    status=status[0] if status else None,
                    status_since=status[1] if status else None,
                    latest_w=meter.latest if meter else None,
                    profile=slot.applied if slot else None,
                    profile_purpose=slot.purpose if slot else None,
                    transaction_id=session[0] if session else None,
                    session_started_at=session[1].started_at if session else None))
            hold = holds.get(station_id)
            running = running_by_station.get(station_id, {})
            views.append(StationView(
                station_id=station_id,
                steering=_steering(record) if record is not None else None,
                last_seen=fleet.last_seen.get(station_id),
                hold=Hold(*hold) if hold else None,
                voltage=fleet.grid.latest.get(station_id),
                connectors=tuple(rows),
                voltage_control=self._voltage_control(station_id),
                voltage_event=_notice(fleet.voltage_notices.get(station_id)),
                der_notice=_notice(fleet.der_notices.get(station_id)),
                upstream=self._station_upstream(station_id, running)))
        return views

    def voltage_control_states(self) -> tuple[dict[str, int], dict[str, int]]:
        # Counted without the stations' views: /metrics asks on every scrape, and building
        # every view of a 5,000-station fleet costs the loop about 0.1 s.
        monitors: dict[str, int] = {}
        der: dict[str, int] = {}
        controls = self._voltage_controls
        for station_id in set(self._dispatcher.stations) | set(self._operator.holds):
            found = controls.view(station_id) if controls is not None else None
            state = found or NO_VOLTAGE_CONTROL
            monitors[state.monitors] = monitors.get(state.monitors, 0) + 1
            der[state.der] = der.get(state.der, 0) + 1
        return monitors, der

    def _voltage_control(self, station_id: str) -> VoltageControl:
        controls = self._voltage_controls
        found = controls.view(station_id) if controls is not None else None
        if found is None:
            return NO_VOLTAGE_CONTROL
        return VoltageControl(found.source, found.monitors, found.monitors_detail,
                              found.monitors_held, found.der, found.der_detail)


def _notice(observation: VoltageObservation | None) -> VoltageNotice | None:
    if observation is None:
        return None
    return VoltageNotice(observation.at, observation.source, observation.volts,
                         observation.phase, observation.detail,
                         observation.returned_to_normal)


def _histogram(histogram: Histogram) -> HistogramView:
    return HistogramView(bounds=histogram.bounds, cumulative=histogram.buckets(),
                         total=histogram.total, count=histogram.count)


def _steering(record: StationRecord) -> Steering:
    counted = record.counted
    life = record.life
    return Steering(
        connected=record.link is not None,
        status=record.status,
        applied=record.applied,
        desired=record.desired,
        confirmed=life.confirmed,
        refused=life.refuses,
        unmanageable=life.unmanageable,
        awaiting_answer=record.in_flight is not None or record.uncertain is not None,
        non_compliant=life.non_compliant,
        compliance_detail=record.compliance.detail,
        counted=Counted(counted.watts, counted.reason) if counted is not None else None,
        verified=life.phase is Phase.VERIFIED,
        max_w=record.info.max_w if record.info.max_current_a else None,
        life=Life(phase=life.phase.value, since=life.since,
                  counted_as=record.counting.value if record.counting is not None else None),
    )
