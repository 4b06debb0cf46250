"""A simulated OCPP 1.6J charging station with an EV plugged in on each connector.

The station is the charge-point side of the real ``ocpp`` library talking over a real websocket,
so tests, the demo and benchmarks exercise the bridge against something that behaves like a
compliant charger: it checks and stacks charging profiles as OCPP 1.6 §3.13 describes, and the
simulated EVs draw what the resulting limits allow, which the meters integrate. Quirks of real
chargers can be switched on one by one (see :class:`StationSpec`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import ocpp.messages
import websockets
from ocpp.charge_point import camel_to_snake_case, remove_nones, snake_to_camel_case
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.exceptions import NotSupportedError, OccurenceConstraintViolationError, OCPPError
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State
from websockets.typing import Subprotocol

from bridge.sim.feeder import Feeder

log = logging.getLogger(__name__)

# The library validates each message in a worker thread by default; the thread hop costs
# more than the validation, and a fleet of simulated stations sends many small messages.
ocpp.messages.ASYNC_VALIDATION = False

EV_MIN_CURRENT_A = 6.0  # IEC 61851: an EV cannot charge below 6 A, so it pauses
_RECURRENCE = {"Daily": timedelta(days=1), "Weekly": timedelta(weeks=1)}
_TRIGGERABLE = {"MeterValues", "StatusNotification", "Heartbeat", "BootNotification"}
_RATE_UNITS = {"current": "A", "power": "W"}


@dataclass
class StationSpec:
    station_id: str
    rate_unit: str = "Current,Power"  # ChargingScheduleAllowedChargingRateUnit
    max_current_a: float = 32.0  # station hardware limit per phase
    phases: int = 3
    voltage_v: float = 230.0
    ev_max_current_a: float = 16.0  # what the EV draws per phase when not limited
    meter_interval_s: float = 1.0
    plugged_in: bool = True
    id_tag: str = "SIMTAG"
    # Its driver presents a tag before a session starts: plugged in, a connector stays
    # Preparing until present_tag() (else the session starts as soon as it is plugged in).
    waits_for_tag: bool = False
    max_stack_level: int = 8
    max_periods: int = 24
    max_profiles: int = 8
    vendor: str = "drbridge-sim"
    model: str = "sim-1"
    # Quirks of real chargers, off by default.
    feature_profiles: str = "Core,SmartCharging"  # without SmartCharging: refuses profiles
    # Answers GetConfiguration and SetChargingProfile off-schema: numbers and booleans as
    # the wrong JSON types, unknown fields, a lower-case status.
    sloppy_replies: bool = False
    connectors: int = 1  # each with its own EV (all plugged in when plugged_in); 2.0.1: EVSEs
    connectors_per_evse: int = 1  # 2.0.1: connectors of each EVSE (one used at a time)
    # 2.0.1: its transactions began before it came to this central system (their Started
    # went to the one before), so the first event this one hears names no EVSE.
    tx_started_elsewhere: bool = False
    # Applies a ChargePointMaxProfile to each connector instead of the station's sum (as
    # MicroOcpp does): two sessions under one 16 A cap draw 16 A each.
    cp_max_per_connector: bool = False
    rejects_connector_zero: bool = False  # any profile for connector 0 is Rejected
    # Rejects stack levels above this although it reports max_stack_level.
    accepted_stack_level: int | None = None
    ignores_profiles: bool = False  # accepts every profile, and its EVs draw what they like
    supports_composite_schedule: bool = True  # else GetCompositeSchedule gets a CALLERROR
    # A ChargePointMaxProfile of another party (vendor, installer, a local load manager) at
    # factory_stack_level (default: its top), which wins over ours at a lower level:
    # factory_cap_a for ever, or factory_schedule's (seconds after the station was made,
    # amps) periods, such as a fuse or tariff limit that is lower later.
    factory_cap_a: float | None = None
    factory_schedule: tuple[tuple[int, float], ...] = ()
    factory_stack_level: int | None = None
    # Installs the first this many SetChargingProfile but never answers them (a reply lost
    # on a flaky mobile link, or firmware busy elsewhere).
    unanswered_profiles: int = 0
    # Installs the first this many SetChargingProfile at once but holds its answers back
    # until release_answers() (firmware that queues its replies while busy elsewhere).
    held_profile_answers: int = 0
    supports_get_configuration: bool = True  # else GetConfiguration gets a CALLERROR
    # Waits this long after its websocket opens before its BootNotification (firmware
    # still starting up).
    boot_delay_s: float = 0.0
    # False: after a lost link it reconnects without a BootNotification, as a station that
    # did not reboot may (OCPP asks for one per boot, not per connection), and without
    # repeating the statuses it already reported.
    boots_on_reconnect: bool = True
    # Keys of the vendor's own in its configuration (read-only), e.g. {"MaxCurrent": "16"}.
    vendor_keys: dict[str, str] = field(default_factory=dict)
    # False: no setting of what its meter samples (1.6 MeterValuesSampledData, 2.0.1
    # SampledDataCtrlr.TxUpdatedMeasurands), unknown to GetConfiguration/GetVariables and
    # refused when set. Either way it samples its own fixed set.
    measurands_setting: bool = True
    # Its meter interval and measurands cannot be changed: 1.6 lists the keys read-only and
    # rejects ChangeConfiguration of them, 2.0.1 rejects SetVariables of them.
    sampling_read_only: bool = False
    # Refuses a GetConfiguration (2.0.1: GetVariables) of more keys than this with an
    # OccurrenceConstraintViolation, as one with a low GetConfigurationMaxKeys
    # (ItemsPerMessageGetVariables) may.
    max_keys_per_read: int | None = None


@dataclass
class Connector:
    """One connector with its EV and transaction."""

    id: int
    plugged: bool
    want_tx: bool  # a plug-in (or remote start) not yet turned into a transaction
    id_tag: str
    tx_id: int | None = None
    tx_start: datetime | None = None
    remote_profile: dict[str, Any] | None = None
    tag_presented: bool = False  # see StationSpec.waits_for_tag
    last_status: str | None = None
    last_meter: float = 0.0
    energy_wh: float = 0.0


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(ts: str) -> datetime:
    dt = datetime.fromisoformat(ts)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # 1.6 means UTC when no offset is given


async def _nap(event: asyncio.Event, seconds: float) -> None:
    """Wait for `event` at most `seconds`; asyncio.timeout, unlike 3.11's wait_for, never eats
    a cancellation."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")



