"""OCPP 2.0.1, central-system side: the 1.6 link's framing with 2.0.1 actions.

Same edge style as ``v16``: one JSON decode, requests validated against the
2.0.1 schemas the ``ocpp`` package ships (compiled once with ``fastjsonschema``),
our own routing over wire dicts. What a 2.0.1 station says is handed to the
same :class:`~bridge.ocpp.link.StationListener` in the same domain terms:

- an EVSE is what the rest of the bridge calls a connector (EVSE 0: the station);
- transactions carry the station's own string ids; the bridge's numeric ids are
  mapped to them here, so a TxProfile always names the station's transaction;
- sampled values (numbers with a unit and a power-of-ten multiplier) are turned
  into the shape ``bridge.telemetry`` reads.

The 2.0.1 payloads of our profiles are built here, from the domain
:class:`~bridge.ocpp.profiles.BuiltProfile`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
from ocpp.v201.enums import Action

from bridge.ocpp.capabilities import Capabilities, parse_rate_units
from bridge.ocpp.link import ACCEPTED, CompositeSchedule, StationListener, reply_status
from bridge.ocpp.profiles import STATION_MAX, BuiltProfile
from bridge.ocpp.v16 import HEARTBEAT_INTERVAL_S, Payload, Refused, StationLink
from bridge.worst_case import Rated

log = logging.getLogger(__name__)

ACTIONS_201 = frozenset(a.value for a in Action)
_RULE_CODES = {
    "required": "OccurrenceConstraintViolation",
    "minItems": "OccurrenceConstraintViolation",
    "maxItems": "OccurrenceConstraintViolation",
    "type": "TypeConstraintViolation",
    "additionalProperties": "FormatViolation",
}
_PURPOSES = {STATION_MAX: "ChargingStationMaxProfile"}  # the others keep their 1.6 names
SMART_CHARGING = "SmartChargingCtrlr"
RATED_EVSES = 4  # EVSEs asked for their maximum power, at least
# (variable, instance) read from SmartChargingCtrlr at boot
_VARIABLES = (("Enabled", None), ("RateUnit", None), ("PeriodsPerSchedule", None),
              ("ProfileStackLevel", None), ("Entries", "ChargingProfiles"))


@cache
def _schema_validator(name: str) -> Callable[[Payload], Any]:
    text = resources.files("ocpp").joinpath("v201", "schemas", f"{name}.json").read_text("utf-8")
    schema = json.loads(text)
    schema.pop("$id", None)  # fastjsonschema would try to resolve the urn
    return fastjsonschema.compile(schema)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _time(text: Any) -> datetime:
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def sampled_values(meter_value: Payload) -> Payload:
    """A 2.0.1 MeterValue in the shape ``bridge.telemetry.read_meter_value`` reads."""
    samples = []
    for sampled in meter_value.get("sampledValue") or []:
        unit = sampled.get("unitOfMeasure") or {}
        value = float(sampled.get("value", 0)) * 10 ** int(unit.get("multiplier", 0))
        sample = {"value": str(value),
                  "measurand": sampled.get("measurand", "Energy.Active.Import.Register")}
        if sampled.get("phase"):
            sample["phase"] = sampled["phase"]
        if unit.get("unit"):
            sample["unit"] = unit["unit"]
        samples.append(sample)
    return {"timestamp": meter_value.get("timestamp", ""), "sampledValue": samples}


def energy_wh(meter_values: list[Payload]) -> int:
    """The energy register in the last of these meter values (0 when none has one)."""
    for meter_value in reversed(meter_values):
        for sample in sampled_values(meter_value)["sampledValue"]:
            if sample["measurand"] == "Energy.Active.Import.Register" and "phase" not in sample:
                scale = 1000.0 if sample.get("unit") == "kWh" else 1.0
                return int(float(sample["value"]) * scale)
    return 0


def profile_payload(profile: BuiltProfile, transaction_id: str | None) -> Payload:
    """SetChargingProfileRequest.chargingProfile for a profile, as on the 2.0.1 wire."""
    payload: Payload = {
        "id": profile.profile_id,
        "stackLevel": profile.stack_level,
        "chargingProfilePurpose": _PURPOSES.get(profile.purpose, profile.purpose),
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [{
            "id": profile.profile_id,
            "startSchedule": profile.start.isoformat().replace("+00:00", "Z"),
            "chargingRateUnit": profile.unit,
            "chargingSchedulePeriod": [
                {"startPeriod": second, "limit": limit, "numberPhases": profile.number_phases}
                for second, limit in profile.periods
            ],
        }],
    }
    if transaction_id is not None:
        payload["transactionId"] = transaction_id
    return payload


def parse_variables(results: Any, connectors: int) -> Capabilities:
    """GetVariablesResponse.getVariableResult -> capabilities, defensively."""
    values: dict[str, str] = {}
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict) or result.get("attributeStatus") != "Accepted":
            continue
        variable = result.get("variable") or {}
        if isinstance(variable, dict) and "attributeValue" in result:
            values[str(variable.get("name"))] = str(result["attributeValue"])
    default = Capabilities()

    def number(name: str, fallback: int) -> int:
        try:
            return int(float(values[name]))
        except (KeyError, ValueError):
            return fallback

    enabled = values.get("Enabled", "true").strip().lower() not in ("false", "0")
    entries = number("Entries", 0)
    return Capabilities(
        rate_units=parse_rate_units(values.get("RateUnit", "")) or default.rate_units,
        max_stack_level=max(number("ProfileStackLevel", default.max_stack_level), 0),
        max_periods=max(number("PeriodsPerSchedule", default.max_periods), 1),
        max_profiles=entries or None,
        features=frozenset({"Core", "SmartCharging"} if enabled else {"Core"}),
        connectors=max(connectors, 1),
        known=True,
    )


def parse_rated_power(results: Any) -> Rated | None:
    """The station's maximum power if it answered it, else the sum of its EVSEs'."""
    station, evses = None, 0.0
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict) or result.get("attributeStatus") != "Accepted":
            continue
        try:
            watts = float(str(result.get("attributeValue")).strip())
        except ValueError:
            continue
        component = result.get("component")
        name = component.get("name") if isinstance(component, dict) else None
        if watts <= 0:
            continue
        if name == "ChargingStation":
            station = watts
        elif name == "EVSE":
            evses += watts
    if station is not None:
        return Rated("ChargingStation.Power (MaxSet)", watts=station)
    return Rated("EVSE.Power (MaxSet)", watts=evses) if evses else None


class StationLink201(StationLink):
    """The central system's end of one OCPP 2.0.1 station's websocket."""

    VERSION = "2.0.1"
    KNOWN_ACTIONS = ACTIONS_201
    FORMAT_VIOLATION = "FormatViolation"

    def __init__(self, station_id: str, connection: Any, listener: StationListener,
                 call_timeout_s: float) -> None:
        super().__init__(station_id, connection, listener, call_timeout_s)
        self._handlers = {
            "BootNotification": self.on_boot,
            "Heartbeat": self.on_heartbeat,
            "StatusNotification": self.on_status,
            "Authorize": self.on_authorize,
            "TransactionEvent": self.on_transaction_event,
            "MeterValues": self.on_meter_values,
            "DataTransfer": self.on_data_transfer,
            # reports and notices that need no action: acknowledged, so the station moves on
            **{action: self.on_notice for action in (
                "NotifyEvent", "NotifyReport", "SecurityEventNotification",
                "FirmwareStatusNotification", "LogStatusNotification", "NotifyChargingLimit",
                "ReportChargingProfiles", "NotifyMonitoringReport")},
        }
        # the station's transaction id -> (the bridge's id, EVSE id), and back
        self._transactions: dict[str, tuple[int, int]] = {}
        self._station_tx: dict[int, str] = {}
        self._evses: set[int] = set()

    def validate_request(self, action: str, payload: Payload) -> None:
        try:
            _schema_validator(f"{action}Request")(payload)
        except fastjsonschema.JsonSchemaValueException as error:
            code = _RULE_CODES.get(error.rule or "", "PropertyConstraintViolation")
            raise Refused(code, f"{action}: {error.message}") from None

    def response_validator(self, action: str) -> Callable[[Payload], Any]:
        return _schema_validator(f"{action}Response")

    # calls to the station ----------------------------------------------------------------
    async def read_capabilities(self) -> Capabilities:
        wanted = [{"component": {"name": SMART_CHARGING},
                   "variable": {"name": name, **({"instance": inst} if inst else {})}}
                  for name, inst in _VARIABLES]
        reply = await self._request("GetVariables", {"getVariableData": wanted}, lenient=True)
        return parse_variables(reply.get("getVariableResult"), max(self._evses, default=1))

    async def read_rated_current(self) -> Rated | None:
        """The station's maximum power from its device model: ``Power``'s MaxSet (its
        maxLimit) of the ChargingStation, or else the sum of its EVSEs' (the ids it used,
        and at least the first four)."""
        evses = range(1, max(RATED_EVSES, *self._evses) + 1)
        wanted = [{"component": {"name": "ChargingStation"}, "variable": {"name": "Power"},
                   "attributeType": "MaxSet"}]
        wanted += [{"component": {"name": "EVSE", "evse": {"id": evse}},
                    "variable": {"name": "Power"}, "attributeType": "MaxSet"}
                   for evse in evses]
        reply = await self._request("GetVariables", {"getVariableData": wanted}, lenient=True)
        return parse_rated_power(reply.get("getVariableResult"))

    async def set_profile(self, profile: BuiltProfile) -> str:
        transaction_id = None
        if profile.transaction_id is not None:
            transaction_id = self._station_tx.get(profile.transaction_id)
            if transaction_id is None:  # never a TxProfile without the station's transaction
                return "UnknownTransaction"
        reply = await self._request("SetChargingProfile", {
            "evseId": profile.connector_id,
            "chargingProfile": profile_payload(profile, transaction_id),
        }, lenient=True)
        return reply_status(reply)

    async def composite_schedule(self, connector_id: int, duration_s: int,
                                 unit: str) -> CompositeSchedule | None:
        reply = await self._request("GetCompositeSchedule", {
            "duration": duration_s, "evseId": connector_id, "chargingRateUnit": unit,
        }, lenient=True)
        schedule = reply.get("schedule")
        if reply_status(reply) != ACCEPTED or not isinstance(schedule, dict):
            return None
        try:
            start = _time(schedule["scheduleStart"])
            periods = tuple(sorted((int(p["startPeriod"]), float(p["limit"]))
                                   for p in schedule["chargingSchedulePeriod"]))
        except (KeyError, TypeError, ValueError):
            return None
        if str(schedule.get("chargingRateUnit", unit)).upper() != unit or not periods:
            return None
        return CompositeSchedule(start, unit, periods)

    async def set_meter_interval(self, seconds: int) -> str:
        return await self._set_sampled_data("TxUpdatedInterval", str(seconds))

    async def set_measurands(self, measurands: Sequence[str]) -> str:
        """SampledDataCtrlr.TxUpdatedMeasurands: what a transaction's MeterValues carry."""
        return await self._set_sampled_data("TxUpdatedMeasurands", ",".join(measurands))

    async def _set_sampled_data(self, variable: str, value: str) -> str:
        """SetVariables on SampledDataCtrlr; the station's attributeStatus for it."""
        reply = await self._request("SetVariables", {"setVariableData": [{
            "attributeValue": value,
            "component": {"name": "SampledDataCtrlr"},
            "variable": {"name": variable},
        }]}, lenient=True)
        results = reply.get("setVariableResult")
        if isinstance(results, list) and results and isinstance(results[0], dict):
            return str(results[0].get("attributeStatus"))
        return "Unreadable"

    async def clear_charging_profile(self, profile_id: int) -> str:
        reply = await self._request("ClearChargingProfile", {"chargingProfileId": profile_id},
                                    lenient=True)
        return reply_status(reply)

    # handlers: wire dicts in, wire dicts out -------------------------------------------------
    def on_boot(self, payload: Payload) -> Payload:
        station = payload["chargingStation"]
        self._listener.station_booted(self.id, {
            "vendor": station["vendorName"],
            "model": station["model"],
            "firmware": str(station.get("firmwareVersion") or ""),
        })
        return {"currentTime": _now_iso(), "interval": HEARTBEAT_INTERVAL_S,
                "status": "Accepted"}

    def on_status(self, payload: Payload) -> Payload:
        self._evses.add(payload["evseId"])
        self._listener.status_changed(self.id, payload["evseId"], payload["connectorStatus"])
        return {}

    def on_authorize(self, payload: Payload) -> Payload:
        # Authorisation belongs to the site's own back office; drbridge only steers power.
        return {"idTokenInfo": {"status": "Accepted"}}

    def on_transaction_event(self, payload: Payload) -> Payload:
        info = payload["transactionInfo"]
        station_tx = info["transactionId"]
        at = _time(payload["timestamp"])
        meter_values = payload.get("meterValue") or []
        known = self._transactions.get(station_tx)
        evse = (payload.get("evse") or {}).get("id") or (known[1] if known else 1)
        if known is None and payload["eventType"] != "Started":
            # a transaction that started before this connection (or before a bridge restart)
            running = self._listener.open_transaction(self.id, evse)
            if running is not None:
                known = self._remember(station_tx, running, evse)
        if known is None and payload["eventType"] in ("Started", "Updated"):
            token = (payload.get("idToken") or {}).get("idToken", "")
            bridge_tx = self._listener.transaction_started(
                self.id, evse, token, energy_wh(meter_values), at)
            known = self._remember(station_tx, bridge_tx, evse)
        if meter_values:
            self._listener.meter_values(self.id, evse, [sampled_values(m) for m in meter_values])
        if payload["eventType"] == "Ended" and known is not None:
            self._listener.transaction_stopped(self.id, known[0], energy_wh(meter_values), at)
            del self._transactions[station_tx]
            self._station_tx.pop(known[0], None)
        return {"idTokenInfo": {"status": "Accepted"}} if "idToken" in payload else {}

    def _remember(self, station_tx: str, bridge_tx: int, evse: int) -> tuple[int, int]:
        self._transactions[station_tx] = (bridge_tx, evse)
        self._station_tx[bridge_tx] = station_tx
        self._evses.add(evse)
        return bridge_tx, evse

    def on_meter_values(self, payload: Payload) -> Payload:
        self._listener.meter_values(self.id, payload["evseId"],
                                    [sampled_values(m) for m in payload["meterValue"]])
        return {}

    def on_data_transfer(self, payload: Payload) -> Payload:
        return {"status": "UnknownVendorId"}
