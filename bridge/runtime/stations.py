"""Station events in: what the stations say, kept as the observed fleet.

The OCPP edge's :class:`~bridge.ocpp.link.StationListener`: boots, connector statuses,
transactions and meter values become sessions, per-connector meters, voltages, statuses,
when each station was last heard and counts of what went in and out. Sessions and
transactions are persisted before they count; meter samples wait in :attr:`samples` for
the telemetry flush. A change that may change the plan asks for one
(``request_replan``); what to do with a new voltage is the planner's to say
(``on_voltage``; ``on_voltage_event`` for one a station reported the moment it crossed a
threshold, a variable monitor's event).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from bridge.clock import Clock
from bridge.config import Config
from bridge.dispatch import Dispatcher
from bridge.grid import GridMonitor
from bridge.near_misses import NearMisses
from bridge.ocpp.external_limits import ExternalLimit
from bridge.ocpp.leniency import Repair
from bridge.ocpp.link import ChargerLink
from bridge.ocpp.voltage_observation import VoltageObservation
from bridge.runtime.plugged import HOLD as PLUGGED_HOLD
from bridge.runtime.plugged import LONGEST, PluggedConnectors
from bridge.store import MeterSample, Store
from bridge.telemetry import ConnectorMeter, read_meter_value, site_load_w
from policies.fleet import Session

log = logging.getLogger(__name__)



class StationEvents:
    def __init__(self, config: Config, store: Store, dispatcher: Dispatcher, clock: Clock,
                 request_replan: Callable[[], None],
                 on_voltage: Callable[[str], None],
                 on_voltage_event: Callable[[str], None] | None = None,
                 on_session_started: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._store = store
        self._dispatcher = dispatcher
        self._clock = clock
        self._request_replan = request_replan
        self._on_voltage = on_voltage
        self._on_voltage_event = on_voltage_event or on_voltage
        self._on_session_started = on_session_started
        self._stale = timedelta(seconds=config.model.telemetry.stale_after_s)
        self.sessions: dict[int, Session] = {
            row["id"]: Session(row["station_id"], row["connector_id"],
                               datetime.fromisoformat(row["started_at"]))
            for row in store.open_transactions()
        }
        self._open_tx = {(s.station_id, s.connector_id): tx for tx, s in self.sessions.items()}
        # OCPP 2.0.1 stations name their transactions: the open ones by (station, its id), and
        # back, so that events naming no EVSE find theirs after a reconnection or a restart
        self._station_tx: dict[tuple[str, str], int] = {}
        self._station_tx_of: dict[int, tuple[str, str]] = {}
        for row in store.open_transactions():
            if row.get("station_tx"):
                self._name_transaction(row["id"], row["station_id"], row["station_tx"])
        self.meters: dict[tuple[str, int], ConnectorMeter] = {}
        # each station's connectors' latest power, for its total draw
        self._connector_power: dict[str, dict[int, float]] = {}
        self.samples: list[MeterSample] = []  # read, not yet stored
        # the stations' voltages (volt-watt rule, reports, dashboard)
        self.grid = GridMonitor(config.site.voltage_v, config.model.telemetry.stale_after_s)
        # what the operator's dashboard and metrics show beyond the plan
        self.connector_status: dict[tuple[str, int], tuple[str, datetime]] = {}
        # EVs plugged in before their sessions start (see bridge.runtime.plugged), and the
        # timers that ask for a plan when one comes to count and when it no longer does
        self.plugged = PluggedConnectors()
        self._plugged_timers: dict[tuple[str, int],
                                   tuple[asyncio.TimerHandle, asyncio.TimerHandle, datetime]] = {}
        self.last_seen: dict[str, datetime] = {}
        self.messages_in: Counter[str] = Counter()  # OCPP requests from stations, by action
        self.calls_out: Counter[str] = Counter()  # OCPP calls to stations, by action
        self.near_misses = NearMisses()  # requests read leniently, samples left out
        # What stations tell of themselves beyond their meter values: the latest voltage
        # notice (a monitor's event, their own DER control acting), and the limits other
        # parties put on them, by (station, source, EVSE).
        self.voltage_notices: dict[str, VoltageObservation] = {}
        self.der_notices: dict[str, VoltageObservation] = {}  # the latest of its DER control
        self.voltage_events: Counter[str] = Counter()  # such notices, by source
        self.external_limits: dict[tuple[str, str, int], ExternalLimit] = {}
        # Sessions an earlier run left open for ids that never booted and hold no profile
        # of ours are closed, as they would have been when the id disconnected.
        for station_id in {s.station_id for s in self.sessions.values()}:
            if station_id not in dispatcher.stations and not store.booted(station_id):
                self._forget(station_id)

    def running(self) -> dict[str, dict[int, int]]:
        """The sessions as they are now: station -> connector -> transaction (where the
        dispatcher sends each station's profiles)."""
        running: dict[str, dict[int, int]] = {}
        for tx_id, session in self.sessions.items():
            running.setdefault(session.station_id, {})[session.connector_id] = tx_id
        return running

    def plugged_in(self) -> list[Session]:
        """The EVs plugged in that the plan counts as sessions before their transactions
        start (see :mod:`bridge.runtime.plugged`), from when they began to wait."""
        return [Session(station_id, connector_id, since)
                for station_id, connector_id, since in self.plugged.counted(self._clock())
                if (station_id, connector_id) not in self._open_tx]

    def _plugged_changed(self, key: tuple[str, int], began: bool) -> None:
        """Ask for a plan when an EV that began to wait comes to count (after HOLD), when
        it no longer does (after LONGEST), and when it leaves or starts its session having
        counted; one that stopped waiting before it counted changes no plan."""
        since = self.plugged.waiting_since(*key)
        old = self._plugged_timers.get(key)
        if old is not None and (began or since is None):
            del self._plugged_timers[key]
            old[0].cancel()
            old[1].cancel()
            if since is None and old[2] + PLUGGED_HOLD <= self._clock() < old[2] + LONGEST:
                self._request_replan()  # it counted: its share goes back to the others
        if began and since is not None:
            loop = asyncio.get_running_loop()
            self._plugged_timers[key] = (
                loop.call_later(PLUGGED_HOLD.total_seconds(), self._request_replan),
                loop.call_later(LONGEST.total_seconds(), self._plugged_over, key), since)

    def _plugged_over(self, key: tuple[str, int]) -> None:
        self._plugged_timers.pop(key, None)
        self._request_replan()

    def _plugged_forget(self, station_id: str) -> None:
        for connector_id in self.plugged.forget(station_id):
            self._plugged_changed((station_id, connector_id), began=False)

    # what the fleet draws ---------------------------------------------------------------------
    def load_w(self) -> float:
        """The site's measured load: the connectors' fresh readings."""
        return site_load_w((m.latest for m in self.meters.values()), self._clock(), self._stale)

    def stations_load_w(self, stations: frozenset[str]) -> float:
        return site_load_w((m.latest for (station_id, _), m in self.meters.items()
                            if station_id in stations), self._clock(), self._stale)

    def take_samples(self) -> list[MeterSample]:
        """The samples read since the last call, to be stored."""
        samples, self.samples = self.samples, []
        return samples

    # connections ------------------------------------------------------------------------------
    def connected(self, station_id: str, link: ChargerLink) -> None:
        self._dispatcher.connected(self.config.station_info(station_id), link,
                                   self.config.declared(station_id))

    def disconnected(self, station_id: str, link: ChargerLink, linked_again: bool) -> None:
        """``linked_again``: the station has another connection open already."""
        self._dispatcher.disconnected(station_id, link)
        # An id that leaves without ever having booted (here or in an earlier run) and holds
        # no profile of ours is forgotten: with open admission a client may connect under
        # any id, and its "sessions" would otherwise keep capacity from the real stations.
        if not linked_again and not self._store.booted(station_id) \
                and self._dispatcher.forget(station_id):
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
                self._store.stop_transaction(tx_id, round(energy[1]) if energy else None, now)
                del self.sessions[tx_id]
                self._open_tx.pop((station_id, session.connector_id), None)
                closed.append(str(tx_id))
        for key in [k for k in self.meters if k[0] == station_id]:
            del self.meters[key]
        for key in [k for k in self.connector_status if k[0] == station_id]:
            del self.connector_status[key]
        self._plugged_forget(station_id)
        self._connector_power.pop(station_id, None)
        self.last_seen.pop(station_id, None)
        self.grid.latest.pop(station_id, None)
        self.voltage_notices.pop(station_id, None)
        self.der_notices.pop(station_id, None)
        for key in [k for k in self.external_limits if k[0] == station_id]:
            del self.external_limits[key]
        self.config.forget_station(station_id)
        log.info("%s: forgotten: it left without a BootNotification and holds no profile of "
                 "ours%s", station_id, f"; closed transaction(s) {', '.join(closed)}"
                 if closed else "")

    # the StationListener ----------------------------------------------------------------------
    def _heard(self, station_id: str, action: str, now: datetime | None = None) -> None:
        self.messages_in[action] += 1
        self.last_seen[station_id] = self._clock() if now is None else now

    def call_sent(self, station_id: str, action: str) -> None:
        self.calls_out[action] += 1

    def request_repaired(self, station_id: str, action: str,
                         repairs: Sequence[Repair]) -> None:
        self.near_misses.request_repaired(station_id, action, repairs)

    def station_booted(self, station_id: str, info: dict[str, str]) -> None:
        self._heard(station_id, "BootNotification")
        now = self._clock().isoformat()
        self._store.save_station(station_id, {**info, "last_boot": now, "last_seen": now})
        self._dispatcher.booted(station_id)
        self._plugged_forget(station_id)  # its connectors report afresh after a boot

    def status_changed(self, station_id: str, connector_id: int, status: str) -> None:
        self._heard(station_id, "StatusNotification")
        key = (station_id, connector_id)
        now = self._clock()
        self.connector_status[key] = (status, now)
        log.debug("%s/%d: %s", station_id, connector_id, status)
        self._dispatcher.connector_seen(station_id, connector_id)
        began = self.plugged.status(station_id, connector_id, status, now, key in self._open_tx)
        self._plugged_changed(key, began)

    def transaction_started(self, station_id: str, connector_id: int, id_tag: str,
                            meter_start: int, at: datetime,
                            station_tx: str | None = None) -> int:
        self._heard(station_id, "StartTransaction")
        now = self._clock()
        previous = self._open_tx.get((station_id, connector_id))
        if previous is not None and previous in self.sessions:
            # the station started anew without stopping the old one (a reboot)
            self._store.stop_transaction(previous, meter_start, now)
            del self.sessions[previous]
            self._forget_name(previous)
        tx_id = self._store.start_transaction(station_id, connector_id, id_tag, meter_start,
                                              now, station_tx)
        self.sessions[tx_id] = Session(station_id, connector_id, now)
        self._open_tx[(station_id, connector_id)] = tx_id
        self.plugged.transaction(station_id, connector_id, True, now)
        self._plugged_changed((station_id, connector_id), began=False)
        if station_tx is not None:
            self._name_transaction(tx_id, station_id, station_tx)
        log.info("%s/%d: transaction %d started", station_id, connector_id, tx_id)
        self._request_replan()
        if self._on_session_started is not None:
            self._on_session_started(station_id)
        return tx_id

    def transaction_stopped(self, station_id: str, transaction_id: int, meter_stop: int,
                            at: datetime) -> None:
        self._heard(station_id, "StopTransaction")
        now = self._clock()
        self._store.stop_transaction(transaction_id, meter_stop, now)
        session = self.sessions.get(transaction_id)
        if session is not None:
            # the EV is done: its last reading must not count on until it goes stale
            meter = self.meters.get((session.station_id, session.connector_id))
            if meter is not None:
                meter.latest = (now, 0.0)
            self._connector_power.get(session.station_id, {}).pop(session.connector_id, None)
            self._open_tx.pop((session.station_id, session.connector_id), None)
            self.plugged.transaction(session.station_id, session.connector_id, False, now)
        self._forget_name(transaction_id)
        if self.sessions.pop(transaction_id, None) is not None:
            log.info("%s: transaction %d stopped", station_id, transaction_id)
        self._request_replan()

    def transaction_of(self, station_id: str, station_tx: str,
                       connector_id: int | None) -> tuple[int, int] | None:
        tx_id = self._station_tx.get((station_id, station_tx))
        if tx_id is None and connector_id is not None:
            # recorded without the station's id (by an older version): the one open on the
            # EVSE the event names, unless that one has another id
            running = self._open_tx.get((station_id, connector_id))
            if running is not None and running not in self._station_tx_of:
                self._store.set_station_tx(running, station_tx)
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
        now = self._clock()  # once for the message: it is read thousands of times a second
        self._heard(station_id, "MeterValues", now)
        info = self.config.station_info(station_id)
        meter = self.meters.get((station_id, connector_id))
        if meter is None:  # (not setdefault: that would make a meter for every message)
            meter = self.meters[station_id, connector_id] = ConnectorMeter()
        for item in meter_values:
            reading = read_meter_value(item, info.voltage_v)
            if reading is None:
                continue
            if reading.ignored:
                self.near_misses.samples_ignored(station_id, reading.ignored)
            power = meter.update(reading)
            self.samples.append(
                MeterSample(station_id, connector_id, reading.at, power, reading.energy_wh,
                            reading.voltages_v, reading.currents_a, reading.frequency_hz)
            )
            if self.grid.observe(station_id, reading, now):
                self._on_voltage(station_id)
            if power is not None:
                connectors = self._connector_power.get(station_id)
                if connectors is None:
                    connectors = self._connector_power[station_id] = {}
                connectors[connector_id] = power
                # connector 0 is the station's own meter where it has one
                total = connectors[0] if 0 in connectors else sum(connectors.values())
                self._dispatcher.observe_draw(station_id, total, reading.at,
                                              reading.current_lines, now)

    # voltage boundaries in the station, limits of other parties -----------------------------
    def voltage_observed(self, station_id: str, observation: VoltageObservation) -> None:
        """A monitor's voltage counts as a fresh reading at once (the volt-watt rule need
        not wait for the next meter sample); a DER notice is kept for the dashboard."""
        self.voltage_notices[station_id] = observation
        self.voltage_events[observation.source] += 1
        if observation.source == "der-control":
            self.der_notices[station_id] = observation
        lines = tuple(range(1, self.config.station_info(station_id).phases + 1))
        if self.grid.observe_event(observation, lines):
            self._on_voltage_event(station_id)

    def external_limit(self, station_id: str, limit: ExternalLimit) -> None:
        """A limit another party set on the station (ChargingStationExternalConstraints),
        or its end."""
        key = (station_id, *limit.key())
        if limit.cleared:
            self.external_limits.pop(key, None)
        else:
            self.external_limits[key] = limit
        self._request_replan()
