"""A simulated OCPP 2.0.1 station on a feeder that implements variable monitors on its voltage.

:class:`SimulatedStation201` with what a station needs to watch its own voltage:

- a feeder (:mod:`bridge.sim.feeder`): its voltage is the source's less the drop of the
  current every station on the feeder draws, so one station's draw moves the others';
- voltage variables in its device model: ``ACVoltage`` on each ``EVSE`` per line
  (instances ``L1``..``L3``; all its EVSEs hang on the same connection to the feeder) and
  on ``ChargingStation`` (its lowest line), or only the latter (``voltages="single"``),
  readable with GetVariables;
- SetVariableMonitoring / ClearVariableMonitoring / GetMonitoringReport for
  ``UpperThreshold`` and ``LowerThreshold`` monitors on them. It evaluates its measured
  voltage against every monitor many times a second and reports a crossing at once with
  NotifyEvent (``Alerting``; ``cleared`` on the return to normal); events that happen while
  it is offline are queued and sent once it is back (after its BootNotification is
  accepted, or at once when it reconnects without one);
- ``monitors="rejected"`` answers every monitor ``Rejected``, ``monitors="not-supported"``
  answers the whole request with a CALLERROR ``NotSupported``, as stations without
  monitoring do.

A monitor with ``transaction`` set watches only while a transaction runs on its EVSE (on
``ChargingStation``: on any EVSE). The meter values it sends carry the feeder's voltage,
not the nominal one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import websockets
from ocpp.exceptions import NotSupportedError
from ocpp.routing import after, on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from bridge.sim.feeder import Feeder
from bridge.sim.station import StationSpec
from bridge.sim.station201 import SimulatedStation201

log = logging.getLogger(__name__)

MonitorSupport = Literal["supported", "rejected", "not-supported"]
VoltageVariables = Literal["per-line", "single"]
VOLTAGE = "acvoltage"
OUTBOX_SIZE = 500  # notices kept while offline; the oldest go first when it is full


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Monitor:
    """A variable monitor as the station holds it."""

    monitor_id: int
    component: str
    evse_id: int | None
    instance: str | None
    kind: str  # UpperThreshold, LowerThreshold
    value: float
    severity: int
    transaction: bool
    tripped: bool = False  # the monitored condition holds now

    def key(self) -> tuple[object, ...]:
        return (self.component.lower(), self.evse_id, (self.instance or "").lower(),
                self.kind, self.value, self.severity, self.transaction)

    def payload(self) -> tuple[dict[str, Any], dict[str, Any]]:
        component: dict[str, Any] = {"name": self.component}
        if self.evse_id is not None:
            component["evse"] = {"id": self.evse_id}
        variable: dict[str, Any] = {"name": "ACVoltage"}
        if self.instance is not None:
            variable["instance"] = self.instance
        return component, variable


class MonitoringStation201(SimulatedStation201):
    """A 2.0.1 station on a feeder, with variable monitors on its voltage."""

    SUBPROTOCOL = "ocpp2.0.1"

    def __init__(self, spec: StationSpec, central_system_url: str, *,
                 monitors: MonitorSupport = "supported",
                 voltages: VoltageVariables = "per-line",
                 evaluate_every_s: float = 0.05) -> None:
        super().__init__(spec, central_system_url)
        self.feeder: Feeder | None = None
        self.monitor_support = monitors
        self.voltage_variables = voltages
        self.evaluate_every_s = evaluate_every_s
        self.monitors: dict[int, Monitor] = {}
        self.notices_sent: list[tuple[str, dict[str, Any]]] = []  # (action, payload) for tests
        self._next_monitor_id = 1
        self._event_id = 0
        self._outbox: deque[Any] = deque(maxlen=OUTBOX_SIZE)
        self._outbox_ready = asyncio.Event()
        self._online = asyncio.Event()  # booted on the current connection

    # ---- the feeder ---------------------------------------------------------------------------
    def attach_feeder(self, feeder: Feeder) -> None:
        """Measure the feeder's voltage, which falls as this station (and others) draw."""
        self.feeder = feeder
        feeder.attach(self.spec.station_id, self.line_currents_a)

    def line_currents_a(self) -> tuple[float, float, float]:
        amps = self.power_w / (self.spec.voltage_v * self.spec.phases)
        return (amps, amps if self.spec.phases > 1 else 0.0, amps if self.spec.phases > 2 else 0.0)

    def voltages_v(self) -> tuple[float, ...]:
        """Line-to-neutral voltage on each line the station uses: its feeder's (its meter
        values carry it too)."""
        every = self.feeder.voltages_v() if self.feeder else (self.spec.voltage_v,) * 3
        return every[: self.spec.phases]

    def _variable_value(self, component: str, evse_id: int | None,
                        instance: str | None) -> float | None:
        """The voltage a device-model variable holds (None: no such variable)."""
        voltages = self.voltages_v()
        component = component.lower()
        if component == "chargingstation" and evse_id is None and instance is None:
            return min(voltages)
        if component != "evse" or evse_id not in self.evses or \
                self.voltage_variables != "per-line":
            return None
        if instance is None:
            return min(voltages)
        lines = {f"l{n}": volts for n, volts in enumerate(voltages, start=1)}
        return lines.get(instance.lower())

    def _component_known(self, component: str, evse_id: int | None) -> bool:
        if component.lower() == "chargingstation":
            return evse_id is None
        return component.lower() == "evse" and evse_id in self.evses

    # ---- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        self._run_task = asyncio.current_task()
        background = [asyncio.create_task(self._watch()), asyncio.create_task(self._deliver())]
        try:
            while not self._stopping.is_set():
                try:
                    async with websockets.connect(
                        self.url, subprotocols=[Subprotocol(self.SUBPROTOCOL)], open_timeout=5
                    ) as ws:
                        await self._session(ws)
                except Exception as exc:  # a station never gives up on its central system
                    log.info("%s: connection ended: %r", self.id, exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._stopping.wait()
        finally:
            for task in background:
                task.cancel()
            await asyncio.wait(background, timeout=2)

    async def _session(self, ws: ClientConnection) -> None:
        self._online.clear()
        if not self._boots_now:  # registered before and not rebooted: no boot to wait for
            self._online.set()
            self._outbox_ready.set()
        try:
            await super()._session(ws)
        finally:
            self._online.clear()

    async def call(self, payload: Any, *args: Any, **kwargs: Any) -> Any:
        result = await super().call(payload, *args, **kwargs)
        if type(payload).__name__ == "BootNotification" and \
                getattr(result, "status", None) == "Accepted":
            self._online.set()
            self._outbox_ready.set()
        return result

    def _later(self, payload: Any) -> None:
        """Send a notice as soon as the station is online (and booted)."""
        self._outbox.append(payload)
        self._outbox_ready.set()

    async def _deliver(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox and self._online.is_set():
                payload = self._outbox[0]
                try:
                    await self.call(payload, suppress=False)
                except Exception as exc:  # offline or refused: keep it, try again
                    log.info("%s: %s not delivered: %r", self.id, type(payload).__name__, exc)
                    await asyncio.sleep(0.2)
                    self._outbox_ready.set()
                    break
                self._outbox.popleft()
                self.notices_sent.append((type(payload).__name__, payload))

    # ---- watching the voltage ------------------------------------------------------------
    async def _watch(self) -> None:
        last = time.monotonic()
        while True:
            now = time.monotonic()
            try:
                self._evaluate()
                self._tick(now - last)
            except Exception:  # a bug here must show, and the station must go on
                log.exception("%s: evaluating its voltage failed", self.id)
            last = now
            await asyncio.sleep(self.evaluate_every_s)

    def _tick(self, elapsed_s: float) -> None:
        """Each evaluation: room for what a subclass runs on its own voltage."""

    def _evaluate(self) -> None:
        for monitor in list(self.monitors.values()):
            self._check(monitor)

    def _check(self, monitor: Monitor) -> None:
        volts = self._variable_value(monitor.component, monitor.evse_id, monitor.instance)
        if volts is None:
            return
        running = self._transactions(monitor)
        active = not monitor.transaction or bool(running)
        tripped = active and (volts < monitor.value if monitor.kind == "LowerThreshold"
                              else volts > monitor.value)
        if tripped == monitor.tripped:
            return
        monitor.tripped = tripped
        self._event_id += 1
        component, variable = monitor.payload()
        event: dict[str, Any] = {
            "event_id": self._event_id, "timestamp": _iso(datetime.now(UTC)),
            "trigger": "Alerting", "actual_value": f"{volts:.1f}", "cleared": not tripped,
            "component": component, "variable": variable,
            "variable_monitoring_id": monitor.monitor_id,
            "event_notification_type": "CustomMonitor",
        }
        if monitor.transaction and len(running) == 1:  # the transaction it concerns
            event["transaction_id"] = running[0]
        self._later(self._call.NotifyEvent(generated_at=_iso(datetime.now(UTC)), seq_no=0,
                                           event_data=[event]))

    def _transactions(self, monitor: Monitor) -> list[str]:
        """The transactions running where the monitor watches: its EVSE, or the station."""
        return [evse.tx_id for evse in self.evses.values() if evse.tx_id is not None
                and monitor.evse_id in (None, evse.id)]

    # ---- handlers ----------------------------------------------------------------------------
    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]],
                         **kwargs: Any) -> call_result.GetVariables:
        answer = super().on_get_variables(get_variable_data, **kwargs)
        results = answer.get_variable_result
        for index, item in enumerate(get_variable_data):
            component, variable = item["component"], item["variable"]
            if str(variable.get("name", "")).lower() != VOLTAGE:
                continue
            volts = self._variable_value(component["name"], (component.get("evse") or {}).get(
                "id"), variable.get("instance"))
            if volts is not None:
                results[index] = {"attribute_status": "Accepted",
                                  "attribute_value": f"{volts:.1f}",
                                  "component": component, "variable": variable}
        return answer

    @on(Action.set_variable_monitoring)
    def on_set_variable_monitoring(self, **_: Any) -> call_result.SetVariableMonitoring:
        if self.monitor_support == "not-supported":
            raise NotSupportedError(description="this station has no variable monitoring")
        results = [self._set_monitor(item) for item in self._raw["setMonitoringData"]]
        return call_result.SetVariableMonitoring(set_monitoring_result=results)

    def _set_monitor(self, item: dict[str, Any]) -> dict[str, Any]:
        component, variable = item["component"], item["variable"]
        result: dict[str, Any] = {"type": item["type"], "severity": item["severity"],
                                  "component": component, "variable": variable}
        evse_id = (component.get("evse") or {}).get("id")
        if self.monitor_support == "rejected":
            return result | {"status": "Rejected"}
        if not self._component_known(component["name"], evse_id):
            return result | {"status": "UnknownComponent"}
        if str(variable["name"]).lower() != VOLTAGE or self._variable_value(
                component["name"], evse_id, variable.get("instance")) is None:
            return result | {"status": "UnknownVariable"}
        if item["type"] not in ("UpperThreshold", "LowerThreshold"):
            return result | {"status": "UnsupportedMonitorType"}
        if not 0 <= item["severity"] <= 9 or ("id" in item and item["id"] not in self.monitors):
            return result | {"status": "Rejected"}
        monitor = Monitor(item.get("id") or self._next_monitor_id, component["name"], evse_id,
                          variable.get("instance"), item["type"], float(item["value"]),
                          item["severity"], bool(item.get("transaction", False)))
        if any(m.key() == monitor.key() for m in self.monitors.values()
               if m.monitor_id != monitor.monitor_id):
            return result | {"status": "Duplicate"}
        if "id" not in item:
            self._next_monitor_id += 1
        self.monitors[monitor.monitor_id] = monitor
        self._check(monitor)  # a threshold already crossed is news at once
        return result | {"status": "Accepted", "id": monitor.monitor_id}

    @on(Action.clear_variable_monitoring)
    def on_clear_variable_monitoring(self, **_: Any) -> call_result.ClearVariableMonitoring:
        if self.monitor_support == "not-supported":
            raise NotSupportedError(description="this station has no variable monitoring")
        results = [{"id": monitor_id,
                    "status": "Accepted" if self.monitors.pop(monitor_id, None) else "NotFound"}
                   for monitor_id in self._raw["id"]]
        return call_result.ClearVariableMonitoring(clear_monitoring_result=results)

    @on(Action.get_monitoring_report)
    def on_get_monitoring_report(self, request_id: int,
                                 **_: Any) -> call_result.GetMonitoringReport:
        if self.monitor_support == "not-supported":
            raise NotSupportedError(description="this station has no variable monitoring")
        return call_result.GetMonitoringReport(
            status="Accepted" if self.monitors else "EmptyResultSet")

    @after(Action.get_monitoring_report)
    def after_get_monitoring_report(self, request_id: int, **_: Any) -> None:
        if not self.monitors:
            return
        entries = []
        for monitor in self.monitors.values():
            component, variable = monitor.payload()
            reported = {"id": monitor.monitor_id, "transaction": monitor.transaction,
                        "value": monitor.value, "type": monitor.kind,
                        "severity": monitor.severity}
            if self._ocpp_version != "2.0.1":  # 2.1 says who set a monitor: here, a CSMS
                reported["event_notification_type"] = "CustomMonitor"
            entries.append({"component": component, "variable": variable,
                            "variable_monitoring": [reported]})
        self._later(self._call.NotifyMonitoringReport(
            request_id=request_id, seq_no=0, generated_at=_iso(datetime.now(UTC)),
            monitor=entries))
