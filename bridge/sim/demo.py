"""``drbridge demo``: a local VTN, simulated chargers and the bridge, through one DR event.

Everything runs in this process on loopback, over the real protocols: the VTN
is openleadr's server speaking OpenADR 2.0b over HTTP (``--protocol 3``: drbridge's
OpenADR 3.1.0 VTN simulator, with OAuth2 client credentials), the stations are OCPP
1.6J clients over websockets, the bridge is the same code ``drbridge run``
starts, with its SQLite file under ``--workdir``.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import statistics
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from bridge.app import Bridge
from bridge.config import load_config_text
from bridge.sim.station import SimulatedStation, StationSpec
from bridge.sim.vtn import DemoVtn, free_port
from bridge.sim.vtn3 import Vtn3, iso
from bridge.web.port import Snapshot
from policies.model import preset_text

CAPACITY_KW = 66.0
EVENT_LEVEL = 2  # SIMPLE "high": the default policy keeps 25 % of capacity
LEAD = timedelta(seconds=8)  # notice between the event's arrival and its start
DURATION = timedelta(seconds=16)
AFTER = timedelta(seconds=8)
RATE_UNITS = ("Current", "Power", "Current,Power")  # chargers differ; the bridge must serve all
# OpenADR 3: the demo VTN's client, its secret in this variable (never in a config)
SECRET_ENV = "DRBRIDGE_DEMO_OADR3_SECRET"
CLIENT_ID, CLIENT_SECRET = "site-a", "secret-a"
REPORT_EVERY = timedelta(seconds=4)  # OpenADR 3: the event's intervals, each reported


def demo_config(vtn_url: str, ocpp_port: int, web_port: int = 0, protocol: str = "2.0b") -> str:
    openadr3 = textwrap.indent(textwrap.dedent(f"""\
        protocol: "3"
        auth:
          client_id: {CLIENT_ID}
          client_secret_env: {SECRET_ENV}
        poll_interval_s: 1
        """), "  ") if protocol == "3" else ""
    return textwrap.dedent(f"""\
        ven:
          vtn_url: {vtn_url}
          ven_name: demo-site
        """) + openadr3 + textwrap.dedent(f"""\
        ocpp:
          host: 127.0.0.1
          port: {ocpp_port}
          retry_s: 1
          meter_interval_s: 1
        site:
          capacity_kw: {CAPACITY_KW:g}
          voltage_v: 230
          phases: 3
        policy: demo-policy.yaml
        storage:
          path: drbridge.db
        telemetry:
          interval_s: {1 if protocol == "3" else 5}
          stale_after_s: 5
        web:
          port: {web_port}
        """)


def demo_policy() -> str:
    """The `default` preset, with time compressed as the demo's event is: its 16 s stand
    for hours, so a paused session's minute at the minimum current before its full share
    (allocation.resume_s) becomes 3 s."""
    policy = yaml.safe_load(preset_text("default"))
    policy["allocation"]["resume_s"] = 3
    return yaml.safe_dump(policy, sort_keys=False)


@dataclass
class Phase:
    name: str
    loads: list[float]

    def mean_kw(self) -> float:
        return statistics.fmean(self.loads) / 1000 if self.loads else math.nan

    def max_kw(self) -> float:
        return max(self.loads) / 1000 if self.loads else math.nan


def _row(t: float, label: str, snap: Snapshot, ids: list[str]) -> str:
    limits = " ".join(
        f"{snap.station_limits_w.get(i, math.nan) / 1000:4.1f}"
        if not math.isnan(snap.station_limits_w.get(i, math.nan)) else "   -" for i in ids
    )
    return (f"{t:5.0f}s {label:<8} cap {snap.site_limit_w / 1000:5.1f} kW  "
            f"load {snap.load_w / 1000:5.1f} kW | {limits}")


class _Vtn20b:
    """The demo's OpenADR 2.0b VTN: openleadr's server."""

    name = "OpenADR 2.0b"

    def __init__(self) -> None:
        self.server = DemoVtn()
        self.url = ""

    async def start(self) -> None:
        await self.server.start()
        self.url = self.server.url

    async def stop(self) -> None:
        await self.server.stop()

    def ready(self, bridge: Bridge) -> bool:
        return self.server.ven_id("demo-site") is not None

    async def issue(self, start: datetime) -> str:
        ven_id = self.server.ven_id("demo-site")
        assert ven_id is not None
        return self.server.add_simple_event(ven_id, start, [(DURATION, EVENT_LEVEL)],
                                            event_id="demo-event-1")

    def answered(self, bridge: Bridge, event_id: str) -> str | None:
        opts = [o for o in self.server.received.opts if o[1] == event_id]
        return str(opts[0][2]) if opts else None

    def reports(self, event_id: str) -> list[float]:
        """The site load values (W) that reached the VTN."""
        return [r[3] for r in self.server.received.reports]


class _Vtn3:
    """The demo's OpenADR 3.1.0 VTN: drbridge's simulator, OAuth2 client credentials."""

    name = "OpenADR 3.1.0"

    def __init__(self) -> None:
        self.server = Vtn3(port=free_port())
        self.url = self.server.url
        self.program = self.server.add_program("demo-program")

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    def ready(self, bridge: Bridge) -> bool:
        return bridge.ven.registration is not None

    async def issue(self, start: datetime) -> str:
        count = DURATION // REPORT_EVERY
        return await self.server.add_event({
            "programID": self.program, "eventName": "demo-event-1",
            "intervalPeriod": {"start": iso(start),
                               "duration": f"PT{REPORT_EVERY.seconds}S"},
            "intervals": [{"id": k, "payloads": [{"type": "SIMPLE", "values": [EVENT_LEVEL]}]}
                          for k in range(count)],
            # the site's mean load over each interval, reported after each
            "reportDescriptors": [{"payloadType": "DEMAND", "readingType": "MEAN",
                                   "units": "KW", "startInterval": 0, "numIntervals": 1,
                                   "frequency": 1, "repeat": -1}]})

    def answered(self, bridge: Bridge, event_id: str) -> str | None:
        known = bridge.dr.events.get(event_id)
        return f"{known.opt} (OpenADR 3 has no opt message)" if known else None

    def reports(self, event_id: str) -> list[float]:
        return [interval["payloads"][0]["values"][0] * 1000
                for report in self.server.reports_for(event_id)
                for resource in report["resources"] if resource["resourceName"] == "demo-site"
                for interval in resource["intervals"]]


async def run_demo(stations: int = 12, workdir: Path = Path("var/demo"),
                   web_port: int = 0, linger_s: float = 0, protocol: str = "2.0b") -> int:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    vtn: _Vtn20b | _Vtn3 = _Vtn3() if protocol == "3" else _Vtn20b()
    if protocol == "3":
        os.environ.setdefault(SECRET_ENV, CLIENT_SECRET)  # the demo VTN's own client
    await vtn.start()
    config_path = workdir / "demo-site.yaml"
    (workdir / "demo-policy.yaml").write_text(demo_policy())
    config_path.write_text(demo_config(vtn.url, free_port(), web_port, protocol))
    config = load_config_text(config_path.read_text(), config_path)
    bridge = Bridge(config)
    bridge_task = asyncio.create_task(bridge.run())
    await asyncio.sleep(0.3)
    url = f"ws://127.0.0.1:{config.model.ocpp.port}"
    fleet = [
        SimulatedStation(StationSpec(station_id=f"CP{n + 1:02d}", rate_unit=RATE_UNITS[n % 3],
                                     ev_max_current_a=16.0), url)
        for n in range(stations)
    ]
    fleet_tasks = [asyncio.create_task(s.run()) for s in fleet]
    ids = [s.spec.station_id for s in fleet]
    print(f"drbridge demo: {vtn.name} VTN at {vtn.url}, {stations} OCPP 1.6J chargers "
          f"(EVs of 11 kW each), site capacity {CAPACITY_KW:g} kW, policy 'default'")
    print(f"config: {config_path}   database: {config.storage_path}")
    if bridge.web is not None:
        await asyncio.wait_for(bridge.web.ready.wait(), 10)
        print(f"dashboard: {bridge.web.url}")
    print(f"{'':6} {'':8} {'':29}   station limits, kW: {' '.join(i[-4:] for i in ids)}")
    t0 = asyncio.get_running_loop().time()

    def clock() -> float:
        return asyncio.get_running_loop().time() - t0

    phases = {name: Phase(name, []) for name in ("before", "during", "after")}
    try:
        ready = False
        while not ready or clock() < 6:
            ready = vtn.ready(bridge)
            snap = bridge.view.snapshot()
            print(_row(clock(), "-", snap, ids))
            if clock() > 4:
                phases["before"].loads.append(snap.load_w)
            await asyncio.sleep(1)
        start = datetime.now(UTC).replace(microsecond=0) + LEAD
        event_id = await vtn.issue(start)
        print(f"{clock():5.0f}s VTN issues {event_id}: SIMPLE level {EVENT_LEVEL} "
              f"from {start:%H:%M:%S} for {DURATION.seconds} s")
        end = start + DURATION
        while datetime.now(UTC) < end + AFTER:
            now = datetime.now(UTC)
            snap = bridge.view.snapshot()
            in_event = start <= now < end
            label = "EVENT" if in_event else ("pending" if now < start else "restored")
            # Meter values arrive once a second: judge the cap from one second into the event.
            if start + timedelta(seconds=1.5) <= now < end:
                phases["during"].loads.append(snap.load_w)
            elif now < start:
                phases["before"].loads.append(snap.load_w)
            elif now >= end + timedelta(seconds=3):
                phases["after"].loads.append(snap.load_w)
            print(_row(clock(), label, snap, ids))
            await asyncio.sleep(1)
        if linger_s > 0 and bridge.web is not None:
            print(f"the dashboard stays up for {linger_s:g} s: {bridge.web.url}")
            await asyncio.sleep(linger_s)
    finally:
        for station in fleet:
            await station.stop()
        for task in fleet_tasks:
            task.cancel()
        await asyncio.gather(*fleet_tasks, return_exceptions=True)
        bridge.stop()
        await bridge_task
        await vtn.stop()

    cap_kw = CAPACITY_KW * 0.25
    held = phases["during"].max_kw() <= cap_kw + 0.05
    answer = vtn.answered(bridge, event_id)
    reports = vtn.reports(event_id)
    print()
    print("summary")
    print(f"  site load before   {phases['before'].mean_kw():5.1f} kW (cap {CAPACITY_KW:g} kW)")
    print(f"  site load during   {phases['during'].mean_kw():5.1f} kW mean, "
          f"{phases['during'].max_kw():5.1f} kW max (cap {cap_kw:g} kW)")
    print(f"  site load after    {phases['after'].mean_kw():5.1f} kW")
    print(f"  VEN answered       {answer or 'nothing'}")
    print(f"  telemetry reports  {len(reports)} values reached the VTN"
          + (f", last {reports[-1] / 1000:.1f} kW" if reports else ""))
    print(f"  cap held           {'yes' if held else 'NO'}")
    return 0 if held and answer else 1
