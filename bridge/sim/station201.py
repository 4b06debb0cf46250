"""A simulated OCPP 2.0.1 charging station: EVSEs with an EV plugged in on each.

The charging-station side of the real ``ocpp`` library (``ocpp.v201``) over a
real websocket with the ``ocpp2.0.1`` subprotocol. It reports transactions with
TransactionEvent (Started naming its EVSE, then Updated with meter values and
Ended, which name it no more, as 2.0.1 allows), answers GetVariables about its
SmartChargingCtrlr and GetReport about its EVSE and Connector components (in
NotifyReport parts), lists its profiles (GetChargingProfiles, then
ReportChargingProfiles), sends a transaction's event with its EVSE when a
TriggerMessage asks, and stacks charging profiles as 2.0.1 describes: per EVSE
and purpose the highest stack level wins; the ChargingStationMaxProfile caps the
TxProfile (or else TxDefaultProfile) of each EVSE, and the station's sum. A
profile with the stack level, purpose and EVSE of another one (a different id) is
rejected (K01.FR.06); one with a known id replaces it (K01.FR.05). Only what the
bridge uses is modelled: Absolute profiles.

``StationSpec.connectors`` is its number of EVSEs here, each with
``connectors_per_evse`` connectors (one in use at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from ocpp.charge_point import camel_to_snake_case, remove_nones, snake_to_camel_case
from ocpp.exceptions import OccurrenceConstraintViolationError
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State
from websockets.typing import Subprotocol

from bridge.sim.station import (
    EV_MIN_CURRENT_A,
    FACTORY_PROFILE_ID,
    StationSpec,
    factory_profile,
    schedule_limit_a,
)

log = logging.getLogger(__name__)

STATION_MAX = "ChargingStationMaxProfile"
REPORT_PART = 4  # reportData items per NotifyReport: a report comes in several parts


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(ts: str) -> datetime:
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass
class Evse:
    """One EVSE, its EV and its transaction."""

    id: int
    connectors: int
    plugged: bool
    tx_id: str | None = None
    connector_in_use: int = 1
    named: bool = False  # an event of this transaction named the EVSE (the first one must)
    energy_wh: float = 0.0
    remote_start_id: int | None = None  # the RequestStartTransaction that began it
    # why its transaction ends at the next turn (RemoteStop, Deauthorized), when not unplugged
    stop_trigger: str | None = None


class SimulatedStation201(ChargePoint):
    """Reconnects by itself until stop(); each EVSE's EV charges while plugged in."""

    def __init__(self, spec: StationSpec, central_system_url: str) -> None:
        super().__init__(spec.station_id, None, response_timeout=10)
        self.spec = spec
        self.url = f"{central_system_url.rstrip('/')}/{spec.station_id}"
        # (evse id, purpose, stack level) -> the profile as on the wire
        self.installed_profiles: dict[tuple[int, str, int], dict[str, Any]] = {}
        self._sources: dict[int, str] = {}  # profile id -> who installed it
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.local_list_version = 0  # the authorization list a CSMS sent
        # calls the central system sent before this connection's boot was answered
        self.calls_before_boot: list[str] = []
        self._raw: dict[str, Any] = {}
        self._ws: ClientConnection | None = None
        self._stopping = asyncio.Event()
        self._run_task: asyncio.Task[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.evses = {e: Evse(e, max(spec.connectors_per_evse, 1), spec.plugged_in)
                      for e in range(1, max(spec.connectors, 1) + 1)}
        self._tx_count = 0
        self._seq = 0
        self.id_token_answers: list[str] = []  # the central system's idTokenInfo statuses
        self._integrated_at = time.monotonic()
        self._meter_interval = spec.meter_interval_s
        # SampledDataCtrlr.TxUpdatedMeasurands as set (its TransactionEvents carry its own set)
        self.measurands = "Energy.Active.Import.Register,Power.Active.Import"
        self._registered = False  # accepted since it powered up
        self._boot_answered = False
        self._boot_seq = 0
        if spec.tx_started_elsewhere:
            for evse in self.evses.values():
                if evse.plugged:
                    self._new_transaction(evse)
                    evse.named = True  # its Started went to the central system before
        factory = factory_profile(spec, "id")
        if factory is not None:
            schedule = factory.pop("chargingSchedule")
            factory |= {"chargingProfilePurpose": STATION_MAX,
                        "chargingSchedule": [{"id": FACTORY_PROFILE_ID, **schedule}]}
            self.installed_profiles[(0, STATION_MAX, factory["stackLevel"])] = factory
            self._sources[FACTORY_PROFILE_ID] = "Other"

    # ---- state for tests -------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._ws is not None and self._ws.state is State.OPEN

    @property
    def transaction_id(self) -> str | None:
        """EVSE 1's transaction."""
        return self.evses[1].tx_id

    @property
    def power_w(self) -> float:
        return sum(self._draws_a().values()) * self.spec.voltage_v * self.spec.phases

    def evse_power_w(self, evse_id: int) -> float:
        return self._draws_a().get(evse_id, 0.0) * self.spec.voltage_v * self.spec.phases

    def _draws_a(self, at: datetime | None = None) -> dict[int, float]:
        """Per-phase amps each EVSE's EV draws."""
        at = _now() if at is None else at
        wants = {}
        for evse in self.evses.values():
            if evse.tx_id is None or not evse.plugged:
                continue
            amps = self.spec.ev_max_current_a
            if not self.spec.ignores_profiles:
                amps = min(amps, self.evse_limit_a(evse.id, at))
            wants[evse.id] = amps if amps >= EV_MIN_CURRENT_A else 0.0
        cap, total = self._station_cap_a(at), sum(wants.values())
        if not self.spec.ignores_profiles and total > cap:
            wants = {e: a * cap / total for e, a in wants.items()}  # it shares its cap
        own, total = self.own_limit_a(), sum(wants.values())
        if own is None or total <= own:
            return wants
        # shared alike; an EV offered less than its minimum stops (a control computed in
        # floating point may land a hair below the minimum it means)
        shares = {e: a * own / total for e, a in wants.items()}
        return {e: a if a >= EV_MIN_CURRENT_A - 1e-6 else 0.0 for e, a in shares.items()}

    def own_limit_a(self) -> float | None:
        """Per-phase amps in all that a control of the station's own holds its EVs to, over
        any charging profile and even when it ignores profiles (None: no such control). This
        station has none; one that follows a DER curve by itself has."""
        return None

    def external_limit_a(self, at: datetime) -> float | None:
        """Per-phase amps an actor other than the central system (an energy manager) holds
        the whole station to at ``at``, as ChargingStationExternalConstraints do: part of its
        cap and of its composite schedule (None: none). This station has none."""
        return None

    def voltages_v(self) -> tuple[float, ...]:
        """Line-to-neutral voltage on each line the station uses, as its meter values carry
        it: the nominal one here; a station on a feeder measures its feeder's."""
        return (self.spec.voltage_v,) * self.spec.phases

    def _station_cap_a(self, at: datetime) -> float:
        caps = [self.spec.max_current_a, self._winner(0, STATION_MAX, at),
                self.external_limit_a(at)]
        return max(0.0, min(cap for cap in caps if cap is not None))

    def evse_limit_a(self, evse_id: int, at: datetime) -> float:
        """Per-phase amps one EVSE may draw: its TxProfile (else TxDefaultProfile) under the
        station's cap."""
        evse = self.evses[evse_id]
        tx = self._winner(evse_id, "TxProfile", at, evse.tx_id) if evse.tx_id else None
        for scope in (evse_id, 0):
            if tx is None:
                tx = self._winner(scope, "TxDefaultProfile", at)
        return max(0.0, min([self._station_cap_a(at), *([tx] if tx is not None else [])]))

    def composite_limit_a(self, at: datetime | None = None, evse_id: int = 0) -> float:
        """Per-phase amps the station (EVSE 0) or one EVSE may draw at ``at``."""
        at = _now() if at is None else at
        if evse_id:
            return self.evse_limit_a(evse_id, at)
        return min(self._station_cap_a(at), sum(self.evse_limit_a(e, at) for e in self.evses))

    def composite_limit_w(self, at: datetime | None = None) -> float:
        return self.composite_limit_a(at) * self.spec.voltage_v * self.spec.phases

    def profile_limit_a(self, profile_id: int, at: datetime) -> float | None:
        """Per-phase amps an installed profile sets at ``at`` (None: not installed, or not in
        force then)."""
        for profile in self.installed_profiles.values():
            if profile["id"] == profile_id:
                return self._profile_limit(profile, at)
        return None

    def _winner(self, evse: int, purpose: str, at: datetime, tx: str | None = None) -> float | None:
        stack = sorted((p for (e, pur, _), p in self.installed_profiles.items()
                        if e == evse and pur == purpose
                        and (purpose != "TxProfile" or p.get("transactionId") == tx)),
                       key=lambda p: -p["stackLevel"])
        for profile in stack:
            limit = self._profile_limit(profile, at)
            if limit is not None:
                return limit
        return None

    def _profile_limit(self, profile: dict[str, Any], at: datetime) -> float | None:
        schedule = profile["chargingSchedule"][0]
        elapsed = (at - _parse(schedule["startSchedule"])).total_seconds()
        return schedule_limit_a(schedule, elapsed, self.spec.voltage_v, self.spec.phases)

    # ---- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        self._run_task = asyncio.current_task()
        while not self._stopping.is_set():
            try:
                async with websockets.connect(
                    self.url, subprotocols=[Subprotocol("ocpp2.0.1")], open_timeout=5
                ) as ws:
                    await self._session(ws)
            except Exception as exc:  # a station never gives up on its central system
                log.info("%s: connection ended: %r", self.id, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._stopping.wait()

    async def stop(self) -> None:
        self._stopping.set()
        if self._ws is not None:
            await self._ws.close()
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.wait({task}, timeout=5)
            if not task.done():
                task.cancel()

    def unplug(self, evse_id: int = 1) -> None:
        self.evses[evse_id].plugged = False

    async def request(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one CALL of any 2.0.1 action (its payload as on the wire, camelCase) and
        return the answer as on the wire; raises OCPPError on a CALLERROR."""
        message = getattr(call, action)(**camel_to_snake_case(dict(payload)))
        answer = await self.call(message, suppress=False)
        return snake_to_camel_case(remove_nones(asdict(answer)))

    def plug_in(self, evse_id: int = 1) -> None:
        self.evses[evse_id].plugged = True

    async def drop_connection(self) -> None:
        """Abort without a close frame, as a lost link looks to the central system."""
        if self._ws is not None:
            self._ws.transport.abort()

    @property
    def _boots_now(self) -> bool:
        return self.spec.boots_on_reconnect or not self._registered

    async def _session(self, ws: ClientConnection) -> None:
        self._ws = self._connection = ws
        self._response_queue = asyncio.Queue()
        self._call_lock = asyncio.Lock()
        self._boot_answered = not self._boots_now
        tasks = [asyncio.create_task(self.start()), asyncio.create_task(self._operate())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._ws = None
            for task in [*tasks, *self._tasks]:
                task.cancel()
            await asyncio.wait([*tasks, *self._tasks], timeout=2)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def route_message(self, raw_msg: str) -> None:
        with contextlib.suppress(ValueError):
            msg = json.loads(raw_msg)
            if isinstance(msg, list) and len(msg) == 3 and msg[0] == 3 \
                    and msg[1] == f"boot-{self._boot_seq}":
                self._boot_answered = True
            if isinstance(msg, list) and len(msg) == 4 and msg[0] == 2:
                self._raw = msg[3]
                self.received.append((str(msg[2]), msg[3]))
                if not self._boot_answered:
                    self.calls_before_boot.append(str(msg[2]))
        await super().route_message(raw_msg)

    async def _operate(self) -> None:
        if self._boots_now:
            await asyncio.sleep(self.spec.boot_delay_s)
            self._boot_seq += 1
            boot = await self.call(call.BootNotification(
                charging_station={"model": self.spec.model, "vendor_name": self.spec.vendor},
                reason="PowerUp"), unique_id=f"boot-{self._boot_seq}")
            if boot.status != "Accepted":
                return
            self._registered = True
            for evse in self.evses.values():
                for connector in range(1, evse.connectors + 1):
                    status = "Occupied" if evse.plugged and connector == evse.connector_in_use \
                        else "Available"
                    await self.call(call.StatusNotification(
                        timestamp=_iso(_now()), connector_status=status, evse_id=evse.id,
                        connector_id=connector))
        while True:
            for evse in self.evses.values():
                if evse.plugged and evse.tx_id is None:
                    self._new_transaction(evse)
                    await self._transaction_event(evse, "Started", "RemoteStart"
                                                  if evse.remote_start_id else "CablePluggedIn")
                elif evse.tx_id is not None and (not evse.plugged or evse.stop_trigger):
                    await self._transaction_event(evse, "Ended",
                                                  evse.stop_trigger or "EVCommunicationLost")
                    evse.tx_id, evse.stop_trigger, evse.remote_start_id = None, None, None
                elif evse.tx_id is not None:
                    await self._transaction_event(evse, "Updated", "MeterValuePeriodic")
            await asyncio.sleep(self._meter_interval or 1.0)
            self._integrate()

    def _new_transaction(self, evse: Evse) -> None:
        self._tx_count += 1
        evse.tx_id, evse.named = f"{self.id}-tx{self._tx_count}", False

    def _integrate(self) -> None:
        now = time.monotonic()
        for evse_id, amps in self._draws_a().items():
            watts = amps * self.spec.voltage_v * self.spec.phases
            self.evses[evse_id].energy_wh += watts * (now - self._integrated_at) / 3600
        self._integrated_at = now

    async def _transaction_event(self, evse: Evse, event_type: str, trigger: str) -> None:
        self._seq += 1
        power = self.evse_power_w(evse.id)
        meter = [{"timestamp": _iso(_now()), "sampled_value": [
            {"value": round(power / 1000, 3), "measurand": "Power.Active.Import",
             "unit_of_measure": {"unit": "W", "multiplier": 3}},
            {"value": round(evse.energy_wh, 1), "measurand": "Energy.Active.Import.Register",
             "unit_of_measure": {"unit": "Wh"}},
            # what many stations send unasked: the voltage of each line it uses
            *({"value": round(volts, 1), "measurand": "Voltage", "phase": f"L{line}-N",
               "unit_of_measure": {"unit": "V"}}
              for line, volts in enumerate(self.voltages_v(), start=1)),
        ]}]
        extra: dict[str, Any] = {}
        info: dict[str, Any] = {"transaction_id": evse.tx_id}
        if event_type == "Started":
            extra["id_token"] = {"id_token": self.spec.id_tag, "type": "ISO14443"}
            if evse.remote_start_id is not None:
                info["remote_start_id"] = evse.remote_start_id
        if not evse.named or trigger == "Trigger":  # the first event, and one asked for
            extra["evse"] = {"id": evse.id, "connector_id": evse.connector_in_use}
            evse.named = True
        if event_type == "Ended":
            info["stopped_reason"] = {"RemoteStop": "Remote", "Deauthorized": "DeAuthorized"
                                      }.get(trigger, "EVDisconnected")
        answer = await self.call(call.TransactionEvent(
            event_type=event_type, timestamp=_iso(_now()), trigger_reason=trigger,
            seq_no=self._seq, transaction_info=info, meter_value=meter, **extra))
        status = (answer.id_token_info or {}).get("status")
        if status is not None:
            self.id_token_answers.append(status)
            if status != "Accepted" and event_type != "Ended":
                # StopTxOnInvalidId: a session the central system does not authorize ends,
                # and the driver takes the EV away
                evse.stop_trigger, evse.plugged = "Deauthorized", False

    # ---- handlers ----------------------------------------------------------------------------
    def _variables(self) -> dict[str, str]:
        enabled = "smartcharging" in self.spec.feature_profiles.lower()
        units = {"current": "A", "power": "W"}
        rate = ",".join(units.get(u.strip().lower(), u) for u in self.spec.rate_unit.split(","))
        return {"Enabled": str(enabled).lower(), "RateUnit": rate,
                "PeriodsPerSchedule": str(self.spec.max_periods),
                "ProfileStackLevel": str(self.spec.max_stack_level),
                "Entries": str(self.spec.max_profiles)}

    def _sampled_data(self) -> dict[str, str]:
        """SampledDataCtrlr's variables that say how a transaction's meter values come."""
        return {"TxUpdatedInterval": f"{self._meter_interval:g}",
                **({"TxUpdatedMeasurands": self.measurands}
                   if self.spec.measurands_setting else {})}

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]],
                         **_: Any) -> call_result.GetVariables:
        limit = self.spec.max_keys_per_read
        if limit is not None and len(get_variable_data) > limit:
            raise OccurrenceConstraintViolationError(description=f"at most {limit} items")
        values = {"SmartChargingCtrlr": self._variables(), "SampledDataCtrlr": self._sampled_data()}
        results = []
        for item in get_variable_data:
            name, component = item["variable"]["name"], item["component"]["name"]
            value = values.get(component, {}).get(name)
            this = component == "ChargingStation" or (
                component == "EVSE" and (item["component"].get("evse") or {}).get("id")
                in self.evses)
            if this and name == "Power" and item.get("attribute_type") == "MaxSet":
                # the station's maxLimit, and each EVSE's (it may give any one of them all)
                value = f"{self.spec.max_current_a * self.spec.voltage_v * self.spec.phases:g}"
            result = {"attribute_status": "Accepted" if value is not None else "UnknownVariable",
                      "component": item["component"], "variable": item["variable"]}
            if value is not None:
                result["attribute_value"] = value
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)

    def _device_model(self) -> list[dict[str, Any]]:
        """Its EVSE and Connector components as NotifyReport's reportData."""
        def item(component: dict[str, Any], variable: str, value: str) -> dict[str, Any]:
            return {"component": component, "variable": {"name": variable},
                    "variable_attribute": [{"type": "Actual", "value": value,
                                            "mutability": "ReadOnly"}]}
        data = []
        for evse in self.evses.values():
            data.append(item({"name": "EVSE", "evse": {"id": evse.id}}, "Available", "true"))
            data.append(item({"name": "EVSE", "evse": {"id": evse.id}}, "AvailabilityState",
                             "Occupied" if evse.plugged else "Available"))
            for connector in range(1, evse.connectors + 1):
                component = {"name": "Connector",
                             "evse": {"id": evse.id, "connector_id": connector}}
                data.append(item(component, "Available", "true"))
                data.append(item(component, "ConnectorType", "cType2"))
        return data

    def _reported(self, wanted: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        def matches(data: dict[str, Any], want: dict[str, Any]) -> bool:
            component, asked = data["component"], want["component"]
            if component["name"].lower() != asked["name"].lower():
                return False
            evse = asked.get("evse")
            if evse is not None and (evse["id"] != component["evse"]["id"] or evse.get(
                    "connector_id", component["evse"].get("connector_id"))
                    != component["evse"].get("connector_id")):
                return False
            variable = want.get("variable")
            return variable is None or variable["name"] == data["variable"]["name"]

        model = self._device_model()
        if not wanted:
            return model
        return [d for d in model if any(matches(d, want) for want in wanted)]

    @on(Action.get_report)
    def on_get_report(self, request_id: int, component_variable: list[dict[str, Any]] | None = None,
                      **_: Any) -> call_result.GetReport:
        found = self._reported(component_variable)
        return call_result.GetReport(status="Accepted" if found else "EmptyResultSet")

    @after(Action.get_report)
    def after_get_report(self, request_id: int,
                         component_variable: list[dict[str, Any]] | None = None,
                         **_: Any) -> None:
        found = self._reported(component_variable)
        if found:
            self._spawn(self._notify_report(request_id, found))

    async def _notify_report(self, request_id: int, data: list[dict[str, Any]]) -> None:
        parts = [data[i:i + REPORT_PART] for i in range(0, len(data), REPORT_PART)]
        for seq, part in enumerate(parts):
            await self.call(call.NotifyReport(
                request_id=request_id, generated_at=_iso(_now()), seq_no=seq,
                report_data=part, tbc=seq < len(parts) - 1))

    @on(Action.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]],
                         **_: Any) -> call_result.SetVariables:
        results = []
        for item in set_variable_data:
            status = self._set_sampled_data(item["component"]["name"], item["variable"]["name"],
                                            item["attribute_value"])
            results.append({"attribute_status": status, "component": item["component"],
                            "variable": item["variable"]})
        return call_result.SetVariables(set_variable_result=results)

    def _set_sampled_data(self, component: str, variable: str, value: str) -> str:
        if component != "SampledDataCtrlr" or variable not in self._sampled_data():
            return "UnknownVariable"
        if self.spec.sampling_read_only:
            return "Rejected"
        if variable == "TxUpdatedMeasurands":
            self.measurands = value
            return "Accepted"
        try:
            seconds = int(value)
        except ValueError:
            return "Rejected"
        if seconds < 0:
            return "Rejected"
        self._meter_interval = seconds
        return "Accepted"

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, **_: Any) -> call_result.SetChargingProfile:
        profile = self._raw["chargingProfile"]
        purpose, level = profile["chargingProfilePurpose"], profile["stackLevel"]
        schedule = profile["chargingSchedule"][0]
        allowed = set(self._variables()["RateUnit"].split(","))
        evse = self.evses.get(evse_id)
        # K01.FR.06/39: another profile (another id) with this stack level and purpose on
        # this EVSE (for a TxProfile: of this transaction) is refused, not replaced
        taken = any(p["id"] != profile["id"] and (key == (evse_id, purpose, level)) and (
            purpose != "TxProfile" or p.get("transactionId") == profile.get("transactionId"))
            for key, p in self.installed_profiles.items())
        if (
            "smartcharging" not in self.spec.feature_profiles.lower()
            or schedule["chargingRateUnit"] not in allowed
            or not 0 <= level <= self.spec.max_stack_level
            or len(schedule["chargingSchedulePeriod"]) > self.spec.max_periods
            or (evse_id != 0 and evse is None)
            or (evse_id == 0 and self.spec.rejects_connector_zero)
            or (purpose == STATION_MAX and evse_id != 0)
            or (purpose == "TxProfile"
                and (evse is None or profile.get("transactionId") != evse.tx_id))
            or "startSchedule" not in schedule
            or taken
        ):
            return call_result.SetChargingProfile(status="Rejected")
        self._integrate()
        for key in [k for k, p in self.installed_profiles.items() if p["id"] == profile["id"]]:
            del self.installed_profiles[key]
        self.installed_profiles[(evse_id, purpose, level)] = profile
        self._sources[profile["id"]] = "CSO"
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, charging_profile_id: int | None = None,
                                  **_: Any) -> call_result.ClearChargingProfile:
        doomed = [k for k, p in self.installed_profiles.items() if p["id"] == charging_profile_id]
        for key in doomed:
            del self.installed_profiles[key]
        return call_result.ClearChargingProfile(status="Accepted" if doomed else "Unknown")

    def _listed(self, evse_id: int | None,
                criteria: dict[str, Any]) -> dict[tuple[str, int], list[dict[str, Any]]]:
        """Installed profiles matching GetChargingProfiles' criteria, by (source, EVSE)."""
        found: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for (evse, purpose, level), profile in self.installed_profiles.items():
            source = self._sources.get(profile["id"], "CSO")
            if (evse_id is None or evse == evse_id) \
                    and criteria.get("charging_profile_purpose") in (None, purpose) \
                    and criteria.get("stack_level") in (None, level) \
                    and profile["id"] in criteria.get("charging_profile_id", [profile["id"]]) \
                    and source in criteria.get("charging_limit_source", [source]):
                found.setdefault((source, evse), []).append(profile)
        return found

    @on(Action.get_charging_profiles)
    def on_get_charging_profiles(self, request_id: int, charging_profile: dict[str, Any],
                                 evse_id: int | None = None,
                                 **_: Any) -> call_result.GetChargingProfiles:
        found = self._listed(evse_id, charging_profile)
        return call_result.GetChargingProfiles(status="Accepted" if found else "NoProfiles")

    @after(Action.get_charging_profiles)
    def after_get_charging_profiles(self, request_id: int, charging_profile: dict[str, Any],
                                    evse_id: int | None = None, **_: Any) -> None:
        found = self._listed(evse_id, charging_profile)
        if found:
            self._spawn(self._report_profiles(request_id, found))

    async def _report_profiles(self, request_id: int,
                               found: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
        groups = list(found.items())
        for index, ((source, evse), profiles) in enumerate(groups):
            await self.call(call.ReportChargingProfiles(
                request_id=request_id, charging_limit_source=source, evse_id=evse,
                charging_profile=profiles, tbc=index < len(groups) - 1))

    # The rest of what a CSMS may ask (availability, unlocking, the authorization cache and
    # local list, reservations, firmware, logs, transactions, customer data, data transfer,
    # the base report): answered as a compliant station would, without acting on it beyond
    # the local list's version and the report; the request is in ``received`` like every
    # other.
    @on(Action.change_availability)
    def on_change_availability(self, **_: Any) -> call_result.ChangeAvailability:
        return call_result.ChangeAvailability(status="Accepted")

    @on(Action.unlock_connector)
    def on_unlock_connector(self, evse_id: int, **_: Any) -> call_result.UnlockConnector:
        return call_result.UnlockConnector(
            status="Unlocked" if evse_id in self.evses else "UnknownConnector")

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        return call_result.ClearCache(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> call_result.GetLocalListVersion:
        return call_result.GetLocalListVersion(version_number=self.local_list_version)

    @on(Action.send_local_list)
    def on_send_local_list(self, version_number: int, **_: Any) -> call_result.SendLocalList:
        self.local_list_version = version_number
        return call_result.SendLocalList(status="Accepted")

    @on(Action.reserve_now)
    def on_reserve_now(self, **_: Any) -> call_result.ReserveNow:
        return call_result.ReserveNow(status="Accepted")

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, **_: Any) -> call_result.CancelReservation:
        return call_result.CancelReservation(status="Accepted")

    @on(Action.update_firmware)
    def on_update_firmware(self, **_: Any) -> call_result.UpdateFirmware:
        return call_result.UpdateFirmware(status="Accepted")

    @on(Action.get_log)
    def on_get_log(self, **_: Any) -> call_result.GetLog:
        return call_result.GetLog(status="Accepted", filename=f"{self.id}.log")

    @on(Action.get_transaction_status)
    def on_get_transaction_status(self, transaction_id: str | None = None,
                                  **_: Any) -> call_result.GetTransactionStatus:
        ongoing = any(e.tx_id == transaction_id for e in self.evses.values()) \
            if transaction_id is not None else None
        return call_result.GetTransactionStatus(messages_in_queue=False,
                                                ongoing_indicator=ongoing)

    @on(Action.customer_information)
    def on_customer_information(self, **_: Any) -> call_result.CustomerInformation:
        return call_result.CustomerInformation(status="Rejected")

    @on(Action.get_base_report)
    def on_get_base_report(self, **_: Any) -> call_result.GetBaseReport:
        return call_result.GetBaseReport(status="Accepted")

    @after(Action.get_base_report)
    def after_get_base_report(self, request_id: int, **_: Any) -> None:
        self._spawn(self._notify_report(request_id, self._device_model()))

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, evse: dict[str, Any] | None = None,
                           **_: Any) -> call_result.TriggerMessage:
        if requested_message != "TransactionEvent":
            return call_result.TriggerMessage(status="NotImplemented")
        running = [e for e in self.evses.values()
                   if e.tx_id is not None and (evse is None or e.id == evse["id"])]
        return call_result.TriggerMessage(status="Accepted" if running else "Rejected")

    @after(Action.trigger_message)
    def after_trigger_message(self, requested_message: str, evse: dict[str, Any] | None = None,
                              **_: Any) -> None:
        if requested_message == "TransactionEvent":
            for running in self.evses.values():
                if running.tx_id is not None and (evse is None or running.id == evse["id"]):
                    self._spawn(self._transaction_event(running, "Updated", "Trigger"))

    @on(Action.request_start_transaction)
    def on_request_start_transaction(self, id_token: dict[str, Any], remote_start_id: int,
                                     evse_id: int | None = None,
                                     **_: Any) -> call_result.RequestStartTransaction:
        free = [e for e in self.evses.values()
                if e.tx_id is None and evse_id in (None, e.id)]
        if not free:
            return call_result.RequestStartTransaction(status="Rejected")
        evse = free[0]
        # the EV is there (or arrives): its transaction starts at the next turn
        evse.plugged, evse.remote_start_id = True, remote_start_id
        return call_result.RequestStartTransaction(status="Accepted")

    @on(Action.request_stop_transaction)
    def on_request_stop_transaction(self, transaction_id: str,
                                    **_: Any) -> call_result.RequestStopTransaction:
        running = [e for e in self.evses.values() if e.tx_id == transaction_id]
        if not running:
            return call_result.RequestStopTransaction(status="Rejected")
        running[0].stop_trigger = "RemoteStop"
        running[0].plugged = False
        return call_result.RequestStopTransaction(status="Accepted")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, duration: int, evse_id: int,
                                  charging_rate_unit: str | None = None,
                                  **_: Any) -> call_result.GetCompositeSchedule:
        if evse_id != 0 and evse_id not in self.evses:
            return call_result.GetCompositeSchedule(status="Rejected")
        unit = charging_rate_unit or "A"
        scale = self.spec.voltage_v * self.spec.phases if unit == "W" else 1.0
        start = _now().replace(microsecond=0)
        offsets = {0}
        for profile in self.installed_profiles.values():
            schedule = profile["chargingSchedule"][0]
            begin = _parse(schedule["startSchedule"])
            for period in schedule["chargingSchedulePeriod"]:
                offset = (begin - start).total_seconds() + period["startPeriod"]
                if 0 < offset < duration:
                    offsets.add(int(-(-offset // 1)))  # the whole second it holds from
        periods: list[dict[str, Any]] = []
        for offset in sorted(offsets):
            at = start + timedelta(seconds=offset)
            limit = round(self.composite_limit_a(at, evse_id) * scale, 1)
            if not periods or periods[-1]["limit"] != limit:
                periods.append({"start_period": offset, "limit": limit})
        return call_result.GetCompositeSchedule(status="Accepted", schedule={
            "evse_id": evse_id, "duration": duration, "schedule_start": _iso(start),
            "charging_rate_unit": unit, "charging_schedule_period": periods})
