"""Voltage boundaries in the stations: each station's voltage monitors and DER control kept
as the policy's volt-watt rule asks, as its profiles are kept as the plan asks.

Three ways a station's voltage reaches the volt-watt rule, best last:

- ``meter values``: the voltages in its meter samples, at the pace of its meter interval
  (every version; the only way for OCPP 1.6J, which has no standard way to watch a voltage
  in the charger);
- ``monitors`` (OCPP 2.0.1, 2.1): threshold monitors on its voltage at the rule's
  thresholds (:mod:`bridge.ocpp.voltage_monitors`); a crossing arrives at once as
  NotifyEvent, and the central rule acts on it within a second;
- ``der-control`` (OCPP 2.1, where its device model offers VoltWatt): the rule's curve as
  the station's own VoltWatt control (:mod:`bridge.ocpp.der_control`); it backs off by
  itself within its response time, also while the bridge is away.

The central rule always stays: it holds where a station refuses, where another party's
control supersedes ours, and with ``scope: site``; a station that follows the curve as
well draws the lower of both.

Per station, after its capabilities are known on a connection (the dispatcher says so)
and once the fleet's limits are out, one task reconciles what it should hold with what it
acknowledged: monitors no longer wanted are cleared (by the ids the station gave ours,
never another's), missing ones set (the best variables it knows: each EVSE's lines, each
EVSE's voltage, the station's; ``Duplicate``: it holds one already, ours or another
party's, and the events come either way); the curve is read back (GetDERControl) and
pushed where the station does not hold it, then read back again. A station that refuses
or cannot keeps the central rule on its meter values, and the dashboard says so. Our
monitor ids and curve are stored before they count, so a restarted bridge follows (and,
with the rule removed, clears) exactly its own. The over-voltage rule stays central: see
:mod:`bridge.ocpp.der_control` and the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bridge.aio import cancel_and_wait
from bridge.config import Config
from bridge.ocpp import der_control as der
from bridge.ocpp import voltage_monitors as vm
from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.link import CallFailed, ChargerLink
from bridge.store import Store

log = logging.getLogger(__name__)

MonitorsState = Literal["off", "pending", "installed", "refused", "not-supported"]
DerState = Literal["off", "pending", "in-force", "superseded", "mismatch", "refused",
                   "not-supported", "unexpressible"]
VoltageSource = Literal["meter values", "monitors", "der-control"]
# No call before the station's boot is answered (as the dispatcher); one that reconnects
# without a boot is served after this long.
BOOT_WAIT_S = 5.0
MAX_RETRY_S = 300.0


@dataclass(frozen=True)
class StationControls:
    """What the dashboard shows of one station's voltage boundaries."""

    source: VoltageSource  # where the volt-watt rule gets its voltage first
    monitors: MonitorsState
    monitors_detail: str
    monitors_held: int  # of ours (and identical ones of others) it holds
    der: DerState
    der_detail: str


@dataclass
class _Station:
    station_id: str
    lines: tuple[int, ...]
    ours: dict[int, vm.MonitorSpec] = field(default_factory=dict)  # stored: id -> monitor
    der_curve: der.DerCurve | None = None  # stored: ours may be on the station
    link: ChargerLink | None = None
    evse_ids: tuple[int, ...] = (1,)
    # what this connection showed (asked again on the next one: a reboot may lose them)
    confirmed: set[int] = field(default_factory=set)  # of ours: it holds them
    others: set[tuple[object, ...]] = field(default_factory=set)  # identical, not ours
    der_supported: bool | None = None
    der_checked: bool = False
    monitors: MonitorsState = "off"
    monitors_detail: str = ""
    der: DerState = "off"
    der_detail: str = ""
    retry_s: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def view(self) -> StationControls:
        source: VoltageSource = "meter values"
        if self.der == "in-force":
            source = "der-control"
        elif self.monitors == "installed":
            source = "monitors"
        held = len(self.confirmed) + len(self.others)
        return StationControls(source, self.monitors, self.monitors_detail, held, self.der,
                               self.der_detail)


