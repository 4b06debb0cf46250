"""The running bridge: wires the VEN, the policy engine, the OCPP side and the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.aio import cancel_and_wait
from bridge.compliance import ComplianceRule
from bridge.config import Config
from bridge.dispatch import Dispatcher
from bridge.ocpp.link import ChargerLink
from bridge.ocpp.server import OcppServer
from bridge.store import MeterSample, Store, StoredEvent
from bridge.telemetry import ConnectorMeter, read_meter_value, site_load_w
from policies.fleet import Fleet, Plan, Session, Step, value_at
from policies.plan import decide_opt, make_plan
from ven.client import Registration, Ven, VenSettings
from ven.events import DrEvent, OptType

log = logging.getLogger(__name__)

REPLAN_PERIOD_S = 30.0  # also replans on every change; this only catches event boundaries
FLUSH_PERIOD_S = 1.0
# Changes within this window share one plan: each plan may re-send a profile to every
# station, so a boot storm must make a few plans, not one per session. (A DR event is
# planned at once, without waiting.)
REPLAN_COALESCE_S = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Snapshot:
    """What an operator (or the demo) sees at one moment."""

    at: datetime
    site_limit_w: float
    site_limit_reason: str
    load_w: float
    station_limits_w: dict[str, float]
    station_power_w: dict[str, float]
    active_events: list[str]
    # steered, connecting, offline, refusing, unmanageable or non-compliant (see Dispatcher)
    station_status: dict[str, str] = field(default_factory=dict)
    station_detail: dict[str, str] = field(default_factory=dict)  # why, where not steered


class Bridge:
    def __init__(self, config: Config, clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self._clock = clock
        self.store = Store(config.storage_path)
        self.events: dict[str, StoredEvent] = {e.event.event_id: e for e in self.store.events()}
        self.sessions: dict[int, Session] = {
            row["id"]: Session(row["station_id"], row["connector_id"],
                               datetime.fromisoformat(row["started_at"]))
            for row in self.store.open_transactions()
        }
        self._open_tx = {(s.station_id, s.connector_id): tx for tx, s in self.sessions.items()}
        self.meters: dict[tuple[str, int], ConnectorMeter] = {}
        # each station's connectors' latest power, for its total draw
        self._connector_power: dict[str, dict[int, float]] = {}
        self.plan: Plan | None = None
        self._samples: list[MeterSample] = []
        self._replan = asyncio.Event()
        self._stop = asyncio.Event()
        model = config.model
        self.dispatcher = Dispatcher(
            self.store,
            min_current_a=config.policy.allocation.min_current_a,
            retry_s=model.ocpp.retry_s,
            on_change=self.request_replan,
            meter_interval_s=model.ocpp.meter_interval_s,
            clock=clock,
            compliance=ComplianceRule(model.ocpp.compliance_tolerance_w,
                                      timedelta(seconds=model.ocpp.compliance_grace_s)),
        )
        self.ocpp = OcppServer(
            model.ocpp.host, model.ocpp.port, self,
            accepts=config.accepts_station,
            on_open=self._station_connected,
            on_close=self._station_disconnected,
            call_timeout_s=model.ocpp.call_timeout_s,
        )
        self.ven = Ven(
            VenSettings(
                vtn_url=model.ven.vtn_url,
                ven_name=model.ven.ven_name,
                resource_id=config.resource_id,
                telemetry_interval=timedelta(seconds=model.telemetry.interval_s),
                retry_max=timedelta(seconds=model.ven.poll_retry_max_s),
            ),
            self,
            registration=self.store.registration(model.ven.vtn_url),
        )

    # lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until :meth:`stop`; then persist and close."""
        await self.ocpp.start()
        self._replan_now()
        tasks = [
            asyncio.create_task(self.ven.run(), name="ven"),
            asyncio.create_task(self._replan_loop(), name="replan"),
            asyncio.create_task(self._flush_loop(), name="telemetry"),
        ]
        try:
            await self._stop.wait()
        finally:
            await self.ven.stop()
            await cancel_and_wait(tasks)
            await self.ocpp.close()
            await self.dispatcher.close()
            self._flush()
            self.store.close()

    def stop(self) -> None:
        self._stop.set()

    def request_replan(self) -> None:
        self._replan.set()

    # VEN side -------------------------------------------------------------------------------
    async def on_event(self, event: DrEvent) -> OptType:
        opt, reason = decide_opt(event, self.config.policy)
        known = self.events.get(event.event_id)
        if known and known.event.modification_number > event.modification_number:
            log.info("event %s: modification %d is older than %d; ignored", event.event_id,
                     event.modification_number, known.event.modification_number)
            return known.opt  # type: ignore[return-value]
        # Persist before the VTN hears our answer.
        self.store.save_event(event, opt, reason, self._clock())
        self.events[event.event_id] = StoredEvent(event, opt, reason)
        log.info("event %s (%s, modification %d) %s: %s", event.event_id, event.status.value,
                 event.modification_number, opt, reason)
        self._replan_now()
        return opt

    def on_registration(self, registration: Registration) -> None:
        self.store.save_registration(self.config.model.ven.vtn_url, registration, self._clock())
        log.info("registered with the VTN as %s", registration.ven_id)

    def measured_load_w(self) -> float:
        stale = timedelta(seconds=self.config.model.telemetry.stale_after_s)
        return site_load_w((m.latest for m in self.meters.values()), self._clock(), stale)

    # OCPP side ------------------------------------------------------------------------------
    def _station_connected(self, station_id: str, link: ChargerLink) -> None:
        self.dispatcher.connected(self.config.station_info(station_id), link)

    def _station_disconnected(self, station_id: str, link: ChargerLink) -> None:
        self.dispatcher.disconnected(station_id, link)

    def station_booted(self, station_id: str, info: dict[str, str]) -> None:
        now = self._clock().isoformat()
        self.store.save_station(station_id, {**info, "last_boot": now, "last_seen": now})
        self.dispatcher.booted(station_id)

    def status_changed(self, station_id: str, connector_id: int, status: str) -> None:
        log.debug("%s/%d: %s", station_id, connector_id, status)

    def transaction_started(self, station_id: str, connector_id: int, id_tag: str,
                            meter_start: int, at: datetime) -> int:
        now = self._clock()
        previous = self._open_tx.get((station_id, connector_id))
        if previous is not None and previous in self.sessions:
            # the station started anew without stopping the old one (a reboot)
            self.store.stop_transaction(previous, meter_start, now)
            del self.sessions[previous]
        tx_id = self.store.start_transaction(station_id, connector_id, id_tag, meter_start, now)
        self.sessions[tx_id] = Session(station_id, connector_id, now)
        self._open_tx[(station_id, connector_id)] = tx_id
        log.info("%s/%d: transaction %d started", station_id, connector_id, tx_id)
        self.request_replan()
        return tx_id

    def transaction_stopped(self, station_id: str, transaction_id: int, meter_stop: int,
                            at: datetime) -> None:
        now = self._clock()
        self.store.stop_transaction(transaction_id, meter_stop, now)
        session = self.sessions.get(transaction_id)
        if session is not None:
            # the EV is done: its last reading must not count on until it goes stale
            meter = self.meters.get((session.station_id, session.connector_id))
            if meter is not None:
                meter.latest = (now, 0.0)
            self._connector_power.get(session.station_id, {}).pop(session.connector_id, None)
            self._open_tx.pop((session.station_id, session.connector_id), None)
        if self.sessions.pop(transaction_id, None) is not None:
            log.info("%s: transaction %d stopped", station_id, transaction_id)
        self.request_replan()

    def open_transaction(self, station_id: str, connector_id: int) -> int | None:
        return self._open_tx.get((station_id, connector_id))

    def meter_values(self, station_id: str, connector_id: int,
                     meter_values: list[dict[str, Any]]) -> None:
        info = self.config.station_info(station_id)
        meter = self.meters.setdefault((station_id, connector_id), ConnectorMeter())
        for item in meter_values:
            reading = read_meter_value(item, info.voltage_v)
            if reading is None:
                continue
            power = meter.update(reading)
            self._samples.append(
                MeterSample(station_id, connector_id, reading.at, power, reading.energy_wh)
            )
            if power is not None:
                connectors = self._connector_power.setdefault(station_id, {})
                connectors[connector_id] = power
                # connector 0 is the station's own meter where it has one
                total = connectors[0] if 0 in connectors else sum(connectors.values())
                self.dispatcher.observe_draw(station_id, total)

    # planning -------------------------------------------------------------------------------
    def active_events(self, now: datetime) -> list[DrEvent]:
        return [e.event for e in self.events.values()
                if e.opt == "optIn" and not e.event.is_over(now)]

    def _replan_now(self) -> None:
        now = self._clock()
        stations = {sid: self.config.station_info(sid) for sid in self.dispatcher.stations}
        with_session = {s.station_id for s in self.sessions.values()}
        fleet = Fleet(
            stations=stations,
            sessions=tuple(s for s in self.sessions.values() if s.station_id in stations),
            reservations=self.dispatcher.reservations(with_session),
        )
        plan = make_plan(self.active_events(now), self.config.policy, self.config.site, fleet, now)
        previous = self.plan
        self.plan = plan
        running: dict[str, dict[int, int]] = {}
        for tx_id, session in self.sessions.items():
            running.setdefault(session.station_id, {})[session.connector_id] = tx_id
        self.dispatcher.set_desired(plan.stations, running)
        if previous is None or _changed(previous, plan, now):
            self.store.save_plan(plan.made_at, plan.site, plan.stations)

    async def _replan_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._replan.wait(), REPLAN_PERIOD_S)
            except TimeoutError:
                pass
            self._replan.clear()
            try:
                self._replan_now()
            except Exception:  # a planning bug must not stop the bridge; the stations keep limits
                log.exception("planning failed; stations keep their current profiles")
            await asyncio.sleep(REPLAN_COALESCE_S)

    # telemetry ------------------------------------------------------------------------------
    def _flush(self) -> None:
        self.store.flush()
        if self._samples:
            samples, self._samples = self._samples, []
            self.store.add_samples(samples)

    async def _flush_loop(self) -> None:
        last_site_row = self._clock() - timedelta(days=1)
        while True:
            await asyncio.sleep(FLUSH_PERIOD_S)
            self._flush()
            now = self._clock()
            if (now - last_site_row).total_seconds() >= min(self.config.model.telemetry.interval_s,
                                                            10):
                snapshot = self.snapshot()
                self.store.add_site_load(now, snapshot.load_w, snapshot.site_limit_w)
                last_site_row = now

    def snapshot(self) -> Snapshot:
        now = self._clock()
        site_step = value_at(self.plan.site, now) if self.plan else None
        limits = {}
        for station_id, state in self.dispatcher.stations.items():
            step = value_at(state.applied, now) if state.applied else None
            limits[station_id] = step.limit_w if step else float("nan")
        stale = timedelta(seconds=self.config.model.telemetry.stale_after_s)
        power: dict[str, float] = {}
        for (station_id, _), meter in self.meters.items():
            if meter.latest and now - meter.latest[0] <= stale:
                power[station_id] = power.get(station_id, 0.0) + meter.latest[1]
        return Snapshot(
            at=now,
            site_limit_w=site_step.limit_w if site_step else self.config.site.capacity_w,
            site_limit_reason=site_step.reason if site_step else "site capacity",
            load_w=self.measured_load_w(),
            station_limits_w=limits,
            station_power_w=power,
            active_events=[e.event_id for e in self.active_events(now) if e.start <= now],
            station_status={sid: s.status for sid, s in self.dispatcher.stations.items()},
            station_detail={sid: s.detail for sid, s in self.dispatcher.stations.items()
                            if s.detail},
        )


def _changed(old: Plan, new: Plan, now: datetime) -> bool:
    def future(steps: tuple[Step, ...]) -> list[tuple[float, float]]:
        return [(max(s.start, now).timestamp(), round(s.limit_w)) for s in steps
                if s.start >= now or s is value_at(steps, now)]
    if future(old.site) != future(new.site) or old.stations.keys() != new.stations.keys():
        return True
    return any(future(old.stations[k]) != future(new.stations[k]) for k in new.stations)
