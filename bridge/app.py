"""The running bridge: its parts built from the config, connected, run and stopped.

Each part has one job (see :mod:`bridge.runtime`): the station events in
(:attr:`Bridge.station_events`), the DR events and opts (:attr:`Bridge.dr`), the
operator's actions (:attr:`Bridge.operator`), the planning loop (:attr:`Bridge.planner`,
:attr:`Bridge.replans`), the voltage monitors and DER control in the stations
(:attr:`Bridge.voltage_controls`), telemetry and reports (:attr:`Bridge.reports`), the
store's retention (:attr:`Bridge.retention`) and the read view the web and the demo show
(:attr:`Bridge.view`); the dispatcher, the OCPP server, the VEN and the store are theirs
to use. Only this module knows them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bridge.aio import cancel_and_wait
from bridge.clock import Clock, utcnow
from bridge.compliance import ComplianceRule
from bridge.config import Config
from bridge.dispatch import Dispatcher
from bridge.heap import give_back_periodically
from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.link import ChargerLink
from bridge.ocpp.security import EdgeSecurity
from bridge.ocpp.server import SUBPROTOCOLS, OcppServer
from bridge.runtime.admission import Admission
from bridge.runtime.dr import DrEvents
from bridge.runtime.operator import Operator
from bridge.runtime.planning import Planner, ReplanLoop
from bridge.runtime.reports import Reports
from bridge.runtime.retention import Pruner
from bridge.runtime.stations import StationEvents
from bridge.runtime.view import RuntimeView
from bridge.runtime.voltage_controls import VoltageControls
from bridge.store import Store
from bridge.telemetry import GRID_MEASURANDS
from bridge.timings import LAG_BUCKETS_S, Histogram, sample_loop_lag
from bridge.upstream.controller import LocalController
from policies.events import DrEvent, OptType
from policies.events import build_validators as build_event_validators
from policies.fleet import value_at
from ven.interface import Registration, SiteStatus, VenDriver, VenListener
from ven.oadr3.outbox import SqliteOutbox
from ven.oadr3.ven import Ven3
from ven.oadr20b.client import Ven, VenSettings

if TYPE_CHECKING:
    from bridge.web.server import WebServer

# Builds the VEN for a listener and the store (its state): by default the one
# ``ven.protocol`` names, OpenADR 2.0b or 3.
VenFactory = Callable[[VenListener, Store], VenDriver]


class Bridge:
    def __init__(self, config: Config, clock: Clock = utcnow,
                 ven: VenFactory | None = None) -> None:
        self.config = config
        started_at = clock()
        self.store = Store(config.storage_path)
        self._stop = asyncio.Event()
        model = config.model
        # Parts that change what the plan depends on ask for one: soon (coalesced, through
        # the loop) or at once (a DR event, an operator action, through the planner, which
        # is made last: it reads the others).
        self.replans = ReplanLoop()
        # local-controller mode (ocpp.upstream): the site's own CSMS behind drbridge
        self.upstream = self._local_controller(clock) if model.ocpp.upstream else None
        self.dispatcher = Dispatcher(
            self.store,
            min_current_a=config.policy.allocation.min_current_a,
            retry_s=model.ocpp.retry_s,
            on_change=self.replans.request,
            meter_interval_s=model.ocpp.meter_interval_s,
            clock=clock,
            compliance=ComplianceRule(model.ocpp.compliance_tolerance_w,
                                      timedelta(seconds=model.ocpp.compliance_grace_s)),
            # the volt-watt rule and the voltage reports need each station's voltage
            measurands=GRID_MEASURANDS
            if config.policy.voltage is not None or model.telemetry.voltage else (),
            peak_after=timedelta(seconds=model.ocpp.learn_peak_after_s),
            on_capabilities=self._capabilities_known,
            operator=self.upstream,
            on_registered=lambda station_id: self.admission.registered(station_id),
        )
        # voltage monitors and DER control in the stations, after their limits
        self.voltage_controls = VoltageControls(config, self.store, self.dispatcher.limits_sent,
                                                retry_s=model.ocpp.retry_s)
        self.station_events = StationEvents(config, self.store, self.dispatcher, clock,
                                            request_replan=self.replans.request,
                                            on_voltage=self._voltage_changed,
                                            on_voltage_event=self._voltage_event,
                                            on_session_started=lambda station_id:
                                            self.admission.session_started(station_id))
        if self.upstream is not None:  # what is forwarded is read as ever
            self.upstream.listener = self.station_events
        default = self._openadr_3 if config.openadr3 else self._openadr_20b
        self.ven: VenDriver = (ven or default)(_VenListener(self), self.store)
        resumed_state, baselines = self.store.plan_state()
        self.dr = DrEvents(config, self.store, clock, self.ven, self.station_events, baselines,
                           replan_now=self._replan_now)
        self.operator = Operator(self.store, clock, self.dr, replan_now=self._replan_now)
        self.planner = Planner(config, self.store, clock, self.dispatcher, self.station_events,
                               self.dr, self.operator.holds, self.ven, resumed_state,
                               started_at, request_replan=self.replans.request,
                               replan_urgently=lambda: self.replans.request(urgent=True),
                               operator_ceilings=self.upstream.with_ceilings
                               if self.upstream else None,
                               after_apply=lambda plan: self.admission.after_plan(plan),
                               log_level=logging.getLevelName(
                                   logging.getLogger().getEffectiveLevel()))
        # a station that joins holding nothing of ours gets a boot share before the plan
        self.admission = Admission(
            config.site, config.policy.allocation.min_current_a, self.dispatcher,
            lambda: self.planner.plan, self.operator.holds, self.station_events.running,
            self._aimed_event_applies, clock)
        self.loop_lag = Histogram(LAG_BUCKETS_S)  # filled while the bridge runs
        # the store's growing tables kept within storage.retention, on the reports' timer
        self.retention = Pruner(self.store, config.retention, clock)
        self.reports = Reports(config, self.store, clock, self.station_events, self.dr,
                               self.planner, self.dispatcher, prune=self.retention.tick)
        self.view = RuntimeView(config, self.store, clock, started_at, self.dispatcher,
                                self.station_events, self.dr, self.planner, self.operator,
                                self.ven, self.loop_lag, self.voltage_controls, self.upstream)
        self.ocpp = OcppServer(
            model.ocpp.host, model.ocpp.port, self.station_events,
            accepts=config.accepts_station,
            on_open=self.station_events.connected,
            on_close=self._station_left,
            call_timeout_s=model.ocpp.call_timeout_s,
            security=EdgeSecurity.from_config(config),
            make_link=self.upstream.make_link if self.upstream is not None else None,
            subprotocols=self.upstream.preferred(SUBPROTOCOLS) if self.upstream else None,
            workers=model.ocpp.workers,
            log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        )
        self.web: WebServer | None = None
        if model.web.enabled:
            from bridge.web.server import WebServer

            self.web = WebServer(self.view, self.operator)

    def _openadr_20b(self, listener: VenListener, store: Store) -> Ven:
        model = self.config.model
        return Ven(
            VenSettings(
                vtn_url=model.ven.vtn_url,
                ven_name=model.ven.ven_name,
                resource_id=self.config.resource_id,
                telemetry_interval=timedelta(seconds=model.telemetry.interval_s),
                retry_max=timedelta(seconds=model.ven.poll_retry_max_s),
                resource_ids=frozenset(model.ven.resources),
                group_ids=frozenset(model.ven.groups),
                party_ids=frozenset([model.ven.party_id] if model.ven.party_id else []),
                tls=self.config.tls,
                voltage_phases=("L1", "L2", "L3") if model.telemetry.voltage else (),
            ),
            listener,
            registration=store.registration(model.ven.vtn_url),
            state=store,
            known_events=[(e.event, e.opt) for e in store.events()],  # type: ignore[misc]
        )

    def _openadr_3(self, listener: VenListener, store: Store) -> Ven3:
        vtn_url = self.config.model.ven.vtn_url
        return Ven3(
            self.config.ven3_settings(), listener,
            registration=store.registration(vtn_url),
            state=store,
            known_events=[(e.event, e.opt) for e in store.events()],  # type: ignore[misc]
            outbox=SqliteOutbox(store.db),  # reports persist before they are first sent
        )

    def _local_controller(self, clock: Clock) -> LocalController:
        """The operator's CSMS behind drbridge: the station events read what is forwarded,
        the operator's profiles limit drbridge's (the dispatcher asks), its limit of a
        station is that station's ceiling in the plan, and a change of them replans."""
        def caps_of(station_id: str) -> Capabilities | None:
            record = self.dispatcher.stations.get(station_id)
            return record.caps if record is not None and record.caps.known else None

        def paused(station_id: str) -> bool:
            record = self.dispatcher.stations.get(station_id)
            step = value_at(record.desired, clock()) if record and record.desired else None
            return step is not None and step.limit_w <= 0

        def limits_changed(station_id: str) -> None:
            self.dispatcher.limits_changed(station_id)
            self.replans.request()

        return LocalController(self.config, self.store.db, clock, caps_of, paused,
                               limits_changed, self.config.model.ocpp.call_timeout_s)

    # connections between the parts -------------------------------------------------------
    async def _replan_now(self) -> None:
        """A DR event or an operator's limit changed: its limits go out at once."""
        await self.planner.replan(urgent=True)

    def _voltage_changed(self, station_id: str) -> None:
        self.planner.voltage_changed(station_id)

    def _voltage_event(self, station_id: str) -> None:
        self.planner.voltage_changed(station_id, at_once=True)

    def _capabilities_known(self, station_id: str, link: ChargerLink,
                            caps: Capabilities) -> None:
        self.voltage_controls.capabilities_known(station_id, link, caps)

    def _aimed_event_applies(self, now: datetime) -> bool:
        """Whether an event aimed at some of the stations only is planned now."""
        return any(self.dr.event_stations(e) is not None for e in self.dr.planned_events(now))

    def _station_left(self, station_id: str, link: ChargerLink) -> None:
        self.voltage_controls.disconnected(station_id, link)
        self.station_events.disconnected(station_id, link,
                                         linked_again=station_id in self.ocpp.links)

    # lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until :meth:`stop`; then persist and close."""
        build_event_validators()
        await self.ocpp.start()
        if self.web is not None:
            await self.web.start()
        await self.planner.replan()
        tasks = [
            asyncio.create_task(self.ven.run(), name="ven"),
            asyncio.create_task(self.replans.run(self.planner.replan), name="replan"),
            asyncio.create_task(self.planner.watch_vtn_silence(), name="failsafe"),
            asyncio.create_task(self.reports.run(), name="telemetry"),
            asyncio.create_task(self.dr.run_operator_opts(), name="operator"),
            asyncio.create_task(sample_loop_lag(self.loop_lag), name="loop-lag"),
            asyncio.create_task(give_back_periodically(), name="give-back-memory"),
        ]
        try:
            await self._stop.wait()
        finally:
            self.planner.collector.release()  # whatever fails below, collections run
            await self.ven.stop()
            await cancel_and_wait(tasks)
            if self.web is not None:
                await self.web.close()
            await self.ocpp.close()
            await self.voltage_controls.close()
            self.admission.close()
            await self.dispatcher.close()
            await self.planner.close()
            self.reports.flush()
            self.store.close()

    def stop(self) -> None:
        self._stop.set()


class _VenListener:
    """The VEN's one listener: DR events and registration go to the DR part, report values
    come from the reports part. Looked up when called: the VEN is made before them (they
    use it), and calls its listener only once it runs."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    async def on_event(self, event: DrEvent) -> OptType:
        return await self._bridge.dr.on_event(event)

    def on_registration(self, registration: Registration) -> None:
        self._bridge.dr.on_registration(registration)

    def on_registration_cancelled(self) -> None:
        self._bridge.dr.on_registration_cancelled()

    def measured_load_w(self) -> float:
        return self._bridge.reports.measured_load_w()

    def measured_energy_wh(self) -> float:
        return self._bridge.reports.measured_energy_wh()

    def group_load_w(self, group_id: str) -> float:
        return self._bridge.reports.group_load_w(group_id)

    def site_status(self) -> SiteStatus:
        return self._bridge.reports.site_status()

    def site_voltages(self) -> Mapping[str, tuple[float, float]]:
        return self._bridge.reports.site_voltages()

    def load_history(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        return self._bridge.reports.load_history(start, end)