def schedule_limit_a(schedule: dict[str, Any], elapsed: float, voltage_v: float,
                     phases: int) -> float | None:
    """Per-phase amps a charging schedule sets ``elapsed`` seconds after its start, or None
    when it does not apply then (both OCPP versions share the schedule's shape)."""
    if elapsed < 0 or ("duration" in schedule and elapsed >= schedule["duration"]):
        return None
    current = None
    for period in sorted(schedule["chargingSchedulePeriod"], key=lambda x: x["startPeriod"]):
        if period["startPeriod"] > elapsed:
            break
        current = period
    if current is None:
        return None
    limit = float(current["limit"])
    if str(schedule["chargingRateUnit"]).upper() == "W":
        limit /= voltage_v * min(current.get("numberPhases", 3), phases)
    return limit


FACTORY_PROFILE_ID = 1  # the id of the station's own profile (see StationSpec.factory_cap_a)


def factory_profile(spec: StationSpec, id_key: str) -> dict[str, Any] | None:
    """The station's own ChargePointMaxProfile as on the wire (``id_key``: the id's name in
    its OCPP version), or None when it has none."""
    periods = spec.factory_schedule or (
        ((0, spec.factory_cap_a),) if spec.factory_cap_a is not None else ())
    if not periods:
        return None
    level = spec.max_stack_level if spec.factory_stack_level is None \
        else spec.factory_stack_level
    return {
        id_key: FACTORY_PROFILE_ID, "stackLevel": level,
        "chargingProfilePurpose": "ChargePointMaxProfile", "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "startSchedule": _iso(_now().replace(microsecond=0)), "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": second, "limit": amps}
                                       for second, amps in periods],
        },
    }


