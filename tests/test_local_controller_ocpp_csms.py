"""Local-controller mode in front of ocpp-csms, an open-source OCPP 1.6J central system of
another project (PyPI, AGPL-3.0-or-later; a test dependency only, never shipped with
drbridge). It runs in the test process on its own aiohttp server on loopback; what it
recorded is read back through its own API: its charge points, its transactions and the
events it emits. Its operator calls (a charging profile, a remote stop and start) reach
the station through drbridge, and drbridge's DR limit holds, judged by what the station
draws.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import SiteHarness, wait_steered, wait_until
from ocpp.v16 import call
from ocpp_csms import (
    AuthorizationStatus,
    BootEvent,
    CentralSystem,
    ChargePoint,
    ChargePointEvent,
    MeterValuesEvent,
    TransactionStartedEvent,
    TransactionStoppedEvent,
)

from bridge.app import Bridge
from bridge.sim.station import SimulatedStation

PASSWORDS = {"CP1": "pw-cp1-csms", "CP2": "pw-cp2-csms"}
DR_LIMIT_W = 11_000  # SIMPLE level 2 of the default policy: 25 % of the site's 44 kW
TOLERANCE_W = 100


class Operator:
    """ocpp-csms as the operator runs it, and every event it emitted."""

    def __init__(self) -> None:
        self.events: list[ChargePointEvent] = []

        async def authenticate(charge_point_id: str, password: str | None) -> bool:
            return PASSWORDS.get(charge_point_id) == password

        async def authorize(charge_point: ChargePoint, id_tag: str) -> AuthorizationStatus:
            return AuthorizationStatus.ACCEPTED if id_tag == "ALLOWED" \
                else AuthorizationStatus.INVALID

        self.central = CentralSystem(host="127.0.0.1", port=0, authenticate=authenticate,
                                     authorize=authorize)
        self.central.add_listener(self.events.append)

    def of(self, kind: type[Any], station_id: str) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and
                e.charge_point_id == station_id]

    async def first(self, what: Callable[[], list[Any]], about: str) -> Any:
        await wait_until(lambda: bool(what()), timeout=15, what=about)
        return what()[0]


@pytest.fixture
async def operator() -> AsyncIterator[Operator]:
    operator = Operator()
    async with operator.central:
        yield operator


def add_station(site: SiteHarness, station_id: str, **spec: Any) -> SimulatedStation:
    """A station that logs in with its Basic credentials, which drbridge passes on."""
    station = site.add_station(station_id, **spec)
    token = base64.b64encode(f"{station_id}:{PASSWORDS[station_id]}".encode()).decode()
    station.connect_options = {"additional_headers": {"Authorization": f"Basic {token}"}}
    return station


async def start_site(site: SiteHarness, operator: Operator) -> Bridge:
    bridge = await site.start_bridge(ocpp_extra=(
        f"upstream:\n  url: ws://127.0.0.1:{operator.central.port}/ocpp\n"
        "  call_timeout_s: 5\n  reconnect_min_s: 0.2\n  reconnect_max_s: 1\n"))
    assert bridge.upstream is not None
    return bridge


def within(station: SimulatedStation, watts: float) -> bool:
    """The station applies and draws at most ``watts``, now and over the next minutes."""
    now = datetime.now(UTC)
    return station.power_w <= watts + TOLERANCE_W and all(
        station.composite_limit_w(now + timedelta(seconds=s)) <= watts + TOLERANCE_W
        for s in (2, 30, 300))


def readings(events: list[MeterValuesEvent], transaction_id: int, measurand: str,
             ) -> list[float]:
    return [float(r.value) for e in events if e.transaction_id == transaction_id
            for r in e.readings if r.measurand == measurand]


async def test_boot_authorize_a_metered_session_and_operator_calls_under_a_dr_limit(
        site: SiteHarness, operator: Operator):
    bridge = await start_site(site, operator)
    # plugged in once ocpp-csms has the boot: a start made while the link is still opening
    # (slow on a busy machine) is answered by drbridge under a local id
    station = add_station(site, "CP1", id_tag="ALLOWED", ev_max_current_a=32,
                          plugged_in=False)
    boot = await operator.first(lambda: operator.of(BootEvent, "CP1"), "the boot")
    station.plug_in()
    await wait_steered(bridge, "CP1")
    assert (boot.info.vendor, boot.info.model) == ("drbridge-sim", "sim-1")
    charge_point = operator.central.charge_points["CP1"]

    # the session: started under the id ocpp-csms gave out, which the station got
    started = await operator.first(lambda: operator.of(TransactionStartedEvent, "CP1"),
                                   "the start")
    transaction_id = started.transaction.transaction_id
    assert started.transaction.id_tag == "ALLOWED"
    await wait_until(lambda: station.transaction_id == transaction_id, what="the answer")
    assert set(charge_point.transactions) == {transaction_id}

    # authorize: ocpp-csms's answers to a known and an unknown id tag reach the station
    assert await station.request("Authorize", {"idTag": "ALLOWED"}) == \
        {"idTagInfo": {"status": "Accepted"}}
    assert await station.request("Authorize", {"idTag": "NOBODY"}) == \
        {"idTagInfo": {"status": "Invalid"}}

    # a DR event: the station is held to the limit, and the power it reports, as ocpp-csms
    # received it, says so too
    await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    site.vtn.add_simple_event(site.vtn.ven_id("test-site") or "",
                              datetime.now(UTC) + timedelta(seconds=1),
                              [(timedelta(minutes=10), 2)])
    await wait_until(lambda: within(station, DR_LIMIT_W) and station.power_w > 10_000,
                     timeout=20, what="the DR limit")
    seen = len(operator.of(MeterValuesEvent, "CP1"))
    await wait_until(lambda: len(operator.of(MeterValuesEvent, "CP1")) >= seen + 2,
                     what="meter values under the limit")
    power = readings(operator.of(MeterValuesEvent, "CP1")[seen:], transaction_id,
                     "Power.Active.Import")
    assert power and all(10_000 < watts <= DR_LIMIT_W + TOLERANCE_W for watts in power)

    # the operator raises its own limit (32 A for the whole station): installed, and the DR
    # limit still holds
    answer = await charge_point.async_call(call.SetChargingProfile(
        connector_id=0, cs_charging_profiles={
            "chargingProfileId": 7, "stackLevel": 1,
            "chargingProfilePurpose": "ChargePointMaxProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32.0}]}}))
    assert answer.status == "Accepted"
    assert any(p.get("chargingProfileId") == 7 for p in station.installed_profiles.values())
    await asyncio.sleep(2)
    assert within(station, DR_LIMIT_W) and station.power_w > 10_000

    # the operator stops the session: ocpp-csms closes it with the station's meter reading,
    # having received energy readings that rise to it
    assert await charge_point.async_remote_stop_transaction(transaction_id) == "Accepted"
    stopped = await operator.first(lambda: operator.of(TransactionStoppedEvent, "CP1"),
                                   "the stop")
    assert stopped.transaction.transaction_id == transaction_id
    assert stopped.transaction.meter_stop == int(station.energy_wh)
    energy = readings(operator.of(MeterValuesEvent, "CP1"), transaction_id,
                      "Energy.Active.Import.Register")
    assert len(energy) >= 2 and energy == sorted(energy)
    assert energy[-1] < stopped.transaction.meter_stop + 1  # meterStop: whole Wh
    assert charge_point.transactions == {}

    # and starts another one remotely, under the same limit
    assert await charge_point.async_remote_start_transaction("ALLOWED", 1) == "Accepted"
    await wait_until(lambda: len(operator.of(TransactionStartedEvent, "CP1")) == 2,
                     what="the remote start")
    await wait_until(lambda: station.transaction_id is not None and
                     station.transaction_id != transaction_id, what="the second session")
    await wait_until(lambda: within(station, DR_LIMIT_W) and station.power_w > 10_000,
                     timeout=20, what="the DR limit on the second session")


async def test_a_refused_start_reaches_the_station_which_stops_it(
        site: SiteHarness, operator: Operator):
    """ocpp-csms refuses the start with a transaction id (as 1.6 asks): the station gets
    the refusal, charges nothing and stops the transaction, which ocpp-csms records."""
    bridge = await start_site(site, operator)
    station = add_station(site, "CP2", id_tag="STOLEN")
    await wait_steered(bridge, "CP2")
    stopped = await operator.first(lambda: operator.of(TransactionStoppedEvent, "CP2"),
                                   "the stop of the refused start")
    assert stopped.transaction.id_tag == "STOLEN"
    assert stopped.transaction.id_tag_status == AuthorizationStatus.INVALID
    assert stopped.transaction.stop_reason == "DeAuthorized"
    await asyncio.sleep(1)  # time for a start sent again, which must not come
    assert len(operator.of(TransactionStartedEvent, "CP2")) == 1
    assert station.transaction_id is None and station.power_w == 0
