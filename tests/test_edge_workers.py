"""The OCPP edge in worker processes (``ocpp.workers``): real stations over real websockets
to the workers, every frame relayed to the bridge and back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import websockets
from conftest import SiteHarness, wait_steered, wait_until, worst_site_draw_w
from test_ocpp_edge import OCPP16, exchange
from test_ocpp_security import (
    PASSWORDS,
    WRONG,
    basic,
    configure,
    heartbeat_works,
    refused_status,
    start_station,
    with_workers,
)

from bridge.config import load_config
from bridge.sim.station import SimulatedStation, StationSpec
from bridge.sim.station201 import SimulatedStation201
from policies.validation import InvalidDocument


def add_201(site: SiteHarness, station_id: str, **spec: object) -> SimulatedStation201:
    station = SimulatedStation201(StationSpec(station_id=station_id, **spec), site.url)
    site.stations.append(station)  # type: ignore[arg-type]
    site._station_tasks.append(asyncio.create_task(station.run()))
    return station


async def test_stations_of_each_version_are_steered_through_two_workers(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=22, ocpp_extra="workers: 2")
    assert bridge.ocpp.edge is not None and len(bridge.ocpp.edge.pids) == 2
    stations: list[SimulatedStation | SimulatedStation201] = [
        site.add_station("CP0"), add_201(site, "CP1"), site.add_station("CP2"),
        add_201(site, "CP3")]
    await wait_until(lambda: all(s.transaction_id for s in stations), what="sessions")
    await wait_steered(bridge, *(s.spec.station_id for s in stations))
    assert sum(s.composite_limit_w() for s in stations) <= 22_000


async def test_a_malformed_frame_gets_a_callerror_through_a_worker_and_the_link_lives(
        site: SiteHarness):
    await site.start_bridge(ocpp_extra="workers: 1")
    async with websockets.connect(f"{site.url}/RAW1", subprotocols=OCPP16) as ws:
        reply = await exchange(ws, "this is not json")
        assert reply[:3] == [4, "-1", "FormationViolation"]
        # bad UTF-8 in a binary frame is read as ever: not JSON, and the link lives
        reply = await exchange(ws, b"\xff\xfe[2]")
        assert reply[:3] == [4, "-1", "FormationViolation"]
        reply = await exchange(ws, json.dumps([2, "m3", "Heartbeat", {}]))
        assert reply[0] == 3 and reply[1] == "m3" and "currentTime" in reply[2]


async def test_passwords_and_unknown_stations_are_judged_by_the_bridge(site: SiteHarness):
    configure(site, "profile: 1")
    with_workers(site, 2)
    await site.start_bridge()
    station = start_station(site, "CP-1", site.url,
                            additional_headers=basic("CP-1", PASSWORDS["CP-1"]))
    await wait_until(lambda: station.booted, what="CP-1 booted with its password")
    url = f"{site.url}/CP-1"
    assert await refused_status(url, additional_headers=basic("CP-1", WRONG)) == 401
    assert await refused_status(url) == 401
    assert await refused_status(f"{site.url}/NOT-LISTED",
                                additional_headers=basic("NOT-LISTED", WRONG)) == 404
    assert await heartbeat_works(url, additional_headers=basic("CP-1", PASSWORDS["CP-1"]))


async def test_a_station_that_connects_again_replaces_its_old_connection(site: SiteHarness):
    bridge = await site.start_bridge(ocpp_extra="workers: 2")
    first = await websockets.connect(f"{site.url}/TWICE", subprotocols=OCPP16)
    await wait_until(lambda: "TWICE" in bridge.ocpp.links, what="the first connection")
    async with websockets.connect(f"{site.url}/TWICE", subprotocols=OCPP16) as second:
        # the bridge closed the first through its worker, with its reason
        with pytest.raises(websockets.ConnectionClosedOK) as closed:
            async with asyncio.timeout(10):
                while True:
                    await first.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == \
            "replaced by a new connection"
        reply = await exchange(second, json.dumps([2, "hb", "Heartbeat", {}]))
        assert reply[:2] == [3, "hb"]


async def test_the_cap_holds_by_the_stations_draw_when_a_worker_dies(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=22, ocpp_extra="workers: 2")
    edge = bridge.ocpp.edge
    assert edge is not None
    stations = [site.add_station(f"CP{i}") for i in range(4)]  # 11 kW EVs, 22 kW cap
    await wait_until(lambda: all(s.transaction_id for s in stations), what="sessions")
    await wait_steered(bridge, *(s.spec.station_id for s in stations))
    # From here (a station holding no profile of ours yet runs at its own maximum, which
    # no central system can prevent before its first profile)
    stop = asyncio.Event()
    worst = asyncio.create_task(worst_site_draw_w(site, stop))
    links = dict(bridge.ocpp.links)
    killed = links["CP0"].connection.worker_pid  # the worker that holds CP0, at least
    os.kill(killed, signal.SIGKILL)
    # its stations lost their connections and came back (to the other worker meanwhile) ...
    await wait_until(lambda: bridge.ocpp.links.get("CP0") not in (None, links["CP0"]),
                     timeout=20, what="CP0 linked again")
    await wait_until(lambda: all(s.spec.station_id in bridge.ocpp.links for s in stations),
                     timeout=20, what="every station linked")
    # ... and the dead worker was started again
    await wait_until(lambda: len(edge.pids) == 2 and killed not in edge.pids, timeout=20,
                     what="the worker restarted")
    assert edge.restarts == 1
    await wait_steered(bridge, *(s.spec.station_id for s in stations))
    await wait_until(lambda: sum(s.power_w for s in stations) > 15_000, what="charging")
    stop.set()
    assert await worst <= 22_000


async def test_stopping_the_bridge_stops_its_workers(site: SiteHarness):
    bridge = await site.start_bridge(ocpp_extra="workers: 2")
    assert bridge.ocpp.edge is not None
    pids = list(bridge.ocpp.edge.pids)
    station = site.add_station("CP0")
    await wait_until(lambda: station.booted, what="a station booted")
    await site.stop_bridge()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_on_windows_are_refused_with_the_key_and_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent("""\
        ven: {vtn_url: "http://127.0.0.1:8080/OpenADR2/Simple/2.0b", ven_name: site}
        site: {capacity_kw: 22}
        ocpp:
          workers: 2
        """))
    assert load_config(path).model.ocpp.workers == 2
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(InvalidDocument) as refused:
        load_config(path)
    assert "site.yaml:4: ocpp.workers:" in str(refused.value)
    assert "POSIX" in str(refused.value) and "set 0 on Windows" in str(refused.value)
