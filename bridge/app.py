"""The running bridge: wires the VEN, the policy engine, the OCPP side and the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bridge.aio import cancel_and_wait
from bridge.compliance import ComplianceRule
from bridge.config import Config
from bridge.dispatch import Dispatcher
from bridge.grid import GridMonitor
from bridge.holds import HoldMode, plan_with_holds
from bridge.near_misses import NearMisses
from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.leniency import Repair
from bridge.ocpp.link import ChargerLink
from bridge.ocpp.security import EdgeSecurity
from bridge.ocpp.server import OcppServer
from bridge.store import MeterSample, OperatorOpt, Store, StoredEvent
from bridge.telemetry import GRID_MEASURANDS, ConnectorMeter, read_meter_value, site_load_w
from bridge.upstream.controller import LocalController
from policies.fleet import Fleet, Plan, Session, Step, value_at
from policies.plan import Conditions, decide_opt
from ven.client import OptReason, Registration, Ven, VenSettings, Window
from ven.events import DrEvent, OptType
from ven.reports import SiteStatus

if TYPE_CHECKING:
    from bridge.web.server import WebServer

log = logging.getLogger(__name__)

REPLAN_PERIOD_S = 30.0  # also replans on every change; this only catches event boundaries
FLUSH_PERIOD_S = 1.0
# Changes within this window share one plan: each plan may re-send a profile to every
# station. (A DR event is planned at once, without waiting.)
REPLAN_COALESCE_S = 1.0
# A boot storm (stations joining by the hundred) would make one plan a second, each
# changing every station's share. From STORM_CHANGES_PER_S changes a second on, a plan
# waits until changes pause for REPLAN_QUIET_S, but not longer than REPLAN_SETTLE_MAX_S:
# one plan for the whole storm. Stations known before keep what they hold meanwhile.
STORM_CHANGES_PER_S = 50
REPLAN_QUIET_S = 0.5
REPLAN_SETTLE_MAX_S = 5.0
# Operator opts written by another process (the CLI) are picked up this often; opts the VTN
# has not acknowledged yet are sent again this often.
OPERATOR_POLL_S = 1.0
OPT_RETRY_S = 5.0
OPERATOR_OPT_OUT = "operator opted out"
OPT_REASONS: frozenset[str] = frozenset(OptReason.__args__)  # type: ignore[attr-defined]


class UnknownEvent(KeyError):
    """No event with this id has been received from the VTN."""


class EventOver(ValueError):
    """The event has ended or was cancelled; there is nothing left to opt out of."""


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
        # OCPP 2.0.1 stations name their transactions: the open ones by (station, its id), and
        # back, so that events naming no EVSE find theirs after a reconnection or a restart
        self._station_tx: dict[tuple[str, str], int] = {}
        self._station_tx_of: dict[int, tuple[str, str]] = {}
        for row in self.store.open_transactions():
            if row.get("station_tx"):
                self._name_transaction(row["id"], row["station_id"], row["station_tx"])
        self.meters: dict[tuple[str, int], ConnectorMeter] = {}
        # each station's connectors' latest power, for its total draw
        self._connector_power: dict[str, dict[int, float]] = {}
        self.plan: Plan | None = None
        # per event: the measured site load when the event arrived (LOAD_DISPATCH deltas);
        # with the allocation state, kept across restarts
        self._resumed_state, self._baselines = self.store.plan_state()
        self._started = clock()
        self._samples: list[MeterSample] = []
        # the stations' voltages (volt-watt rule, reports, dashboard)
        self.grid = GridMonitor(config.site.voltage_v, config.model.telemetry.stale_after_s)
        self._replan = asyncio.Event()
        self._changes: deque[float] = deque()  # when replans were asked, the last second
        self._opt_send_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        model = config.model
        # local-controller mode (ocpp.upstream): the site's own CSMS behind drbridge
        self.upstream = self._local_controller() if model.ocpp.upstream is not None else None
        self.dispatcher = Dispatcher(
            self.store,
            min_current_a=config.policy.allocation.min_current_a,
            retry_s=model.ocpp.retry_s,
            on_change=self.request_replan,
            meter_interval_s=model.ocpp.meter_interval_s,
            clock=clock,
            compliance=ComplianceRule(model.ocpp.compliance_tolerance_w,
                                      timedelta(seconds=model.ocpp.compliance_grace_s)),
            # the volt-watt rule and the voltage reports need each station's voltage
            measurands=GRID_MEASURANDS
            if config.policy.voltage is not None or model.telemetry.voltage else (),
            peak_after=timedelta(seconds=model.ocpp.learn_peak_after_s),
            operator=self.upstream,
        )
        self.ocpp = OcppServer(
            model.ocpp.host, model.ocpp.port, self,
            accepts=config.accepts_station,
            on_open=self._station_connected,
            on_close=self._station_disconnected,
            call_timeout_s=model.ocpp.call_timeout_s,
            security=EdgeSecurity.from_config(config),
            make_link=self.upstream.make_link if self.upstream is not None else None,
        )
        self.ven = Ven(
            VenSettings(
                vtn_url=model.ven.vtn_url,
                ven_name=model.ven.ven_name,
                resource_id=config.resource_id,
                telemetry_interval=timedelta(seconds=model.telemetry.interval_s),
                retry_max=timedelta(seconds=model.ven.poll_retry_max_s),
                resource_ids=frozenset(model.ven.resources),
                group_ids=frozenset(model.ven.groups),
                party_ids=frozenset([model.ven.party_id] if model.ven.party_id else []),
                tls=config.tls,
                voltage_phases=("L1", "L2", "L3") if model.telemetry.voltage else (),
            ),
            self,
            registration=self.store.registration(model.ven.vtn_url),
            state=self.store,
            known_events=[(e.event, e.opt) for e in self.events.values()],  # type: ignore[misc]
        )
        # what the operator's dashboard and metrics show beyond the plan
        self.started_at = clock()
        self.connector_status: dict[tuple[str, int], tuple[str, datetime]] = {}
        self.last_seen: dict[str, datetime] = {}
        self.messages_in: Counter[str] = Counter()  # OCPP requests from stations, by action
        self.calls_out: Counter[str] = Counter()  # OCPP calls to stations, by action
        self.near_misses = NearMisses()  # requests read leniently, samples left out
        self.holds = self.store.holds()  # station id -> (mode, reason, since)
        # Sessions an earlier run left open for ids that never booted and hold no profile
        # of ours are closed, as they would have been when the id disconnected.
        for station_id in {s.station_id for s in self.sessions.values()}:
            if station_id not in self.dispatcher.stations and not self.store.booted(station_id):
                self._forget(station_id)
        self.web: WebServer | None = None
        if model.web.enabled:
            from bridge.web.server import WebServer

            self.web = WebServer(self)

    # local controller ------------------------------------------------------------------------
    def _local_controller(self) -> LocalController:
        """The operator's CSMS behind drbridge: its profiles limit drbridge's, its limit of a
        station is that station's ceiling in the plan, a change of them replans."""
        def caps_of(station_id: str) -> Capabilities | None:
            state = self.dispatcher.stations.get(station_id)
            return state.caps if state is not None and state.caps.known else None

        def paused(station_id: str) -> bool:
            state = self.dispatcher.stations.get(station_id)
            step = value_at(state.desired, self._clock()) if state and state.desired else None
            return step is not None and step.limit_w <= 0

        def limits_changed(station_id: str) -> None:
            self.dispatcher.limits_changed(station_id)
            self.request_replan()

        return LocalController(self.config, self.store.db, self, self._clock, caps_of, paused,
                               limits_changed, self.config.model.ocpp.call_timeout_s)

    def running_sessions(self) -> dict[str, dict[int, int]]:
        """station id -> connector id -> drbridge's id of its open transaction."""
        running: dict[str, dict[int, int]] = {}
        for tx_id, session in self.sessions.items():
            running.setdefault(session.station_id, {})[session.connector_id] = tx_id
        return running

    # lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until :meth:`stop`; then persist and close."""
        await self.ocpp.start()
        if self.web is not None:
            await self.web.start()
        self._replan_now()
        tasks = [
            asyncio.create_task(self.ven.run(), name="ven"),
            asyncio.create_task(self._replan_loop(), name="replan"),
            asyncio.create_task(self._flush_loop(), name="telemetry"),
            asyncio.create_task(self._operator_loop(), name="operator"),
        ]
        try:
            await self._stop.wait()
        finally:
            await self.ven.stop()
            await cancel_and_wait(tasks)
            if self.web is not None:
                await self.web.close()
            await self.ocpp.close()
            await self.dispatcher.close()
            self._flush()
            self.store.close()

    def stop(self) -> None:
        self._stop.set()

    def now(self) -> datetime:
        """The bridge's clock (UTC)."""
        return self._clock()

    def request_replan(self) -> None:
        self._changes.append(time.monotonic())
        self._replan.set()

    def _changes_last_second(self) -> int:
        now = time.monotonic()
        while self._changes and now - self._changes[0] > 1.0:
            self._changes.popleft()
        return len(self._changes)

    # VEN side -------------------------------------------------------------------------------
    async def on_event(self, event: DrEvent) -> OptType:
        # What a LOAD_DISPATCH delta counts from: the load of the stations the event is
        # for, measured when it first arrives.
        targeted = self.event_stations(event)
        baseline = self._baselines.setdefault(
            event.event_id,
            self.measured_load_w() if targeted is None else self.stations_load_w(targeted))
        opt, reason = self._decide_opt(event, baseline)
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

    def _decide_opt(self, event: DrEvent, baseline_w: float) -> tuple[OptType, str]:
        """The policy decides, unless the site operator opted out of the event or declared
        the site unavailable during it."""
        return self._operator_decision(event, *self._standing_opts()) or \
            decide_opt(event, self.config.policy, self.config.site, baseline_w)

    def _standing_opts(self) -> tuple[dict[str, OperatorOpt], list[OperatorOpt]]:
        """The operator's standing opt-outs by event id, and unavailability windows."""
        standing = self.store.operator_opts("cancelled_at IS NULL")
        return ({o.event_id: o for o in standing if o.event_id is not None},
                [o for o in standing if o.event_id is None])

    @staticmethod
    def _operator_decision(event: DrEvent, opt_outs: dict[str, OperatorOpt],
                           windows: list[OperatorOpt]) -> tuple[OptType, str] | None:
        operator = opt_outs.get(event.event_id)
        if operator is not None:
            return "optOut", _operator_reason(operator)
        end = event.end
        for window in windows:
            assert window.window_start is not None and window.window_end is not None
            if window.window_start < (end or datetime.max.replace(tzinfo=UTC)) \
                    and event.start < window.window_end:
                return "optOut", (f"{OPERATOR_OPT_OUT}: unavailable from "
                                  f"{window.window_start:%Y-%m-%d %H:%M} to "
                                  f"{window.window_end:%Y-%m-%d %H:%M} UTC ({window.reason})")
        return None

    # operator opts ---------------------------------------------------------------------------
    async def opt_out_event(self, event_id: str, reason: str) -> None:
        """The site operator opts out of an event: stored first (it survives a restart), then
        the plan drops the event and the VTN is told (oadrCreateOpt; retried until it
        acknowledges). Raises :class:`UnknownEvent` or :class:`EventOver`."""
        known = self.events.get(event_id)
        if known is None:
            raise UnknownEvent(event_id)
        if known.event.is_over(self._clock()):
            raise EventOver(f"event {event_id} is over")
        self.store.request_opt_out(event_id, reason, self._clock())
        self._apply_operator_opts()
        await self._send_operator_opts()

    async def declare_unavailable(self, start: datetime, end: datetime, reason: str) -> str:
        """The site cannot take part in events from ``start`` to ``end``; sent to the VTN as an
        availability schedule (oadrCreateOpt). Returns the opt id, for :meth:`cancel_opt`."""
        if end <= start:
            raise ValueError("the window must end after it starts")
        opt = self.store.request_unavailability(start, end, reason, self._clock())
        self._apply_operator_opts()
        await self._send_operator_opts()
        return opt.opt_id

    async def cancel_opt(self, opt_id: str) -> None:
        """Withdraw an operator opt (oadrCancelOpt); an event opted out of goes back to the
        policy's decision. Raises KeyError for an unknown or already withdrawn opt."""
        if not self.store.request_opt_cancel(opt_id, self._clock()):
            raise KeyError(opt_id)
        self._apply_operator_opts()
        await self._send_operator_opts()

    def operator_opts(self) -> list[OperatorOpt]:
        return self.store.operator_opts()

    def _apply_operator_opts(self) -> None:
        """Bring each pending or active event's opt in line with the operator's standing
        opt-outs and unavailability windows."""
        now = self._clock()
        opt_outs, windows = self._standing_opts()
        changed = False
        for event_id, known in list(self.events.items()):
            if known.event.is_over(now):
                continue  # what was decided for a past event stays on record
            decision = self._operator_decision(known.event, opt_outs, windows)
            if decision is not None:
                opt, reason = decision
            elif known.opt_reason.startswith(OPERATOR_OPT_OUT):
                opt, reason = decide_opt(known.event, self.config.policy, self.config.site,
                                         self._baselines.get(event_id, 0.0))
            else:
                continue
            if (opt, reason) != (known.opt, known.opt_reason):
                self.store.save_event(known.event, opt, reason, now)
                self.events[event_id] = StoredEvent(known.event, opt, reason)
                self.ven.opts[event_id] = opt  # what the VEN answers if the VTN sends it again
                log.info("event %s: %s (%s)", event_id, opt, reason)
                changed = True
        for pending in self.store.operator_opts("applied_at IS NULL"):
            self.store.mark_opt(pending.opt_id, "applied_at", now)
        if changed:
            self._replan_now()

    async def _send_operator_opts(self) -> None:
        """Send the VTN every operator opt (or withdrawal) it has not acknowledged yet."""
        if self.ven.registration is None:
            return  # sent once registered
        async with self._opt_send_lock:
            for opt in self.store.operator_opts(
                    "sent_at IS NULL AND cancelled_at IS NULL AND applied_at IS NOT NULL"):
                reason = _opt_reason(opt.reason)
                if opt.event_id is not None:
                    known = self.events.get(opt.event_id)
                    if known is None:
                        continue
                    sent = await self.ven.opt_out_of_event(
                        opt.opt_id, opt.event_id, known.event.modification_number, reason,
                        market_context=known.event.market_context or None)
                else:
                    assert opt.window_start is not None and opt.window_end is not None
                    sent = await self.ven.declare_unavailable(
                        opt.opt_id, [Window(opt.window_start, opt.window_end - opt.window_start)],
                        reason)
                if sent:
                    self.store.mark_opt(opt.opt_id, "sent_at", self._clock())
                    log.info("VTN acknowledged opt %s", opt.opt_id)
            for opt in self.store.operator_opts(
                    "cancelled_at IS NOT NULL AND cancel_sent_at IS NULL"):
                # an opt the VTN never acknowledged needs no withdrawal
                if opt.sent_at is None or await self.ven.cancel_opt(opt.opt_id):
                    self.store.mark_opt(opt.opt_id, "cancel_sent_at", self._clock())

    async def _operator_loop(self) -> None:
        loop = asyncio.get_running_loop()
        attempted: set[str] = set()
        last_send = loop.time()
        while True:
            try:
                self._apply_operator_opts()
                unsent = {o.opt_id for o in self.store.operator_opts(
                    "(sent_at IS NULL AND cancelled_at IS NULL)"
                    " OR (cancelled_at IS NOT NULL AND cancel_sent_at IS NULL)")}
                # new ones at once (the CLI wrote them), failed ones again every OPT_RETRY_S
                if unsent - attempted or (unsent and loop.time() - last_send >= OPT_RETRY_S):
                    attempted |= unsent
                    last_send = loop.time()
                    await self._send_operator_opts()
            except Exception:  # a store or VTN hiccup must not end the loop; retried
                log.exception("applying operator opts failed; retrying")
            await asyncio.sleep(OPERATOR_POLL_S)

    def on_registration(self, registration: Registration) -> None:
        self.store.save_registration(self.config.model.ven.vtn_url, registration, self._clock())
        log.info("registered with the VTN as %s", registration.ven_id)

    def on_registration_cancelled(self) -> None:
        self.store.clear_registration(self.config.model.ven.vtn_url)

    def event_stations(self, event: DrEvent) -> frozenset[str] | None:
        """The stations an event applies to: None for the whole site (no or site-wide
        targets); otherwise the stations of the configured resources and groups it named."""
        if event.whole_site:
            return None
        return self.config.target_stations(event.matched_resources, event.matched_groups)

    def measured_load_w(self) -> float:
        stale = timedelta(seconds=self.config.model.telemetry.stale_after_s)
        return site_load_w((m.latest for m in self.meters.values()), self._clock(), stale)

    # report values (TELEMETRY_USAGE, TELEMETRY_STATUS, HISTORY_USAGE) -----------------------
    def measured_energy_wh(self) -> float:
        """The sum of the stations' energy registers, as last read."""
        return sum(m.last_energy[1] for m in self.meters.values() if m.last_energy)

    def group_load_w(self, group_id: str) -> float:
        return self.stations_load_w(frozenset(self.config.model.ven.groups.get(group_id, ())))

    def stations_load_w(self, stations: frozenset[str]) -> float:
        stale = timedelta(seconds=self.config.model.telemetry.stale_after_s)
        return site_load_w((m.latest for (station_id, _), m in self.meters.items()
                            if station_id in stations), self._clock(), stale)

    def site_status(self) -> SiteStatus:
        now = self._clock()
        step = value_at(self.plan.site, now) if self.plan else None
        capacity = self.config.site.capacity_w
        override = any(
            e.opt_reason.startswith(OPERATOR_OPT_OUT) and e.event.start <= now
            and not e.event.is_over(now) for e in self.events.values())
        return SiteStatus(
            online=any(s.link is not None for s in self.dispatcher.stations.values()),
            manual_override=override,
            current_w=step.limit_w if step else capacity, min_w=0.0, max_w=capacity,
        )

    def site_voltages(self) -> dict[str, tuple[float, float]]:
        """Per phase over the connected stations' fresh readings: (lowest V, mean V)."""
        site = self.grid.site(self._clock(), self.dispatcher.stations)
        return {phase: (low, mean) for phase, low, mean in site.phases}

    def load_history(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        return [(at, load) for at, load, _ in self.store.site_load(start) if at < end]

    # OCPP side ------------------------------------------------------------------------------
    def _station_connected(self, station_id: str, link: ChargerLink) -> None:
        self.dispatcher.connected(self.config.station_info(station_id), link,
                                  self.config.declared(station_id))

    def _station_disconnected(self, station_id: str, link: ChargerLink) -> None:
        self.dispatcher.disconnected(station_id, link)
        # An id that leaves without ever having booted (here or in an earlier run) and holds
        # no profile of ours is forgotten: with open admission a client may connect under
        # any id, and its "sessions" would otherwise keep capacity from the real stations.
        if station_id not in self.ocpp.links and not self.store.booted(station_id) \
                and self.dispatcher.forget(station_id):
            self._forget(station_id)

    def _forget(self, station_id: str) -> None:
        """Close the sessions of a station the dispatcher dropped, and drop what we kept of
        it: an entry per id that ever connected would grow without end."""
        now = self._clock()
        closed = []
        for tx_id, session in list(self.sessions.items()):
            if session.station_id == station_id:
                meter = self.meters.get((station_id, session.connector_id))
                energy = meter.last_energy if meter is not None else None
                self.store.stop_transaction(tx_id, round(energy[1]) if energy else None, now)
                del self.sessions[tx_id]
                self._open_tx.pop((station_id, session.connector_id), None)
                closed.append(str(tx_id))
        for key in [k for k in self.meters if k[0] == station_id]:
            del self.meters[key]
        for key in [k for k in self.connector_status if k[0] == station_id]:
            del self.connector_status[key]
        self._connector_power.pop(station_id, None)
        self.last_seen.pop(station_id, None)
        self.grid.latest.pop(station_id, None)
        self.config.forget_station(station_id)
        log.info("%s: forgotten: it left without a BootNotification and holds no profile of "
                 "ours%s", station_id, f"; closed transaction(s) {', '.join(closed)}"
                 if closed else "")

    def _heard(self, station_id: str, action: str) -> None:
        self.messages_in[action] += 1
        self.last_seen[station_id] = self._clock()

    def call_sent(self, station_id: str, action: str) -> None:
        self.calls_out[action] += 1

    def request_repaired(self, station_id: str, action: str,
                         repairs: Sequence[Repair]) -> None:
        self.near_misses.request_repaired(station_id, action, repairs)

    def station_booted(self, station_id: str, info: dict[str, str]) -> None:
        self._heard(station_id, "BootNotification")
        now = self._clock().isoformat()
        self.store.save_station(station_id, {**info, "last_boot": now, "last_seen": now})
        self.dispatcher.booted(station_id)

    def status_changed(self, station_id: str, connector_id: int, status: str) -> None:
        self._heard(station_id, "StatusNotification")
        self.connector_status[(station_id, connector_id)] = (status, self._clock())
        log.debug("%s/%d: %s", station_id, connector_id, status)

    def transaction_started(self, station_id: str, connector_id: int, id_tag: str,
                            meter_start: int, at: datetime,
                            station_tx: str | None = None) -> int:
        self._heard(station_id, "StartTransaction")
        now = self._clock()
        previous = self._open_tx.get((station_id, connector_id))
        if previous is not None and previous in self.sessions:
            # the station started anew without stopping the old one (a reboot)
            self.store.stop_transaction(previous, meter_start, now)
            del self.sessions[previous]
            self._forget_name(previous)
        tx_id = self.store.start_transaction(station_id, connector_id, id_tag, meter_start, now,
                                             station_tx)
        self.sessions[tx_id] = Session(station_id, connector_id, now)
        self._open_tx[(station_id, connector_id)] = tx_id
        if station_tx is not None:
            self._name_transaction(tx_id, station_id, station_tx)
        log.info("%s/%d: transaction %d started", station_id, connector_id, tx_id)
        self.request_replan()
        return tx_id

    def transaction_stopped(self, station_id: str, transaction_id: int, meter_stop: int,
                            at: datetime) -> None:
        self._heard(station_id, "StopTransaction")
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
        self._forget_name(transaction_id)
        if self.sessions.pop(transaction_id, None) is not None:
            log.info("%s: transaction %d stopped", station_id, transaction_id)
        self.request_replan()

    def transaction_of(self, station_id: str, station_tx: str,
                       connector_id: int | None) -> tuple[int, int] | None:
        tx_id = self._station_tx.get((station_id, station_tx))
        if tx_id is None and connector_id is not None:
            # recorded without the station's id (by an older version): the one open on the
            # EVSE the event names, unless that one has another id
            running = self._open_tx.get((station_id, connector_id))
            if running is not None and running not in self._station_tx_of:
                self.store.set_station_tx(running, station_tx)
                self._name_transaction(running, station_id, station_tx)
                tx_id = running
        session = self.sessions.get(tx_id) if tx_id is not None else None
        return (tx_id, session.connector_id) if tx_id is not None and session else None

    def station_transaction(self, station_id: str, transaction_id: int) -> str | None:
        named = self._station_tx_of.get(transaction_id)
        return named[1] if named is not None and named[0] == station_id else None

    def _name_transaction(self, tx_id: int, station_id: str, station_tx: str) -> None:
        self._station_tx[(station_id, station_tx)] = tx_id
        self._station_tx_of[tx_id] = (station_id, station_tx)

    def _forget_name(self, tx_id: int) -> None:
        named = self._station_tx_of.pop(tx_id, None)
        if named is not None:
            self._station_tx.pop(named, None)

    def meter_values(self, station_id: str, connector_id: int,
                     meter_values: list[dict[str, Any]]) -> None:
        self._heard(station_id, "MeterValues")
        info = self.config.station_info(station_id)
        meter = self.meters.setdefault((station_id, connector_id), ConnectorMeter())
        for item in meter_values:
            reading = read_meter_value(item, info.voltage_v)
            if reading is None:
                continue
            if reading.ignored:
                self.near_misses.samples_ignored(station_id, reading.ignored)
            power = meter.update(reading)
            self._samples.append(
                MeterSample(station_id, connector_id, reading.at, power, reading.energy_wh,
                            reading.voltages_v, reading.currents_a, reading.frequency_hz)
            )
            if self.grid.observe(station_id, reading, self._clock()) and \
                    self.grid.worth_a_plan(self.config.policy.voltage, station_id, self.plan):
                self.request_replan()
            if power is not None:
                connectors = self._connector_power.setdefault(station_id, {})
                connectors[connector_id] = power
                # connector 0 is the station's own meter where it has one
                total = connectors[0] if 0 in connectors else sum(connectors.values())
                self.dispatcher.observe_draw(station_id, total, reading.at,
                                             reading.current_lines)

    # planning -------------------------------------------------------------------------------
    def active_events(self, now: datetime) -> list[DrEvent]:
        return [e.event for e in self.events.values()
                if e.opt == "optIn" and not e.event.is_over(now)]

    def planned_events(self, now: datetime) -> list[DrEvent]:
        """Events the plan follows: active ones, and those still in their recovery period."""
        def recovering(event: DrEvent) -> bool:
            end = event.end
            return event.status != "cancelled" and end is not None and \
                event.recovery is not None and end + event.recovery > now
        return [e.event for e in self.events.values()
                if e.opt == "optIn" and (not e.event.is_over(now) or recovering(e.event))]

    def _replan_now(self) -> None:
        now = self._clock()
        stations = {sid: self.config.station_info(sid) for sid in self.dispatcher.stations}
        if self.upstream is not None:  # none above what the operator lets it draw now
            stations = self.upstream.with_ceilings(stations, self.running_sessions(), now)
        with_session = {s.station_id for s in self.sessions.values()}
        measured: dict[str, float] = {}
        reported: dict[str, datetime] = {}
        for (station_id, _), meter in self.meters.items():
            if meter.latest:
                at, watts = meter.latest
                measured[station_id] = measured.get(station_id, 0.0) + watts
                reported[station_id] = max(at, reported.get(station_id, at))
        fleet = Fleet(
            stations=stations,
            sessions=tuple(s for s in self.sessions.values() if s.station_id in stations),
            reservations=self.dispatcher.reservations(with_session),
            measured_w=measured,
            last_report=reported,
            # as fresh as the newest reading while EVs charge (failsafe.fleet_stale_after_s)
            taken_at=max(reported.values()) if reported and self.sessions else None,
        )
        holds = {sid: hold[0] for sid, hold in self.holds.items()}
        planned = self.planned_events(now)
        scopes = {event.event_id: targeted for event in planned
                  if (targeted := self.event_stations(event)) is not None}
        conditions = Conditions(baselines_w=self._baselines,
                                vtn_last_heard=self.ven.last_contact or self._started,
                                event_stations=scopes,
                                voltages=self.grid.readings(stations))
        plan = plan_with_holds(planned, self.config.policy, self.config.site,
                               fleet, now, holds,  # type: ignore[arg-type]
                               self.plan.state if self.plan else self._resumed_state,
                               conditions)
        previous = self.plan
        self.plan = plan
        self.dispatcher.set_desired(plan.stations, self.running_sessions())
        if previous is None or _changed(previous, plan, now):
            self.store.save_plan(plan.made_at, plan.site, plan.stations)
            if plan.state is not None:
                self._baselines = {k: v for k, v in self._baselines.items() if k in self.events}
                self.store.save_plan_state(plan.state, self._baselines)

    async def _replan_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._replan.wait(), REPLAN_PERIOD_S)
            except TimeoutError:
                pass
            self._replan.clear()
            if self._changes_last_second() >= STORM_CHANGES_PER_S:
                await self._settle(loop.time() + REPLAN_SETTLE_MAX_S)
            try:
                self._replan_now()
            except Exception:  # a planning bug must not stop the bridge; the stations keep limits
                log.exception("planning failed; stations keep their current profiles")
            await asyncio.sleep(REPLAN_COALESCE_S)

    async def _settle(self, deadline: float) -> None:
        """Wait until changes pause (or the deadline passes), so a burst makes one plan."""
        loop = asyncio.get_running_loop()
        while (left := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(self._replan.wait(), min(REPLAN_QUIET_S, left))
            except TimeoutError:
                return
            self._replan.clear()

    # operator actions ---------------------------------------------------------------------
    def set_hold(self, station_id: str, mode: HoldMode, reason: str) -> None:
        """Pause a station (0 W) or exempt it from DR, until :meth:`clear_hold`."""
        now = self._clock()
        self.store.set_hold(station_id, mode, reason, now)
        self.holds[station_id] = (mode, reason, now)
        log.info("%s: %s by the operator (%s)", station_id, mode, reason)
        self._replan_now()

    def clear_hold(self, station_id: str) -> None:
        self.store.clear_hold(station_id, self._clock())
        if self.holds.pop(station_id, None) is not None:
            log.info("%s: operator hold lifted", station_id)
        self._replan_now()

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


def _operator_reason(opt: OperatorOpt) -> str:
    return f"{OPERATOR_OPT_OUT}: {opt.reason}" if opt.reason else OPERATOR_OPT_OUT


def _opt_reason(text: str) -> OptReason:
    """The operator's reason as an ei:optReason when it is one; otherwise notParticipating."""
    return text if text in OPT_REASONS else "notParticipating"  # type: ignore[return-value]


def _changed(old: Plan, new: Plan, now: datetime) -> bool:
    def future(steps: tuple[Step, ...]) -> list[tuple[float, float]]:
        current = value_at(steps, now)
        return [(max(s.start, now).timestamp(), round(s.limit_w)) for s in steps
                if s.start >= now or s is current]
    if future(old.site) != future(new.site) or old.stations.keys() != new.stations.keys():
        return True
    return any(future(old.stations[k]) != future(new.stations[k]) for k in new.stations)