class SimulatedStation(ChargePoint):
    """One EV per connector; reconnects by itself until stop()."""

    def __init__(self, spec: StationSpec, central_system_url: str) -> None:
        super().__init__(spec.station_id, None, response_timeout=10)
        self.spec = spec
        self.url = f"{central_system_url.rstrip('/')}/{spec.station_id}"
        # Extra arguments of websockets.connect: ssl, additional_headers (credentials)...
        self.connect_options: dict[str, Any] = {}
        self.installed_profiles: dict[tuple[int, str, int], dict[str, Any]] = {}
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.local_list_version = 0  # the authorization list a central system sent
        # Absolute profiles without startSchedule start when they arrive, as most chargers do.
        self._received_at: dict[int, datetime] = {}
        self._raw: dict[str, Any] = {}  # camelCase payload of the CALL being handled
        self._ws: ClientConnection | None = None
        self._booted = False
        # Accepted by the central system since it last powered up: a station that only lost
        # its link needs no new BootNotification (see StationSpec.boots_on_reconnect).
        self._registered = False
        self._heartbeat_s = 60.0
        # Calls the central system sent before this connection's BootNotification was
        # accepted (OCPP: it should send none).
        self.calls_before_boot: list[str] = []
        self._boot_answered = False  # on this connection (or none needed)
        self._boot_seq = 0
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._run_task: asyncio.Task[Any] | None = None
        self.connectors = {
            c: Connector(c, spec.plugged_in, spec.plugged_in, spec.id_tag)
            for c in range(1, max(spec.connectors, 1) + 1)
        }
        # StopTransactions are queued so one that happens offline is delivered after reconnect.
        self._stops: list[call.StopTransaction] = []
        self._meter_interval = spec.meter_interval_s
        self._integrated_at = time.monotonic()
        self._unanswered = spec.unanswered_profiles
        self._to_hold = spec.held_profile_answers
        self._held_answers: list[tuple[str, str]] = []  # (message id, status) not sent yet
        self.feeder: Feeder | None = None  # see attach_feeder
        self.measurands = "Energy.Active.Import.Register,Power.Active.Import"
        factory = self._factory = factory_profile(spec, "chargingProfileId")
        if factory is not None:
            level = factory["stackLevel"]
            self.installed_profiles[(0, "ChargePointMaxProfile", level)] = factory

    # ---- state for tests -------------------------------------------------------------------
    @property
    def booted(self) -> bool:
        return self._booted

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._ws.state is State.OPEN

    @property
    def transaction_id(self) -> int | None:
        """Connector 1's transaction."""
        return self.connectors[1].tx_id

    @property
    def energy_wh(self) -> float:
        self._integrate()
        return sum(c.energy_wh for c in self.connectors.values())

    @property
    def power_w(self) -> float:
        return sum(self._draws_a().values()) * self.spec.voltage_v * self.spec.phases

    def connector_power_w(self, connector_id: int) -> float:
        return self._draws_a().get(connector_id, 0.0) * self.spec.voltage_v * self.spec.phases

    def _draws_a(self, at: datetime | None = None) -> dict[int, float]:
        """Per-phase amps each connector's EV draws now."""
        at = _now() if at is None else at
        wants: dict[int, float] = {}
        for c in self.connectors.values():
            if c.tx_id is None or not c.plugged:
                continue
            amps = self.spec.ev_max_current_a
            if not self.spec.ignores_profiles:
                amps = min(amps, self._connector_limit(c.id, at))
            wants[c.id] = amps if amps >= EV_MIN_CURRENT_A else 0.0
        cap = self._station_cap(at)
        total = sum(wants.values())
        if self.spec.ignores_profiles or self.spec.cp_max_per_connector or total <= cap:
            return wants
        # a compliant station shares its cap between its EVs
        return {c: a * cap / total for c, a in wants.items()}

    def composite_limit_a(self, at: datetime | None = None, connector_id: int = 0) -> float:
        """Per-phase amps the station (connector 0) or one connector may draw at ``at``."""
        at = _now() if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
        if connector_id:
            return self._connector_limit(connector_id, at)
        per_connector = sum(self._connector_limit(c, at) for c in self.connectors)
        if self.spec.cp_max_per_connector:
            return per_connector
        return min(self._station_cap(at), per_connector)

    def profile_limit_a(self, profile_id: int, at: datetime) -> float | None:
        """Per-phase amps an installed profile sets at ``at`` (None: not installed, or not in
        force then)."""
        for (connector_id, _, _), profile in self.installed_profiles.items():
            if profile["chargingProfileId"] == profile_id:
                return self._profile_limit(profile, at, self._rel_start(connector_id))
        return None

    def composite_limit_w(self, at: datetime | None = None, connector_id: int = 0) -> float:
        return self.composite_limit_a(at, connector_id) * self.spec.voltage_v * self.spec.phases

    # ---- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        self._run_task = asyncio.current_task()
        self._stopping.clear()
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                async with websockets.connect(
                    self.url, subprotocols=[Subprotocol("ocpp1.6")], open_timeout=5,
                    **self.connect_options,
                ) as ws:
                    backoff = 0.2
                    await self._session(ws)
            except Exception as exc:  # a station never gives up on its central system
                log.info("%s: connection to %s ended: %r", self.id, self.url, exc)
            await _nap(self._stopping, backoff)
            backoff = min(backoff * 2, 2.0)

    async def stop(self) -> None:
        self._stopping.set()
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.wait({task}, timeout=5)
            if not task.done():
                task.cancel()

    async def drop_connection(self) -> None:
        # Abort without a close frame: what a central system sees when a station loses its link.
        if self._ws is not None:
            self._ws.transport.abort()

    async def request(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one CALL of any 1.6 action (its payload as on the wire, camelCase) and return
        the answer as on the wire; raises OCPPError on a CALLERROR."""
        message = getattr(call, action)(**camel_to_snake_case(dict(payload)))
        answer = await self.call(message, suppress=False)
        return snake_to_camel_case(remove_nones(asdict(answer)))

    @property
    def _boots_now(self) -> bool:
        """Whether this connection starts with a BootNotification."""
        return self.spec.boots_on_reconnect or not self._registered

    async def reboot(self, reason: str = "PowerLoss") -> None:
        # No await before the abort, so nothing of this session can run in between.
        self._registered = False
        for connector in self.connectors.values():
            self._end_transaction(connector, reason)
            connector.want_tx = connector.plugged
        await self.drop_connection()

    async def restart_in_place(self) -> None:
        """Its charge controller restarts while its modem keeps the websocket open: the
        profiles it held are gone, and a BootNotification goes over the same connection."""
        self.installed_profiles = {k: p for k, p in self.installed_profiles.items()
                                   if p is self._factory}  # the vendor's own is kept
        await self._call(self._boot_payload())

    def hold_profile_answers(self, count: int) -> None:
        """From now on, install the next ``count`` SetChargingProfile at once but hold their
        answers back (as StationSpec.held_profile_answers does from the start)."""
        self._to_hold = count

    async def release_answers(self) -> None:
        """Send the answers it held back (see StationSpec.held_profile_answers), in order."""
        held, self._held_answers = self._held_answers, []
        for message_id, status in held:
            await self._connection.send(json.dumps([3, message_id, {"status": status}]))

    def unplug(self, connector_id: int = 1) -> None:
        connector = self.connectors[connector_id]
        self._end_transaction(connector, "EVDisconnected")
        connector.plugged = connector.want_tx = connector.tag_presented = False
        connector.id_tag = self.spec.id_tag
        self._wake.set()

    def present_tag(self, connector_id: int = 1) -> None:
        """The driver presents a tag: the session waiting on that connector starts."""
        self.connectors[connector_id].tag_presented = True
        self._wake.set()

    def plug_in(self, connector_id: int = 1) -> None:
        connector = self.connectors[connector_id]
        connector.plugged = True
        connector.want_tx = connector.tx_id is None
        self._wake.set()

    # ---- one websocket connection -------------------------------------------------------------
    async def _session(self, ws: ClientConnection) -> None:
        self._ws = self._connection = ws
        # Fresh call plumbing: a call cut off with the old link must not hold up the new one.
        self._response_queue = asyncio.Queue()
        self._call_lock = asyncio.Lock()
        self._boot_answered = not self._boots_now
        if self._boots_now:
            for connector in self.connectors.values():
                connector.last_status = None
        self._tasks = set()
        core = [self._spawn(self.start()), self._spawn(self._operate())]
        core.append(self._spawn(self._stopping.wait()))
        try:
            done, _ = await asyncio.wait(core, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, websockets.ConnectionClosed):
                    log.error("%s: session task failed", self.id, exc_info=exc)
        finally:
            self._booted = False
            self._ws = None
            tasks = list(self._tasks)
            while pending := [t for t in tasks if not t.done()]:
                for task in pending:  # again and again: see _operate about lost cancellations
                    task.cancel()
                await asyncio.wait(pending, timeout=0.5)
            for task in tasks:
                if not task.cancelled():
                    task.exception()  # retrieved, so asyncio does not warn about it

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def route_message(self, raw_msg: str) -> None:
        # The library hands handlers snake_case copies; keep the wire form for the log/profiles.
        try:
            msg = json.loads(raw_msg)
        except ValueError:
            msg = None
        if isinstance(msg, list) and len(msg) == 3 and msg[0] == 3 \
                and msg[1] == f"boot-{self._boot_seq}":
            self._boot_answered = True
        if isinstance(msg, list) and len(msg) == 4 and msg[0] == 2 and isinstance(msg[3], dict):
            self._raw = msg[3]
            self.received.append((str(msg[2]), msg[3]))
            if not self._boot_answered:
                self.calls_before_boot.append(str(msg[2]))
            if msg[2] == "SetChargingProfile" and self._unanswered > 0:
                self._unanswered -= 1
                self._install(msg[3]["connectorId"], msg[3]["csChargingProfiles"])
                return
            if msg[2] == "SetChargingProfile" and self._to_hold > 0:
                self._to_hold -= 1
                status = self._install(msg[3]["connectorId"], msg[3]["csChargingProfiles"])
                self._held_answers.append((str(msg[1]), status))
                return
            sloppy = self._sloppy_reply(str(msg[2]), msg[3]) if self.spec.sloppy_replies else None
            if sloppy is not None:
                await self._connection.send(json.dumps([3, msg[1], sloppy]))
                return
        await super().route_message(raw_msg)

    def _sloppy_reply(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The off-schema answer some firmwares give; None to answer normally."""
        if action == "GetConfiguration":
            keys = []
            for key, (value, readonly) in self._configuration().items():
                typed: Any = int(value) if value.isdigit() else value
                keys.append({"key": key, "value": typed, "readonly": str(readonly).lower(),
                             "vendorNote": "x"})
            return {"configurationKey": keys, "unknownKey": None}
        if action == "SetChargingProfile":
            status = self._install(payload["connectorId"], payload["csChargingProfiles"])
            return {"status": status.lower(), "statusInfo": {}}
        return None

    async def _call(self, payload: Any, unique_id: str | None = None) -> Any:
        """Send a CALL; None when it failed, because a station logs and carries on."""
        if self._ws is None:
            return None  # session over
        try:
            return await self.call(payload, suppress=False, unique_id=unique_id)
        except OCPPError as exc:
            log.warning("%s: %s answered with %r", self.id, type(payload).__name__, exc)
        except Exception as exc:
            log.warning("%s: %s failed: %r", self.id, type(payload).__name__, exc)
        return None

    def _boot_payload(self) -> call.BootNotification:
        return call.BootNotification(
            charge_point_model=self.spec.model, charge_point_vendor=self.spec.vendor
        )

    async def _operate(self) -> None:
        # Loops test self._ws as well as being cancelled: the ocpp library's wait_for can swallow
        # a cancellation on Python 3.11 when a response lands at the same moment.
        if self._boots_now:
            await asyncio.sleep(self.spec.boot_delay_s)
            while self._ws is not None:
                self._boot_seq += 1
                res = await self._call(self._boot_payload(), f"boot-{self._boot_seq}")
                if res is not None and res.status == "Accepted":
                    break
                await asyncio.sleep(res.interval if res is not None and res.interval > 0
                                    else 2.0)
            else:
                return
            self._heartbeat_s = res.interval if res.interval > 0 else 60
        self._booted = self._registered = True
        self._spawn(self._heartbeat(self._heartbeat_s))
        await self._flush_stops()
        for connector in self.connectors.values():
            if connector.tx_id is None:
                await self._send_status(connector, "Available")
        while self._ws is not None:
            self._wake.clear()
            await self._flush_stops()
            # Wake at least every second: scheduled profile periods change the status over time.
            timeout = 1.0
            for connector in self.connectors.values():
                if connector.plugged and connector.want_tx and connector.tx_id is None:
                    await self._send_status(connector, "Preparing")
                    if connector.tag_presented or not self.spec.waits_for_tag:
                        await self._start_transaction(connector)
                await self._send_status(connector, self._status(connector))
                metering = connector.tx_id is not None and self._meter_interval > 0
                if metering and time.monotonic() >= connector.last_meter + self._meter_interval:
                    connector.last_meter = time.monotonic()
                    await self._send_meter_values(connector, "Sample.Periodic")
                if metering:
                    due = connector.last_meter + self._meter_interval - time.monotonic()
                    timeout = max(0.0, min(timeout, due))
            await _nap(self._wake, timeout)

    async def _heartbeat(self, interval: float) -> None:
        while self._ws is not None:
            await asyncio.sleep(interval)
            await self._call(call.Heartbeat())

    async def _flush_stops(self) -> None:
        while self._stops:
            stop = self._stops[0]
            if await self._call(stop) is None and not self.connected:
                return  # link gone: the next session delivers it
            self._stops.remove(stop)

    async def _start_transaction(self, connector: Connector) -> None:
        self._integrate()
        res = await self._call(
            call.StartTransaction(
                connector_id=connector.id,
                id_tag=connector.id_tag,
                meter_start=int(connector.energy_wh),
                timestamp=_iso(_now()),
            )
        )
        if res is None:
            return  # retried on the next loop turn
        connector.want_tx = False
        connector.tx_id, connector.tx_start = res.transaction_id, _now()
        connector.last_meter = time.monotonic()
        if res.id_tag_info.get("status") != "Accepted":
            self._end_transaction(connector, "DeAuthorized")
        elif connector.remote_profile is not None:
            profile = {**connector.remote_profile, "transactionId": connector.tx_id}
            if self._install(connector.id, profile) != "Accepted":
                log.warning("%s: profile from RemoteStartTransaction rejected", self.id)
        connector.remote_profile = None

    def _end_transaction(self, connector: Connector, reason: str) -> None:
        if connector.tx_id is None:
            return
        self._integrate()
        stop = call.StopTransaction(
            meter_stop=int(connector.energy_wh),
            timestamp=_iso(_now()),
            transaction_id=connector.tx_id,
            reason=reason,
            id_tag=connector.id_tag,
        )
        self._stops.append(stop)
        # A TxProfile belongs to its transaction and goes with it.
        for key in [k for k in self.installed_profiles
                    if k[1] == "TxProfile" and k[0] == connector.id]:
            del self.installed_profiles[key]
        connector.tx_id = connector.tx_start = None
        self._wake.set()

    def _status(self, connector: Connector) -> str:
        if connector.tx_id is not None:
            if self.composite_limit_a(connector_id=connector.id) < EV_MIN_CURRENT_A \
                    or self.composite_limit_a() < EV_MIN_CURRENT_A:
                return "SuspendedEVSE"
            return "Charging" if self.connector_power_w(connector.id) > 0 else "SuspendedEV"
        if not connector.plugged:
            return "Available"
        return "Preparing" if connector.want_tx else "Finishing"

    async def _send_status(self, connector: Connector, status: str, force: bool = False) -> None:
        if status == connector.last_status and not force:
            return
        connector.last_status = status
        await self._call(
            call.StatusNotification(
                connector_id=connector.id, error_code="NoError", status=status,
                timestamp=_iso(_now()),
            )
        )

    async def _send_meter_values(self, connector: Connector, context: str) -> None:
        power = self.connector_power_w(connector.id)
        amps = power / (self.spec.voltage_v * self.spec.phases)
        phases = ["L1", "L2", "L3"][: self.spec.phases]

        def sample(value: float, measurand: str, unit: str, phase: str | None = None) -> dict:
            out = {"value": f"{value:.1f}", "context": context, "measurand": measurand}
            return out | ({"phase": phase} if phase else {}) | {"unit": unit}

        values = [
            sample(power, "Power.Active.Import", "W"),
            sample(self._energy_of(connector), "Energy.Active.Import.Register", "Wh"),
            *(sample(amps, "Current.Import", "A", ph) for ph in phases),
            *(sample(self._voltage_of(index), "Voltage", "V", f"{ph}-N")
              for index, ph in enumerate(phases)),
        ]
        await self._call(
            call.MeterValues(
                connector_id=connector.id,
                transaction_id=connector.tx_id,
                meter_value=[{"timestamp": _iso(_now()), "sampledValue": values}],
            )
        )

    def attach_feeder(self, feeder: Feeder) -> None:
        """Report the feeder's voltage, which falls as this station (and others) draw."""
        self.feeder = feeder
        feeder.attach(self.spec.station_id, self.line_currents_a)

    def line_currents_a(self) -> tuple[float, float, float]:
        amps = self.power_w / (self.spec.voltage_v * self.spec.phases)
        return (amps, amps if self.spec.phases > 1 else 0.0, amps if self.spec.phases > 2 else 0.0)

    def _voltage_of(self, line: int) -> float:
        return self.feeder.voltages_v()[line] if self.feeder else self.spec.voltage_v

    def _energy_of(self, connector: Connector) -> float:
        self._integrate()
        return connector.energy_wh

    def _integrate(self) -> None:
        # Called before every change of what the EVs draw, so their power held since the last call.
        now = time.monotonic()
        hours = (now - self._integrated_at) / 3600
        watts_per_amp = self.spec.voltage_v * self.spec.phases
        for connector_id, amps in self._draws_a().items():
            self.connectors[connector_id].energy_wh += amps * watts_per_amp * hours
        self._integrated_at = now

    # ---- smart charging ----------------------------------------------------------------------
    def _install(self, connector_id: int, profile: dict[str, Any]) -> str:
        purpose, level = profile["chargingProfilePurpose"], profile["stackLevel"]
        sched = profile["chargingSchedule"]
        allowed = {_RATE_UNITS.get(u.strip().lower()) for u in self.spec.rate_unit.split(",")}
        # A TxProfile only makes sense for the transaction running on its connector.
        connector = self.connectors.get(connector_id)
        tx_ok = connector is not None and connector.tx_id is not None
        tx_ok = tx_ok and profile.get("transactionId") == connector.tx_id  # type: ignore[union-attr]
        top_level = self.spec.max_stack_level if self.spec.accepted_stack_level is None \
            else self.spec.accepted_stack_level
        recurrence_ok = profile["chargingProfileKind"] != "Recurring" or (
            "recurrencyKind" in profile and "startSchedule" in sched
        )
        if (
            str(sched["chargingRateUnit"]).upper() not in allowed
            or not 0 <= level <= top_level
            or len(sched["chargingSchedulePeriod"]) > self.spec.max_periods
            or not 0 <= connector_id <= len(self.connectors)
            or (connector_id == 0 and self.spec.rejects_connector_zero)
            or (purpose == "ChargePointMaxProfile" and connector_id != 0)
            or (purpose == "TxProfile" and not tx_ok)
            or not recurrence_ok
        ):
            return "Rejected"
        key = (connector_id, purpose, level)
        replaced = [
            k
            for k, p in self.installed_profiles.items()
            if k == key or p["chargingProfileId"] == profile["chargingProfileId"]
        ]
        if len(self.installed_profiles) - len(replaced) >= self.spec.max_profiles:
            return "Rejected"
        self._integrate()
        for k in replaced:
            del self.installed_profiles[k]
        self.installed_profiles[key] = profile
        self._received_at[profile["chargingProfileId"]] = _now()
        self._wake.set()
        return "Accepted"

    def _profile_start(self, p: dict[str, Any], at: datetime, rel_start: datetime) -> datetime:
        sched = p["chargingSchedule"]
        if p["chargingProfileKind"] == "Relative":
            return rel_start
        if "startSchedule" in sched:
            start = _parse(sched["startSchedule"])
        else:
            start = self._received_at.get(p["chargingProfileId"], at)
        if p["chargingProfileKind"] == "Recurring":
            step = _RECURRENCE[p["recurrencyKind"]]
            start += step * math.floor((at - start) / step)  # latest recurrence not after `at`
        return start

    def _profile_limit(self, p: dict[str, Any], at: datetime, rel_start: datetime) -> float | None:
        """Per-phase amps the profile sets at `at`, or None when it does not apply then."""
        if ("validFrom" in p and at < _parse(p["validFrom"])) or (
            "validTo" in p and at >= _parse(p["validTo"])
        ):
            return None
        elapsed = (at - self._profile_start(p, at, rel_start)).total_seconds()
        return schedule_limit_a(p["chargingSchedule"], elapsed, self.spec.voltage_v,
                                self.spec.phases)

    def _winner(self, purpose: str, connector_id: int, at: datetime, rel_start: datetime,
                tx: int | None = None) -> float | None:
        """The limit of the highest stack level of a purpose in force at ``at``, if any."""
        stack = sorted(
            (
                p
                for (c, pur, _), p in self.installed_profiles.items()
                if c == connector_id
                and pur == purpose
                and (purpose != "TxProfile" or p.get("transactionId") == tx)
            ),
            key=lambda p: -p["stackLevel"],
        )
        for p in stack:
            limit = self._profile_limit(p, at, rel_start)
            if limit is not None:
                return limit
        return None

    def _rel_start(self, connector_id: int) -> datetime:
        """Where Relative profiles start: the connector's transaction (or the first one)."""
        connectors = [self.connectors[connector_id]] if connector_id else []
        starts = [c.tx_start for c in [*connectors, *self.connectors.values()] if c.tx_start]
        return starts[0] if starts else _now()

    def _station_cap(self, at: datetime) -> float:
        """Per-phase amps the whole station may draw (ChargePointMaxProfile, hardware)."""
        cap = self._winner("ChargePointMaxProfile", 0, at, self._rel_start(0))
        return max(0.0, min(self.spec.max_current_a, cap if cap is not None else math.inf))

    def _connector_limit(self, connector_id: int, at: datetime) -> float:
        """Per-phase amps one connector may draw: its Tx(Default)Profile under the cap."""
        connector = self.connectors[connector_id]
        rel = self._rel_start(connector_id)
        tx_limit = None
        if connector.tx_id is not None:
            tx_limit = self._winner("TxProfile", connector_id, at, rel, connector.tx_id)
        if tx_limit is None:
            tx_limit = self._winner("TxDefaultProfile", connector_id, at, rel)
        if tx_limit is None:
            tx_limit = self._winner("TxDefaultProfile", 0, at, rel)
        limits = [x for x in (tx_limit,) if x is not None]
        return max(0.0, min([self._station_cap(at), *limits]))

    def _edges(self, p: dict[str, Any], t0: datetime, t1: datetime, rel: datetime) -> set[datetime]:
        """Instants in [t0, t1) where profile `p` may change what it imposes."""
        sched = p["chargingSchedule"]
        offsets = [period["startPeriod"] for period in sched["chargingSchedulePeriod"]]
        offsets += [sched["duration"]] if "duration" in sched else []
        edges = {_parse(p[k]) for k in ("validFrom", "validTo") if k in p}
        start = self._profile_start(p, t0, rel)
        step = _RECURRENCE[p["recurrencyKind"]] if p["chargingProfileKind"] == "Recurring" else None
        while start < t1:
            edges.update(start + timedelta(seconds=o) for o in offsets)
            if step is None:
                break
            start += step
        return edges

    # ---- handlers for CALLs from the central system -------------------------------------------
    def _configuration(self) -> dict[str, tuple[str, bool]]:
        """Key -> (value, readonly)."""
        return {
            "ChargingScheduleAllowedChargingRateUnit": (self.spec.rate_unit, True),
            "ChargeProfileMaxStackLevel": (str(self.spec.max_stack_level), True),
            "ChargingScheduleMaxPeriods": (str(self.spec.max_periods), True),
            "MaxChargingProfilesInstalled": (str(self.spec.max_profiles), True),
            "SupportedFeatureProfiles": (self.spec.feature_profiles, True),
            "NumberOfConnectors": (str(len(self.connectors)), True),
            "MeterValueSampleInterval": (f"{self._meter_interval:g}",
                                         self.spec.sampling_read_only),
            **({"MeterValuesSampledData": (self.measurands, self.spec.sampling_read_only)}
               if self.spec.measurands_setting else {}),
            **{key: (value, True) for key, value in self.spec.vendor_keys.items()},
        }

    @on(Action.get_configuration)
    def on_get_configuration(
        self, key: list[str] | None = None, **_: Any
    ) -> call_result.GetConfiguration:
        if not self.spec.supports_get_configuration:
            raise OcppNotImplemented(description="GetConfiguration is not implemented")
        limit = self.spec.max_keys_per_read
        if key and limit is not None and len(key) > limit:
            raise OccurenceConstraintViolationError(description=f"at most {limit} keys")
        config = self._configuration()
        wanted = key or list(config)
        return call_result.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": config[k][1], "value": config[k][0]}
                for k in wanted
                if k in config
            ],
            unknown_key=[k for k in wanted if k not in config] or None,
        )

    @on(Action.change_configuration)
    def on_change_configuration(
        self, key: str, value: str, **_: Any
    ) -> call_result.ChangeConfiguration:
        config = self._configuration()
        # 1.6: a known read-only key is Rejected, an unknown one NotSupported.
        if key not in config or config[key][1]:
            return call_result.ChangeConfiguration(
                status="Rejected" if key in config else "NotSupported")
        if key == "MeterValuesSampledData":
            self.measurands = value  # it reports its fixed set whatever is asked
            return call_result.ChangeConfiguration(status="Accepted")
        try:
            seconds = int(value)
        except ValueError:
            seconds = -1
        if seconds < 0:
            return call_result.ChangeConfiguration(status="Rejected")
        self._meter_interval = seconds
        self._wake.set()
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, connector_id: int, **_: Any
    ) -> call_result.SetChargingProfile:
        if "smartcharging" not in self.spec.feature_profiles.lower():
            raise NotSupportedError(description="SmartCharging is not supported")
        status = self._install(connector_id, self._raw["csChargingProfiles"])
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        def matches(key: tuple[int, str, int], p: dict[str, Any]) -> bool:
            if id is not None:  # 1.6: an id makes the other criteria irrelevant
                return p["chargingProfileId"] == id
            c, purpose, level = key
            return (
                connector_id in (None, c)
                and charging_profile_purpose in (None, purpose)
                and stack_level in (None, level)
            )

        doomed = [k for k, p in self.installed_profiles.items() if matches(k, p)]
        if not doomed:
            return call_result.ClearChargingProfile(status="Unknown")
        self._integrate()
        for k in doomed:
            del self.installed_profiles[k]
        self._wake.set()
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> call_result.GetCompositeSchedule:
        if not self.spec.supports_composite_schedule:
            raise OcppNotImplemented(description="GetCompositeSchedule is not implemented")
        if not 0 <= connector_id <= len(self.connectors):
            return call_result.GetCompositeSchedule(status="Rejected")
        unit = charging_rate_unit or "A"
        watts_per_amp = self.spec.voltage_v * self.spec.phases if unit == "W" else 1.0
        t0 = _now().replace(microsecond=0)
        t1 = t0 + timedelta(seconds=duration)
        rel = self._rel_start(connector_id)
        edges = {t0}.union(*(self._edges(p, t0, t1, rel) for p in self.installed_profiles.values()))
        offsets = {math.ceil((e - t0).total_seconds()) for e in edges if t0 <= e < t1}
        periods: list[dict[str, Any]] = []
        for offset in sorted(o for o in offsets if o < duration or o == 0):
            at = t0 + timedelta(seconds=offset)
            limit = round(self.composite_limit_a(at, connector_id) * watts_per_amp, 1)
            if not periods or periods[-1]["limit"] != limit:
                periods.append({"startPeriod": offset, "limit": limit})
        return call_result.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=_iso(t0),
            charging_schedule={
                "duration": duration,
                "startSchedule": _iso(t0),
                "chargingRateUnit": unit,
                "chargingSchedulePeriod": periods,
            },
        )

    @on(Action.remote_start_transaction)
    def on_remote_start_transaction(
        self, id_tag: str, connector_id: int | None = None, **_: Any
    ) -> call_result.RemoteStartTransaction:
        profile = self._raw.get("chargingProfile")
        free = [c for c in self.connectors.values()
                if c.tx_id is None and connector_id in (None, c.id)]
        if not free or (profile is not None
                        and profile.get("chargingProfilePurpose") != "TxProfile"):
            return call_result.RemoteStartTransaction(status="Rejected")
        connector = free[0]
        connector.id_tag, connector.remote_profile, connector.want_tx = id_tag, profile, True
        connector.tag_presented = True  # a remote start authorizes the session
        self._wake.set()
        return call_result.RemoteStartTransaction(status="Accepted")

    @on(Action.remote_stop_transaction)
    def on_remote_stop_transaction(
        self, transaction_id: int, **_: Any
    ) -> call_result.RemoteStopTransaction:
        running = [c for c in self.connectors.values() if c.tx_id == transaction_id]
        if not running:
            return call_result.RemoteStopTransaction(status="Rejected")
        self._end_transaction(running[0], "Remote")
        return call_result.RemoteStopTransaction(status="Accepted")

    # The rest of what a central system may ask (availability, unlocking, the authorization
    # cache and local list, reservations, firmware, diagnostics, data transfer): answered as
    # a compliant charger would, without acting on it beyond the local list's version; the
    # request is in ``received`` like every other.
    @on(Action.change_availability)
    def on_change_availability(self, **_: Any) -> call_result.ChangeAvailability:
        return call_result.ChangeAvailability(status="Accepted")

    @on(Action.unlock_connector)
    def on_unlock_connector(self, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        return call_result.UnlockConnector(
            status="Unlocked" if connector_id in self.connectors else "NotSupported")

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        return call_result.ClearCache(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> call_result.GetLocalListVersion:
        return call_result.GetLocalListVersion(list_version=self.local_list_version)

    @on(Action.send_local_list)
    def on_send_local_list(self, list_version: int, **_: Any) -> call_result.SendLocalList:
        self.local_list_version = list_version
        return call_result.SendLocalList(status="Accepted")

    @on(Action.reserve_now)
    def on_reserve_now(self, **_: Any) -> call_result.ReserveNow:
        return call_result.ReserveNow(status="Accepted")

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, **_: Any) -> call_result.CancelReservation:
        return call_result.CancelReservation(status="Accepted")

    @on(Action.update_firmware)
    def on_update_firmware(self, **_: Any) -> call_result.UpdateFirmware:
        return call_result.UpdateFirmware()

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, **_: Any) -> call_result.GetDiagnostics:
        return call_result.GetDiagnostics(file_name=f"{self.id}-diagnostics.log")

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> call_result.Reset:
        return call_result.Reset(status="Accepted")

    @after(Action.reset)
    def after_reset(self, type: str, **_: Any) -> None:
        self._spawn(self.reboot("HardReset" if type == "Hard" else "SoftReset"))

    def _triggerable(self, requested_message: str, connector_id: int | None) -> str:
        if requested_message not in _TRIGGERABLE:
            return "NotImplemented"
        return "Accepted" if connector_id is None or 0 <= connector_id <= len(self.connectors) \
            else "Rejected"

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        return call_result.TriggerMessage(status=self._triggerable(requested_message, connector_id))

    @after(Action.trigger_message)
    def after_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> None:
        # Sent from a task: awaiting a CALL here would block the receive loop it waits on.
        if self._triggerable(requested_message, connector_id) == "Accepted":
            self._spawn(self._send_triggered(requested_message))

    async def _send_triggered(self, message: str) -> None:
        if message == "MeterValues":
            for connector in self.connectors.values():
                await self._send_meter_values(connector, "Trigger")
        elif message == "StatusNotification":
            for connector in self.connectors.values():
                await self._send_status(connector, self._status(connector), force=True)
        elif message == "Heartbeat":
            await self._call(call.Heartbeat())
        else:
            await self._call(self._boot_payload())