class VoltageControls:
    def __init__(self, config: Config, store: Store,
                 limits_sent: Callable[[], Awaitable[None]], retry_s: float = 5.0) -> None:
        self._config = config
        self._store = store
        self._rule = config.policy.voltage
        self._nominal_v = config.site.voltage_v
        self._limits_sent = limits_sent
        self._retry_s = retry_s
        self._stations: dict[str, _Station] = {}
        for station_id, (monitors, curve) in store.voltage_controls().items():
            ours = _monitors_from_json(monitors)
            pushed = _curve_from_json(curve)
            if ours or pushed is not None:
                self._stations[station_id] = self._new(station_id, ours, pushed)

    def _new(self, station_id: str, ours: dict[int, vm.MonitorSpec] | None = None,
             der_curve: der.DerCurve | None = None) -> _Station:
        phases = self._config.station_info(station_id).phases
        return _Station(station_id, tuple(range(1, phases + 1)), ours or {}, der_curve)

    # what the runtime tells ------------------------------------------------------------------
    def capabilities_known(self, station_id: str, link: ChargerLink, caps: Capabilities) -> None:
        """The station's capabilities are known on this connection (its EVSEs with them)."""
        station = self._stations.get(station_id)
        if station is None:
            if self._rule is None:
                return  # nothing to set, and nothing of ours to clear
            station = self._stations[station_id] = self._new(station_id)
        if station.link is not link:
            station.confirmed, station.others = set(), set()
            station.der_supported, station.der_checked = None, False
            station.retry_s = 0.0
        station.link = link
        station.evse_ids = tuple(range(1, max(caps.connectors, 1) + 1))
        if self._rule is not None:
            if station.monitors == "off":
                station.monitors, station.monitors_detail = "pending", "after its limits"
            if station.der == "off":
                station.der, station.der_detail = "pending", "after its limits"
        if station.task is None or station.task.done():
            station.task = asyncio.get_running_loop().create_task(
                self._run(station), name=f"voltage controls {station_id}")
        station.wake.set()

    def disconnected(self, station_id: str, link: ChargerLink) -> None:
        station = self._stations.get(station_id)
        if station is None or station.link is not link:
            return
        station.link = None
        if not station.ours and station.der_curve is None:
            # it holds nothing of ours: nothing kept (ids that come and go, as with open
            # admission, must not grow this); its next connection starts afresh
            del self._stations[station_id]
            if station.task is not None:
                station.task.cancel()

    def view(self, station_id: str) -> StationControls | None:
        station = self._stations.get(station_id)
        return station.view() if station is not None else None

    async def close(self) -> None:
        await cancel_and_wait(s.task for s in self._stations.values() if s.task)

    # the task ----------------------------------------------------------------------------------
    async def _run(self, station: _Station) -> None:
        while True:
            await station.wake.wait()
            station.wake.clear()
            link = station.link
            if link is None:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BOOT_WAIT_S):
                    await link.registered.wait()
            await self._limits_sent()  # their limits first: these calls can wait
            if station.link is not link:
                continue
            try:
                await self._reconcile_monitors(station, link)
                await self._reconcile_der(station, link)
            except CallFailed as error:
                station.retry_s = min(station.retry_s * 2 or self._retry_s, MAX_RETRY_S)
                log.info("%s: voltage controls not settled (%s); again in %.0f s",
                         station.station_id, error, station.retry_s)
                why = f"not settled ({error}); again in {station.retry_s:.0f} s"
                if station.monitors == "pending":
                    station.monitors_detail = why
                if station.der == "pending":
                    station.der_detail = why
                asyncio.get_running_loop().call_later(station.retry_s, station.wake.set)
            except Exception:  # a bug here must not end the station's task, nor the bridge
                log.exception("%s: voltage controls failed", station.station_id)
            else:
                station.retry_s = 0.0

    def _save(self, station: _Station) -> None:
        self._store.save_voltage_controls(station.station_id, _monitors_to_json(station.ours),
                                          _curve_to_json(station.der_curve))

    # monitors ----------------------------------------------------------------------------------
    async def _reconcile_monitors(self, station: _Station, link: ChargerLink) -> None:
        sid = station.station_id
        if self._rule is None:
            await self._clear(station, link, list(station.ours))
            station.monitors, station.monitors_detail = "off", "no voltage rule"
            return
        sets = vm.candidates(station.evse_ids, station.lines)
        index = _first_candidate(sets, station.ours.values())
        refused: list[tuple[vm.MonitorSpec, str]] = []
        desired: list[vm.MonitorSpec] = []
        while index < len(sets):
            desired = vm.desired_monitors(self._rule, self._nominal_v, sets[index])
            installed = [vm.InstalledMonitor(i, spec) for i, spec in station.ours.items()]
            await self._clear(station, link, vm.monitor_changes(desired, installed).to_clear)
            held = {station.ours[i].identity() for i in station.confirmed} | station.others
            to_set = [spec for spec in desired if spec.identity() not in held]
            if not to_set:
                break
            outcome = await link.set_voltage_monitors(to_set)
            await self._took(station, link, outcome.installed)
            if outcome.unsupported:
                station.monitors = "not-supported"
                station.monitors_detail = f"the station has no variable monitoring " \
                                          f"({outcome.refused[0][1]})"
                log.info("%s: %s; the volt-watt rule reads its meter values", sid,
                         station.monitors_detail)
                return
            if outcome.variable_unknown:
                log.info("%s: no %s voltage variable; trying the next", sid,
                         sets[index][0].describe())
                index += 1
                continue
            await self._duplicates(station, link,
                                   [spec for spec, why in outcome.refused if why == "Duplicate"])
            refused = [(spec, why) for spec, why in outcome.refused if why != "Duplicate"]
            break
        if index >= len(sets):
            station.monitors = "not-supported"
            station.monitors_detail = "no voltage variable it knows (ACVoltage of its EVSEs " \
                                      "or of the station)"
            log.info("%s: %s; the volt-watt rule reads its meter values", sid,
                     station.monitors_detail)
            return
        wanted = {spec.identity() for spec in desired}
        held_now = sum(1 for i in station.confirmed if station.ours[i].identity() in wanted) \
            + len(station.others & wanted)
        statuses = ", ".join(sorted({why for _, why in refused}))
        where = ", ".join(dict.fromkeys(spec.variable.describe() for spec in desired))
        if held_now == 0:
            station.monitors = "refused"
            station.monitors_detail = f"the station refused them ({statuses})"
            log.info("%s: refuses voltage monitors (%s); the volt-watt rule reads its meter "
                     "values", sid, statuses)
            return
        station.monitors = "installed"
        station.monitors_detail = f"{held_now} threshold monitors on {where}"
        if refused:
            station.monitors_detail += f"; {len(refused)} refused ({statuses})"

    async def _took(self, station: _Station, link: ChargerLink,
                    installed: Sequence[vm.InstalledMonitor]) -> None:
        """Keep what the station took; stored before anything else, so a restart finds it.
        A station that took a second copy of one of ours (it has no ``Duplicate``) keeps the
        new one: the old is cleared."""
        if not installed:
            return
        copies = []
        for monitor in installed:
            identity = monitor.spec.identity()
            copies += [i for i, spec in station.ours.items() if spec.identity() == identity]
            station.ours[monitor.monitor_id] = monitor.spec
            station.confirmed.add(monitor.monitor_id)
        self._save(station)
        await self._clear(station, link, copies)

    async def _duplicates(self, station: _Station, link: ChargerLink,
                          specs: Sequence[vm.MonitorSpec]) -> None:
        """The station holds monitors identical to these: ours from before (confirmed), or
        another party's, whose events come all the same and which are never ours to clear."""
        if not specs:
            return
        ours = {spec.identity(): i for i, spec in station.ours.items()}
        unknown = []
        for spec in specs:
            if spec.identity() in ours:
                station.confirmed.add(ours[spec.identity()])
            else:
                unknown.append(spec)
        if unknown:
            found = await link.read_voltage_monitors(unknown)
            log.info("%s: holds %d monitor(s) identical to ours under ids drbridge did not "
                     "set (%s); left as they are", station.station_id, len(unknown),
                     ", ".join(str(m.monitor_id) for m in found) or "not listed")
            station.others.update(spec.identity() for spec in unknown)

    async def _clear(self, station: _Station, link: ChargerLink, monitor_ids: Iterable[int]
                     ) -> None:
        ids = sorted(set(monitor_ids) & station.ours.keys())
        if not ids:
            return
        gone = await link.clear_voltage_monitors(ids)
        for monitor_id in gone:
            station.ours.pop(monitor_id, None)
            station.confirmed.discard(monitor_id)
        self._save(station)
        if set(ids) - gone:
            raise CallFailed(f"monitors {sorted(set(ids) - gone)} not cleared")

    # DER control -------------------------------------------------------------------------------
    async def _reconcile_der(self, station: _Station, link: ChargerLink) -> None:
        sid = station.station_id
        if self._rule is None:
            await self._clear_der(station, link)
            station.der, station.der_detail = "off", "no voltage rule"
            return
        if station.der_supported is None:
            station.der_supported = await link.read_der_support()
        if not station.der_supported:
            station.der = "not-supported"
            station.der_detail = "no DER controller doing VoltWatt (OCPP 2.1 ACDERCtrlr)"
            if station.der_curve is not None:  # another firmware: it holds none of ours now
                station.der_curve = None
                self._save(station)
            return
        # PctMaxW is of the station's maximum: the minimum current is that share of it (the
        # station's maximum current is validated above zero)
        info = self._config.station_info(sid)
        min_share = min(1.0, self._config.policy.allocation.min_current_a / info.max_current_a)
        curve = der.volt_watt_curve(self._rule, min_share)
        if isinstance(curve, der.Unexpressible):
            await self._clear_der(station, link)
            station.der, station.der_detail = "unexpressible", curve.reason
            return
        if station.der_checked and station.der_curve is not None \
                and station.der_curve.same_as(curve) and station.der in ("in-force", "superseded"):
            return
        report = await link.read_der_control()
        if report.control is None or not report.control.curve.same_as(curve):
            reply = await link.set_der_control(curve)
            if reply.status not in ("accepted", "superseded"):
                station.der = "not-supported" if reply.status == "not-supported" else "refused"
                station.der_detail = f"SetDERControl {reply.status}" + (
                    f": {reply.detail}" if reply.detail else "")
                log.info("%s: %s; the volt-watt rule stays central", sid, station.der_detail)
                return
            station.der_curve = curve
            self._save(station)
            report = await link.read_der_control()
        station.der_checked = True
        if report.control is None or not report.control.curve.same_as(curve):
            station.der = "mismatch"
            station.der_detail = "it does not report our curve back" if report.control is None \
                else "it reports another curve than ours"
            log.warning("%s: DER control %s; the volt-watt rule stays central", sid,
                        station.der_detail)
            return
        if station.der_curve is None or not station.der_curve.same_as(curve):
            station.der_curve = curve  # held from an earlier run whose record was lost
            self._save(station)
        if report.control.superseded:
            station.der = "superseded"
            station.der_detail = "another party's VoltWatt control of higher priority is " \
                                 "in force; the central rule holds"
        else:
            station.der = "in-force"
            station.der_detail = f"VoltWatt curve {_points(curve)}, response " \
                                 f"{curve.response_time_s:g} s"
        log.info("%s: DER control %s (%s)", sid, station.der, station.der_detail)

    async def _clear_der(self, station: _Station, link: ChargerLink) -> None:
        if station.der_curve is None:
            return
        reply = await link.clear_der_control()
        if reply.status not in ("accepted", "not-found", "not-supported"):
            raise CallFailed(f"ClearDERControl {reply.status} {reply.detail}".strip())
        station.der_curve = None
        self._save(station)


