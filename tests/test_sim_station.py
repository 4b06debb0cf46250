"""The simulated station against a tiny central system over real loopback websockets."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import websockets
from ocpp.exceptions import InternalError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from bridge.sim.station import SimulatedStation, StationSpec

FULL_POWER_W = 16 * 230 * 3  # the default EV draws 16 A on three phases


def iso(dt):
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


async def until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class CentralSystemLink(ChargePoint):
    """Central-system side of one station connection; logs the raw CALLs it receives."""

    def __init__(self, station_id, ws, hub):
        super().__init__(station_id, ws, response_timeout=5)
        self.hub = hub

    async def route_message(self, raw_msg):
        msg = json.loads(raw_msg)
        if msg[0] == 2:
            self.hub.calls.append((self.id, msg[2], msg[3]))
        await super().route_message(raw_msg)

    @on(Action.boot_notification)
    def on_boot(self, **_):
        now = iso(datetime.now(UTC))
        self.hub.boots += 1
        status = "Accepted" if self.hub.boots > self.hub.pending_boots else self.hub.boot_status
        interval = 30 if status == "Accepted" else 1
        return call_result.BootNotification(current_time=now, interval=interval, status=status)

    @on(Action.heartbeat)
    def on_heartbeat(self, **_):
        return call_result.Heartbeat(current_time=iso(datetime.now(UTC)))

    @on(Action.status_notification)
    def on_status(self, **_):
        return call_result.StatusNotification()

    @on(Action.start_transaction)
    def on_start(self, **_):
        self.hub.next_tx += 1
        return call_result.StartTransaction(
            transaction_id=self.hub.next_tx, id_tag_info={"status": "Accepted"}
        )

    @on(Action.stop_transaction)
    def on_stop(self, **_):
        return call_result.StopTransaction(id_tag_info={"status": "Accepted"})

    @on(Action.meter_values)
    def on_meter_values(self, **_):
        if self.hub.fail_meter_values:
            raise InternalError(description="database on fire")
        return call_result.MeterValues()


class Hub:
    def __init__(self):
        self.calls = []  # (station_id, action, payload)
        self.links = {}  # station_id -> latest CentralSystemLink
        self.next_tx = 100
        self.fail_meter_values = False
        self.boot_status = "Accepted"
        self.pending_boots = 1_000_000  # how many boots get boot_status before "Accepted"
        self.boots = 0
        self.url = ""

    def of(self, station_id, action):
        return [p for sid, a, p in self.calls if sid == station_id and a == action]

    async def handler(self, ws):
        link = CentralSystemLink(ws.request.path.strip("/"), ws, self)
        self.links[link.id] = link
        try:
            await link.start()
        except websockets.ConnectionClosed:
            pass

    async def send(self, station_id, payload):
        return await self.links[station_id].call(payload)


@pytest.fixture
async def hub():
    h = Hub()
    async with websockets.serve(h.handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:
        h.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        yield h


@pytest.fixture
async def start_station(hub):
    running = []

    async def start(station_id="CP1", **kwargs):
        spec = StationSpec(station_id=station_id, meter_interval_s=0.2, **kwargs)
        station = SimulatedStation(spec, hub.url)
        running.append((station, asyncio.create_task(station.run())))
        await until(lambda: station.booted and station.transaction_id is not None)
        return station

    yield start
    for station, task in running:
        await station.stop()
        await asyncio.wait_for(task, 5)


def profile(pid, purpose="ChargePointMaxProfile", periods=((0, 10.0),), unit="A", stack=1, tx=None):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    p = {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "startSchedule": iso(start),
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods],
        },
    }
    if tx is not None:
        p["transactionId"] = tx
    return p


async def set_profile(hub, station_id, connector_id, p):
    req = call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=p)
    return (await hub.send(station_id, req)).status


async def test_boots_starts_transaction_and_meters(hub, start_station):
    station = await start_station()
    await until(lambda: hub.of("CP1", "MeterValues"))
    start = hub.of("CP1", "StartTransaction")[0]
    assert start["connectorId"] == 1 and start["idTag"] == "SIMTAG" and start["meterStart"] == 0
    mv = hub.of("CP1", "MeterValues")[0]
    assert mv["connectorId"] == 1 and mv["transactionId"] == station.transaction_id == 101
    (value,) = mv["meterValue"]
    assert value["timestamp"].endswith("Z")
    samples = value["sampledValue"]
    assert {s["context"] for s in samples} == {"Sample.Periodic"}
    assert all(isinstance(s["value"], str) for s in samples)
    by = {}
    for s in samples:
        by.setdefault(s["measurand"], []).append(s)
    assert set(by) == {
        "Power.Active.Import",
        "Energy.Active.Import.Register",
        "Current.Import",
        "Voltage",
    }
    assert by["Power.Active.Import"][0]["unit"] == "W"
    assert float(by["Power.Active.Import"][0]["value"]) == FULL_POWER_W
    assert by["Energy.Active.Import.Register"][0]["unit"] == "Wh"
    assert {s["phase"] for s in by["Current.Import"]} == {"L1", "L2", "L3"}
    assert {float(s["value"]) for s in by["Current.Import"]} == {16.0}
    assert {s["phase"] for s in by["Voltage"]} == {"L1-N", "L2-N", "L3-N"}
    statuses = [p["status"] for p in hub.of("CP1", "StatusNotification")]
    assert statuses[:3] == ["Available", "Preparing", "Charging"]
    await until(lambda: station.energy_wh > 0)


async def test_max_profile_lowers_limit_and_power(hub, start_station):
    station = await start_station()
    assert station.composite_limit_a() == 32.0 and station.power_w == FULL_POWER_W
    assert await set_profile(hub, "CP1", 0, profile(1)) == "Accepted"
    assert station.composite_limit_a() == 10.0
    assert station.composite_limit_w() == 10 * 230 * 3
    assert station.power_w == 10 * 230 * 3
    assert station.installed_profiles[(0, "ChargePointMaxProfile", 1)]["chargingProfileId"] == 1

    # Same id again replaces it; the second period starts an hour in.
    assert await set_profile(hub, "CP1", 0, profile(1, periods=((0, 10.0), (3600, 8.0)))) == (
        "Accepted"
    )
    now = datetime.now(UTC)
    assert station.composite_limit_a(at=now + timedelta(seconds=60)) == 10.0
    assert station.composite_limit_a(at=now + timedelta(seconds=3601)) == 8.0
    assert station.composite_limit_a(at=now - timedelta(seconds=30)) == 32.0  # before start
    assert len(station.installed_profiles) == 1

    # Below 6 A the EV pauses and the station reports SuspendedEVSE.
    assert await set_profile(hub, "CP1", 0, profile(2, periods=((0, 4.0),), stack=2)) == "Accepted"
    assert station.power_w == 0.0
    await until(lambda: hub.of("CP1", "StatusNotification")[-1]["status"] == "SuspendedEVSE")


async def test_rate_unit_must_match_station(hub, start_station):
    amps_only = await start_station("CUR", rate_unit="Current")
    watts_only = await start_station("PWR", rate_unit="Power")
    w_profile = profile(1, unit="W", periods=((0, 6900.0),))
    a_profile = profile(2, unit="A", periods=((0, 12.0),))
    assert await set_profile(hub, "CUR", 0, w_profile) == "Rejected"
    assert await set_profile(hub, "PWR", 0, w_profile) == "Accepted"
    assert await set_profile(hub, "PWR", 0, a_profile) == "Rejected"
    assert await set_profile(hub, "CUR", 0, a_profile) == "Accepted"
    assert watts_only.composite_limit_a() == pytest.approx(10.0)
    assert amps_only.composite_limit_a() == 12.0

    keys = ["ChargingScheduleAllowedChargingRateUnit", "Nope"]
    conf = await hub.send("PWR", call.GetConfiguration(key=keys))
    assert conf.configuration_key == [
        {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Power"}
    ]
    assert conf.unknown_key == ["Nope"]


async def test_tx_profile_rules_and_clear_by_purpose(hub, start_station):
    station = await start_station()
    tx = station.transaction_id
    assert await set_profile(hub, "CP1", 1, profile(1, "TxProfile", ((0, 8.0),))) == "Rejected"
    assert await set_profile(hub, "CP1", 1, profile(1, "TxProfile", tx=tx + 1)) == "Rejected"
    assert await set_profile(hub, "CP1", 0, profile(9, stack=9)) == "Rejected"  # > max stack
    assert await set_profile(hub, "CP1", 1, profile(3, "ChargePointMaxProfile")) == "Rejected"
    assert await set_profile(hub, "CP1", 1, profile(1, "TxProfile", ((0, 8.0),), tx=tx)) == (
        "Accepted"
    )
    assert await set_profile(hub, "CP1", 1, profile(2, "TxDefaultProfile", ((0, 12.0),))) == (
        "Accepted"
    )
    assert await set_profile(hub, "CP1", 0, profile(3, periods=((0, 20.0),))) == "Accepted"
    assert station.composite_limit_a() == 8.0  # TxProfile overrides TxDefaultProfile

    clear = call.ClearChargingProfile(charging_profile_purpose="TxDefaultProfile")
    assert (await hub.send("CP1", clear)).status == "Accepted"
    assert set(station.installed_profiles) == {(1, "TxProfile", 1), (0, "ChargePointMaxProfile", 1)}
    assert (await hub.send("CP1", clear)).status == "Unknown"
    assert (await hub.send("CP1", call.ClearChargingProfile(id=1))).status == "Accepted"
    assert station.composite_limit_a() == 20.0


async def test_drop_connection_reconnects_and_keeps_state(hub, start_station):
    station = await start_station()
    assert await set_profile(hub, "CP1", 0, profile(1)) == "Accepted"
    tx = station.transaction_id
    await station.drop_connection()
    await until(lambda: len(hub.of("CP1", "BootNotification")) == 2 and station.booted)
    assert station.transaction_id == tx
    assert list(station.installed_profiles) == [(0, "ChargePointMaxProfile", 1)]
    assert len(hub.of("CP1", "StartTransaction")) == 1
    seen = len(hub.of("CP1", "MeterValues"))
    await until(lambda: len(hub.of("CP1", "MeterValues")) > seen)
    assert hub.of("CP1", "MeterValues")[-1]["transactionId"] == tx


async def test_reboot_restarts_session_and_keeps_profiles(hub, start_station):
    station = await start_station()
    assert await set_profile(hub, "CP1", 0, profile(1)) == "Accepted"
    old_tx = station.transaction_id
    await station.reboot()
    await until(lambda: station.transaction_id not in (None, old_tx))
    assert len(hub.of("CP1", "BootNotification")) == 2
    (stop,) = hub.of("CP1", "StopTransaction")
    assert stop["transactionId"] == old_tx and stop["reason"] == "PowerLoss"
    assert station.composite_limit_a() == 10.0


async def test_unplug_and_plug_in(hub, start_station):
    station = await start_station()
    old_tx = station.transaction_id
    station.unplug()
    await until(lambda: hub.of("CP1", "StopTransaction"))
    stop = hub.of("CP1", "StopTransaction")[0]
    assert stop["reason"] == "EVDisconnected" and stop["transactionId"] == old_tx
    assert isinstance(stop["meterStop"], int)
    await until(lambda: hub.of("CP1", "StatusNotification")[-1]["status"] == "Available")
    assert station.power_w == 0.0 and station.transaction_id is None
    station.plug_in()
    await until(lambda: len(hub.of("CP1", "StartTransaction")) == 2)
    await until(lambda: station.transaction_id not in (None, old_tx))


async def test_get_composite_schedule(hub, start_station):
    station = await start_station()
    assert await set_profile(hub, "CP1", 0, profile(1, periods=((0, 10.0), (600, 16.0)))) == (
        "Accepted"
    )
    res = await hub.send("CP1", call.GetCompositeSchedule(connector_id=1, duration=1200))
    assert res.status == "Accepted" and res.connector_id == 1
    sched = res.charging_schedule
    assert sched["charging_rate_unit"] == "A" and sched["duration"] == 1200
    periods = [(p["start_period"], float(p["limit"])) for p in sched["charging_schedule_period"]]
    assert periods[0] == (0, 10.0)
    assert len(periods) == 2 and abs(periods[1][0] - 599) <= 1 and periods[1][1] == 16.0

    watts = call.GetCompositeSchedule(connector_id=1, duration=300, charging_rate_unit="W")
    res = await hub.send("CP1", watts)
    assert [float(p["limit"]) for p in res.charging_schedule["charging_schedule_period"]] == [
        6900.0
    ]
    res = await hub.send("CP1", call.GetCompositeSchedule(connector_id=2, duration=60))
    assert res.status == "Rejected"
    assert station.received[-1][0] == "GetCompositeSchedule"


async def test_trigger_configuration_and_call_errors(hub, start_station):
    station = await start_station()
    hub.fail_meter_values = True  # the station must shrug CallErrors off
    change = call.ChangeConfiguration(key="MeterValueSampleInterval", value="1")
    assert (await hub.send("CP1", change)).status == "Accepted"
    unknown = call.ChangeConfiguration(key="Frobnicate", value="1")
    assert (await hub.send("CP1", unknown)).status == "NotSupported"
    trigger = call.TriggerMessage(requested_message="MeterValues")
    assert (await hub.send("CP1", trigger)).status == "Accepted"

    def triggered():
        return [
            mv
            for mv in hub.of("CP1", "MeterValues")
            if mv["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
        ]

    await until(triggered)
    hub.fail_meter_values = False
    seen = len(hub.of("CP1", "MeterValues"))
    await until(lambda: len(hub.of("CP1", "MeterValues")) > seen)
    assert station.connected and station.booted


async def test_pending_boot_is_retried(hub, start_station):
    hub.boot_status, hub.pending_boots = "Pending", 1  # Pending to the first boot only
    await start_station()
    assert len(hub.of("CP1", "BootNotification")) == 2


async def test_composite_rules(hub, start_station):
    station = await start_station(max_profiles=4)
    now = datetime.now(UTC)
    # Relative: 12 A for the first 600 s of the transaction, nothing after that.
    relative = profile(1, "TxDefaultProfile", ((0, 12.0),))
    relative["chargingProfileKind"] = "Relative"
    del relative["chargingSchedule"]["startSchedule"]
    relative["chargingSchedule"]["duration"] = 600
    assert await set_profile(hub, "CP1", 0, relative) == "Accepted"
    assert station.composite_limit_a() == 12.0
    assert station.composite_limit_a(now + timedelta(seconds=700)) == 32.0

    # A TxDefaultProfile for connector 1 beats connector 0's, whatever the stack levels.
    mine = profile(2, "TxDefaultProfile", ((0, 14.0),), stack=0)
    assert await set_profile(hub, "CP1", 1, mine) == "Accepted"
    assert station.composite_limit_a() == 14.0

    # Daily recurring cap: 8 A for an hour from 10 s ago, every day.
    daily = profile(3, periods=((0, 8.0),))
    daily["chargingProfileKind"] = "Recurring"
    daily["recurrencyKind"] = "Daily"
    daily["chargingSchedule"]["startSchedule"] = iso(now - timedelta(days=1, seconds=10))
    daily["chargingSchedule"]["duration"] = 3600
    assert await set_profile(hub, "CP1", 0, daily) == "Accepted"
    assert station.composite_limit_a() == 8.0
    assert station.composite_limit_a(now + timedelta(seconds=3700)) == 14.0
    assert station.composite_limit_a(now + timedelta(days=1)) == 8.0

    # Expired profiles do not count; the fifth profile is one too many.
    expired = profile(4, periods=((0, 6.0),), stack=2)
    expired["validTo"] = iso(now - timedelta(seconds=1))
    assert await set_profile(hub, "CP1", 0, expired) == "Accepted"
    assert station.composite_limit_a() == 8.0
    assert await set_profile(hub, "CP1", 0, profile(5, stack=3)) == "Rejected"


async def test_remote_stop_start_and_reset(hub, start_station):
    station = await start_station()
    tx = station.transaction_id
    stop = call.RemoteStopTransaction(transaction_id=tx)
    assert (await hub.send("CP1", stop)).status == "Accepted"
    await until(lambda: hub.of("CP1", "StopTransaction"))
    assert station.transaction_id is None and station.power_w == 0.0

    tx_profile = profile(5, "TxProfile", ((0, 7.0),))
    start = call.RemoteStartTransaction(
        id_tag="REMOTE", connector_id=1, charging_profile=tx_profile
    )
    assert (await hub.send("CP1", start)).status == "Accepted"
    await until(lambda: station.transaction_id is not None)
    assert hub.of("CP1", "StartTransaction")[-1]["idTag"] == "REMOTE"
    assert station.composite_limit_a() == 7.0

    second = station.transaction_id
    assert (await hub.send("CP1", call.Reset(type="Hard"))).status == "Accepted"
    await until(lambda: station.transaction_id not in (None, second))
    assert len(hub.of("CP1", "BootNotification")) == 2
    assert [s["reason"] for s in hub.of("CP1", "StopTransaction")] == ["Remote", "HardReset"]
    assert station.installed_profiles == {}  # the TxProfile ended with its transaction
