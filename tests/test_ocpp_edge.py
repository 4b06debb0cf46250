"""The OCPP edge against stations that misbehave, over real websockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from conftest import SiteHarness, wait_until
from websockets.typing import Subprotocol

from bridge.sim.station import SimulatedStation, StationSpec

OCPP16 = [Subprotocol("ocpp1.6")]


async def raw_station(site: SiteHarness, station_id: str) -> websockets.ClientConnection:
    return await websockets.connect(f"{site.url}/{station_id}", subprotocols=OCPP16)


async def exchange(ws: websockets.ClientConnection, frame: str) -> list[Any]:
    await ws.send(frame)
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if reply[0] in (3, 4):  # skip the bridge's own calls (GetConfiguration...)
            return reply


async def test_malformed_frames_get_a_callerror_and_the_link_lives(site: SiteHarness):
    await site.start_bridge()
    async with await raw_station(site, "RAW1") as ws:
        reply = await exchange(ws, "this is not json")
        assert reply[:3] == [4, "-1", "FormationViolation"]
        reply = await exchange(ws, json.dumps({"not": "a list"}))
        assert reply[0] == 4 and reply[2] == "ProtocolError"
        # a schema violation: Heartbeat takes no fields, BootNotification needs two
        bad_boot = [2, "m1", "BootNotification", {"chargePointModel": 7}]
        reply = await exchange(ws, json.dumps(bad_boot))
        assert reply[0] == 4 and reply[1] == "m1"
        assert reply[2] in ("FormationViolation", "TypeConstraintViolation",
                            "OccurenceConstraintViolation", "PropertyConstraintViolation")
        reply = await exchange(ws, json.dumps([2, "m2", "NoSuchAction", {}]))
        assert reply[0] == 4 and reply[1] == "m2" and reply[2] in ("NotImplemented", "NotSupported")
        # ... and the connection still serves a good call
        reply = await exchange(ws, json.dumps([2, "m3", "Heartbeat", {}]))
        assert reply[0] == 3 and reply[1] == "m3" and "currentTime" in reply[2]


async def test_listed_stations_only(site: SiteHarness):
    await site.start_bridge(extra="  # stations listed below\n")
    site.config_path.write_text(site.config_path.read_text().replace(
        "  call_timeout_s: 3\n", "  call_timeout_s: 3\n  stations:\n    - id: CP-KNOWN\n"))
    await site.stop_bridge()
    await site.start_bridge()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await raw_station(site, "CP-STRANGER")
    assert refused.value.response.status_code == 404
    async with await raw_station(site, "CP-KNOWN") as ws:
        reply = await exchange(ws, json.dumps([2, "h", "Heartbeat", {}]))
        assert reply[0] == 3


async def test_station_without_the_subprotocol_is_refused(site: SiteHarness):
    await site.start_bridge()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{site.url}/NOPROTO")
    assert refused.value.response.status_code == 400


class RejectingStation(SimulatedStation):
    """Rejects the first few profiles, as a busy or picky charger does."""

    def __init__(self, spec: StationSpec, url: str, rejections: int) -> None:
        super().__init__(spec, url)
        self.rejections = rejections

    def _install(self, connector_id: int, profile: dict[str, Any]) -> str:
        if self.rejections > 0:
            self.rejections -= 1
            return "Rejected"
        return super()._install(connector_id, profile)


async def test_rejected_profile_is_retried_and_recorded(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=20)
    station = RejectingStation(StationSpec("PICKY"), site.url, rejections=2)
    site.stations.append(station)
    task = asyncio.create_task(station.run())
    try:
        await wait_until(lambda: station.installed_profiles != {}, timeout=15,
                         what="the profile after two rejections")
        def statuses() -> list[str]:
            rows = bridge.store.db["profiles"].rows_where("station_id = 'PICKY'", order_by="id")
            return [r["status"] for r in rows][:3]
        await wait_until(lambda: len(statuses()) == 3, what="the profile log written")
        assert statuses() == ["Rejected", "Rejected", "Accepted"]
        await wait_until(lambda: 4_140 <= station.composite_limit_w() <= 20_000,
                         what="its share of the cap")
    finally:
        await station.stop()
        task.cancel()


async def worst_commanded_w(site: SiteHarness, stop: asyncio.Event) -> float:
    """The highest sum of the limits the stations holding our profiles apply, sampled
    every 5 ms until ``stop``."""
    worst = 0.0
    while not stop.is_set():
        commanded = [s for s in site.stations if s.installed_profiles]
        worst = max(worst, sum(s.composite_limit_w() for s in commanded))
        await asyncio.sleep(0.005)
    return worst


async def test_sum_of_station_limits_never_exceeds_the_cap_in_transitions(site: SiteHarness):
    """Stations join, sessions come and go; sample what the stations apply all along.

    Only stations holding one of our profiles count: a station that has just
    connected runs at its own hardware limit until its first profile, which no
    central system can prevent (the planner counts it at that maximum meanwhile).
    """
    await site.start_bridge(capacity_kw=30)
    stop = asyncio.Event()
    watcher = asyncio.create_task(worst_commanded_w(site, stop))
    try:
        first = [site.add_station(f"A{i}", rate_unit="Current") for i in range(3)]
        await wait_until(lambda: all(s.installed_profiles and s.composite_limit_w() >= 4_140
                                     for s in first),
                         what="the first stations' shares")
        later = [site.add_station(f"B{i}", rate_unit="Power") for i in range(3)]
        await wait_until(lambda: all(s.installed_profiles and s.composite_limit_w() >= 4_140
                                     for s in later),
                         what="shares for the later stations")
        first[0].unplug()
        await wait_until(lambda: first[0].composite_limit_w() == 0, what="the unplugged at 0")
        first[0].plug_in()
        await wait_until(lambda: first[0].composite_limit_w() >= 4_140, what="it back again")
    finally:
        stop.set()
    assert await watcher <= 30_000


@pytest.mark.xdist_group("heavy")  # see the Makefile
async def test_the_cap_holds_while_a_boot_storm_settles(site: SiteHarness):
    """Dozens of stations join within seconds, which the bridge plans once the joins pause:
    the stations it commands stay within the cap all along, and every one gets a share.

    The cap leaves room for every station's minimum current (60 x 6 A x 3 phases x 230 V
    = 248 kW), so that each is given a share rather than paused. A station that holds no
    profile of ours runs at its own maximum: it is not counted as having its share.
    """
    await site.start_bridge(capacity_kw=300)
    stop = asyncio.Event()
    watcher = asyncio.create_task(worst_commanded_w(site, stop))
    try:
        stations = []
        for wave in range(10):  # 60 stations over two seconds
            stations += [site.add_station(f"S{wave}{i}", rate_unit="Current") for i in range(6)]
            await asyncio.sleep(0.2)
        # a deadline, not a wait: 60 stations' boots and calls on a loaded machine
        await wait_until(lambda: all(s.installed_profiles and s.composite_limit_w() >= 4_140
                                     for s in stations),
                         timeout=60, what="every station's share")
    finally:
        stop.set()
    assert await watcher <= 300_000
