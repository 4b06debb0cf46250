"""Shared pieces for tests that run the real protocols on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bridge.aio import cancel_and_wait
from bridge.app import Bridge
from bridge.config import Config, load_config
from bridge.sim.station import SimulatedStation, StationSpec, schedule_limit_a
from bridge.sim.vtn import DemoVtn, free_port


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_illegal_transitions() -> Iterator[_Kept]:
    """A station's life moved on an event its phase has no transition for: the bridge logs
    it and serves the station on, and every test fails on it (see bridge.station_life).
    A test that means to cause one takes this fixture and clears its records."""
    kept = _Kept()
    logger = logging.getLogger("bridge.station_life")
    logger.addHandler(kept)
    try:
        yield kept
    finally:
        logger.removeHandler(kept)
    assert not kept.records, "; ".join(r.getMessage() for r in kept.records)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0,
                     what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_steered(bridge: Bridge, *station_ids: str) -> None:
    """Until the bridge has the stations' answers to their profiles: a station installs a
    profile before it answers, so a test that sees it installed may be ahead of the bridge."""
    await wait_until(lambda: all(bridge.view.snapshot().station_status.get(sid) == "steered"
                                 for sid in station_ids),
                     what=f"{', '.join(station_ids)} steered")


def site_config(vtn_url: str, ocpp_port: int, capacity_kw: float = 44, extra: str = "",
                telemetry_interval_s: int = 60, ven_extra: str = "", ocpp_extra: str = "",
                ) -> str:
    ven_lines = textwrap.indent(textwrap.dedent(ven_extra), " " * 10)
    ocpp_lines = textwrap.indent(textwrap.dedent(ocpp_extra), " " * 10)
    return textwrap.dedent(f"""\
        ven:
          vtn_url: {vtn_url}
          ven_name: test-site
{ven_lines}
        ocpp:
          host: 127.0.0.1
          port: {ocpp_port}
          retry_s: 0.5
          call_timeout_s: 3
          meter_interval_s: 1
{ocpp_lines}
        site:
          capacity_kw: {capacity_kw}
        policy: default
        storage:
          path: var/bridge.db
        telemetry:
          interval_s: {telemetry_interval_s}
          stale_after_s: 5
        web:
          port: 0
        """) + extra


@pytest.fixture
async def vtn() -> AsyncIterator[DemoVtn]:
    server = DemoVtn(poll_interval=timedelta(seconds=1))
    await server.start()
    yield server
    await server.stop()


class SiteHarness:
    """A bridge, its config and a fleet of simulated stations, torn down after the test."""

    def __init__(self, tmp_path: Path, vtn: DemoVtn) -> None:
        self.tmp_path = tmp_path
        self.vtn = vtn
        self.ocpp_port = free_port()
        self.config_path = tmp_path / "site.yaml"
        self.bridge: Bridge | None = None
        self._bridge_task: asyncio.Task[None] | None = None
        self.stations: list[SimulatedStation] = []
        self._station_tasks: list[asyncio.Task[None]] = []

    def write_config(self, **kwargs: object) -> Config:
        self.config_path.write_text(site_config(self.vtn.url, self.ocpp_port, **kwargs))
        return load_config(self.config_path)

    async def start_bridge(self, **kwargs: object) -> Bridge:
        config = self.write_config(**kwargs) if kwargs or not self.config_path.exists() \
            else load_config(self.config_path)
        self.bridge = Bridge(config)
        self._bridge_task = asyncio.create_task(self.bridge.run())
        await wait_until(lambda: self.bridge is not None and self.bridge.ocpp.listening,
                         what="the OCPP server")
        return self.bridge

    async def stop_bridge(self) -> None:
        if self.bridge is not None and self._bridge_task is not None:
            self.bridge.stop()
            await self._bridge_task
        self.bridge = self._bridge_task = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ocpp_port}"

    def add_station(self, station_id: str, **spec: object) -> SimulatedStation:
        station = SimulatedStation(StationSpec(station_id=station_id, **spec), self.url)
        self.stations.append(station)
        self._station_tasks.append(asyncio.create_task(station.run()))
        return station

    async def close(self) -> None:
        await asyncio.gather(*(station.stop() for station in self.stations))
        await cancel_and_wait(self._station_tasks)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.stop_bridge(), 30)


async def worst_site_draw_w(site: SiteHarness, stop: asyncio.Event) -> float:
    """The highest sum of what the stations draw (as they report applying it), sampled
    every 5 ms until ``stop``; from before the first station connects."""
    worst = 0.0
    while not stop.is_set():
        worst = max(worst, sum(s.power_w for s in site.stations))
        await asyncio.sleep(0.005)
    return worst


def sent_limit_w(station: SimulatedStation, payload: dict, at: datetime) -> float | None:
    """What a SetChargingProfile the station received lets it draw at ``at`` (None: nothing
    then), whether it still holds it or not."""
    schedule = payload["csChargingProfiles"]["chargingSchedule"]
    start = datetime.fromisoformat(schedule["startSchedule"])
    amps = schedule_limit_a(schedule, (at - start).total_seconds(), station.spec.voltage_v,
                            station.spec.phases)
    return None if amps is None else amps * station.spec.voltage_v * station.spec.phases


@pytest.fixture
async def site(tmp_path: Path, vtn: DemoVtn) -> AsyncIterator[SiteHarness]:
    harness = SiteHarness(tmp_path, vtn)
    yield harness
    await harness.close()