def _first_candidate(sets: Sequence[tuple[vm.VoltageVariable, ...]],
                     ours: Iterable[vm.MonitorSpec]) -> int:
    """Where to start among the candidate variables: those ours are on, if any (the
    station took them before), else the best."""
    used = {spec.variable.key() for spec in ours}
    if used:
        for index, variables in enumerate(sets):
            if used <= {v.key() for v in variables}:
                return index
    return 0


def _points(curve: der.DerCurve) -> str:
    return " ".join(f"{x:g}%:{y:g}%" for x, y in curve.points)


def _monitors_to_json(ours: dict[int, vm.MonitorSpec]) -> str:
    return json.dumps([[i, s.variable.component, s.variable.evse_id, s.variable.instance,
                        s.kind, s.volts, s.severity, s.why] for i, s in sorted(ours.items())])


def _monitors_from_json(text: str | None) -> dict[int, vm.MonitorSpec]:
    try:
        return {int(i): vm.MonitorSpec(vm.VoltageVariable(component, evse, instance), kind,
                                       float(volts), int(severity), why)
                for i, component, evse, instance, kind, volts, severity, why in
                json.loads(text or "[]")}
    except (TypeError, ValueError):
        log.warning("stored voltage monitors unreadable (%.100r); none assumed", text)
        return {}


def _curve_to_json(curve: der.DerCurve | None) -> str | None:
    return None if curve is None else json.dumps(
        {"points": curve.points, "response_time_s": curve.response_time_s,
         "hysteresis_delay_s": curve.hysteresis_delay_s,
         "hysteresis_gradient": curve.hysteresis_gradient})


def _curve_from_json(text: str | None) -> der.DerCurve | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
        return der.DerCurve(tuple((float(x), float(y)) for x, y in data["points"]),
                            float(data["response_time_s"]), data["hysteresis_delay_s"],
                            data["hysteresis_gradient"])
    except (TypeError, ValueError, KeyError):
        # unreadable: assume ours may be there, so that removing the rule still clears it
        return der.DerCurve(())
