"""A simulated OCPP 2.0.1 charging station: one EVSE, one EV plugged in.

The charging-station side of the real ``ocpp`` library (``ocpp.v201``) over a
real websocket with the ``ocpp2.0.1`` subprotocol. It reports transactions with
TransactionEvent (Started, Updated with meter values, Ended), answers
GetVariables about its SmartChargingCtrlr, and stacks charging profiles as 2.0.1
describes: per EVSE and purpose the highest stack level wins; the station's
ChargingStationMaxProfile caps the TxProfile (or else TxDefaultProfile) of the
EVSE. Only what the bridge uses is modelled: Absolute profiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State
from websockets.typing import Subprotocol

from bridge.sim.station import EV_MIN_CURRENT_A, StationSpec, schedule_limit_a

log = logging.getLogger(__name__)

EVSE = 1


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(ts: str) -> datetime:
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class SimulatedStation201(ChargePoint):
    """Reconnects by itself until stop(); the EV charges while plugged in."""

    def __init__(self, spec: StationSpec, central_system_url: str) -> None:
        super().__init__(spec.station_id, None, response_timeout=10)
        self.spec = spec
        self.url = f"{central_system_url.rstrip('/')}/{spec.station_id}"
        # (evse id, purpose, stack level) -> the profile as on the wire
        self.installed_profiles: dict[tuple[int, str, int], dict[str, Any]] = {}
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._raw: dict[str, Any] = {}
        self._ws: ClientConnection | None = None
        self._stopping = asyncio.Event()
        self._run_task: asyncio.Task[Any] | None = None
        self._plugged = spec.plugged_in
        self._tx_id: str | None = None
        self._tx_count = 0
        self._seq = 0
        self._energy_wh = 0.0
        self._integrated_at = time.monotonic()
        self._meter_interval = spec.meter_interval_s

    # ---- state for tests -------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._ws is not None and self._ws.state is State.OPEN

    @property
    def transaction_id(self) -> str | None:
        return self._tx_id

    @property
    def power_w(self) -> float:
        if self._tx_id is None or not self._plugged:
            return 0.0
        amps = self.spec.ev_max_current_a
        if not self.spec.ignores_profiles:
            amps = min(amps, self.composite_limit_a())
        return 0.0 if amps < EV_MIN_CURRENT_A else amps * self.spec.voltage_v * self.spec.phases

    def composite_limit_a(self, at: datetime | None = None) -> float:
        at = _now() if at is None else at
        cap = self._winner(0, "ChargingStationMaxProfile", at)
        tx = self._winner(EVSE, "TxProfile", at) if self._tx_id else None
        for evse in (EVSE, 0):
            if tx is None:
                tx = self._winner(evse, "TxDefaultProfile", at)
        limits = [x for x in (cap, tx) if x is not None]
        return max(0.0, min([self.spec.max_current_a, *limits]))

    def composite_limit_w(self, at: datetime | None = None) -> float:
        return self.composite_limit_a(at) * self.spec.voltage_v * self.spec.phases

    def _winner(self, evse: int, purpose: str, at: datetime) -> float | None:
        stack = sorted((p for (e, pur, _), p in self.installed_profiles.items()
                        if e == evse and pur == purpose
                        and (purpose != "TxProfile" or p.get("transactionId") == self._tx_id)),
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

    def unplug(self) -> None:
        self._plugged = False

    async def drop_connection(self) -> None:
        """Abort without a close frame, as a lost link looks to the central system."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def _session(self, ws: ClientConnection) -> None:
        self._ws = self._connection = ws
        self._response_queue = asyncio.Queue()
        self._call_lock = asyncio.Lock()
        tasks = [asyncio.create_task(self.start()), asyncio.create_task(self._operate())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._ws = None
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=2)

    async def route_message(self, raw_msg: str) -> None:
        with contextlib.suppress(ValueError):
            msg = json.loads(raw_msg)
            if isinstance(msg, list) and len(msg) == 4 and msg[0] == 2:
                self._raw = msg[3]
                self.received.append((str(msg[2]), msg[3]))
        await super().route_message(raw_msg)

    async def _operate(self) -> None:
        boot = await self.call(call.BootNotification(
            charging_station={"model": self.spec.model, "vendor_name": self.spec.vendor},
            reason="PowerUp"))
        if boot.status != "Accepted":
            return
        await self.call(call.StatusNotification(timestamp=_iso(_now()),
                                                connector_status="Available",
                                                evse_id=EVSE, connector_id=1))
        if self._plugged:
            await self.call(call.StatusNotification(timestamp=_iso(_now()),
                                                    connector_status="Occupied",
                                                    evse_id=EVSE, connector_id=1))
            if self._tx_id is None:
                self._tx_count += 1
                self._tx_id = f"{self.id}-tx{self._tx_count}"
                await self._transaction_event("Started", "CablePluggedIn")
        while self._tx_id is not None:
            await asyncio.sleep(self._meter_interval or 1.0)
            self._integrate()
            if not self._plugged:
                await self._transaction_event("Ended", "EVCommunicationLost")
                self._tx_id = None
                break
            await self._transaction_event("Updated", "MeterValuePeriodic")
        await self._stopping.wait()

    def _integrate(self) -> None:
        now = time.monotonic()
        self._energy_wh += self.power_w * (now - self._integrated_at) / 3600
        self._integrated_at = now

    async def _transaction_event(self, event_type: str, trigger: str) -> None:
        self._seq += 1
        meter = [{"timestamp": _iso(_now()), "sampled_value": [
            {"value": round(self.power_w / 1000, 3), "measurand": "Power.Active.Import",
             "unit_of_measure": {"unit": "W", "multiplier": 3}},
            {"value": round(self._energy_wh, 1), "measurand": "Energy.Active.Import.Register",
             "unit_of_measure": {"unit": "Wh"}},
            # what many stations send unasked: the voltage of each line it uses
            *({"value": self.spec.voltage_v, "measurand": "Voltage", "phase": f"L{line}-N",
               "unit_of_measure": {"unit": "V"}} for line in range(1, self.spec.phases + 1)),
        ]}]
        extra: dict[str, Any] = {}
        if event_type == "Started":
            extra = {"id_token": {"id_token": self.spec.id_tag, "type": "ISO14443"},
                     "evse": {"id": EVSE, "connector_id": 1}}
        await self.call(call.TransactionEvent(
            event_type=event_type, timestamp=_iso(_now()), trigger_reason=trigger,
            seq_no=self._seq, transaction_info={"transaction_id": self._tx_id},
            meter_value=meter, **extra))

    # ---- handlers ----------------------------------------------------------------------------
    def _variables(self) -> dict[str, str]:
        enabled = "smartcharging" in self.spec.feature_profiles.lower()
        units = {"current": "A", "power": "W"}
        rate = ",".join(units.get(u.strip().lower(), u) for u in self.spec.rate_unit.split(","))
        return {"Enabled": str(enabled).lower(), "RateUnit": rate,
                "PeriodsPerSchedule": str(self.spec.max_periods),
                "ProfileStackLevel": str(self.spec.max_stack_level),
                "Entries": str(self.spec.max_profiles)}

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]],
                         **_: Any) -> call_result.GetVariables:
        values = self._variables()
        results = []
        for item in get_variable_data:
            name, component = item["variable"]["name"], item["component"]["name"]
            value = values.get(name) if component == "SmartChargingCtrlr" else None
            this = component == "ChargingStation" or (
                component == "EVSE" and (item["component"].get("evse") or {}).get("id") == EVSE)
            if this and name == "Power" and item.get("attribute_type") == "MaxSet":
                # its one EVSE's maxLimit: what its hardware can give
                value = f"{self.spec.max_current_a * self.spec.voltage_v * self.spec.phases:g}"
            result = {"attribute_status": "Accepted" if value is not None else "UnknownVariable",
                      "component": item["component"], "variable": item["variable"]}
            if value is not None:
                result["attribute_value"] = value
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]],
                         **_: Any) -> call_result.SetVariables:
        results = []
        for item in set_variable_data:
            ok = item["variable"]["name"] == "TxUpdatedInterval"
            if ok:
                self._meter_interval = float(item["attribute_value"])
            results.append({"attribute_status": "Accepted" if ok else "UnknownVariable",
                            "component": item["component"], "variable": item["variable"]})
        return call_result.SetVariables(set_variable_result=results)

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, **_: Any) -> call_result.SetChargingProfile:
        profile = self._raw["chargingProfile"]
        purpose, level = profile["chargingProfilePurpose"], profile["stackLevel"]
        schedule = profile["chargingSchedule"][0]
        allowed = set(self._variables()["RateUnit"].split(","))
        if (
            "smartcharging" not in self.spec.feature_profiles.lower()
            or schedule["chargingRateUnit"] not in allowed
            or not 0 <= level <= self.spec.max_stack_level
            or len(schedule["chargingSchedulePeriod"]) > self.spec.max_periods
            or evse_id not in (0, EVSE)
            or (evse_id == 0 and self.spec.rejects_connector_zero)
            or (purpose == "ChargingStationMaxProfile" and evse_id != 0)
            or (purpose == "TxProfile"
                and (evse_id != EVSE or profile.get("transactionId") != self._tx_id))
            or "startSchedule" not in schedule
        ):
            return call_result.SetChargingProfile(status="Rejected")
        self._integrate()
        for key in [k for k, p in self.installed_profiles.items()
                    if k == (evse_id, purpose, level) or p["id"] == profile["id"]]:
            del self.installed_profiles[key]
        self.installed_profiles[(evse_id, purpose, level)] = profile
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, charging_profile_id: int | None = None,
                                  **_: Any) -> call_result.ClearChargingProfile:
        doomed = [k for k, p in self.installed_profiles.items() if p["id"] == charging_profile_id]
        for key in doomed:
            del self.installed_profiles[key]
        return call_result.ClearChargingProfile(status="Accepted" if doomed else "Unknown")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, duration: int, evse_id: int,
                                  charging_rate_unit: str | None = None,
                                  **_: Any) -> call_result.GetCompositeSchedule:
        if evse_id not in (0, EVSE):
            return call_result.GetCompositeSchedule(status="Rejected")
        unit = charging_rate_unit or "A"
        scale = self.spec.voltage_v * self.spec.phases if unit == "W" else 1.0
        start = _now().replace(microsecond=0)
        return call_result.GetCompositeSchedule(status="Accepted", schedule={
            "evse_id": evse_id, "duration": duration, "schedule_start": _iso(start),
            "charging_rate_unit": unit,
            "charging_schedule_period": [
                {"start_period": 0, "limit": round(self.composite_limit_a(start) * scale, 1)}],
        })
