"""Shared pieces of the local-controller tests: a site whose bridge forwards to a test CSMS."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import SiteHarness

from bridge.sim.csms import UpstreamCsms
from bridge.sim.station import SimulatedStation, StationSpec
from bridge.sim.station201 import SimulatedStation201


def upstream_config(csms: UpstreamCsms, **keys: Any) -> str:
    """The ``ocpp.upstream`` section (short timeouts: the tests compress time)."""
    settings = {"call_timeout_s": 1.5, "reconnect_min_s": 0.2, "reconnect_max_s": 0.5, **keys}
    lines = [f"  url: {csms.url}"] + [f"  {key}: {value}" for key, value in settings.items()]
    return "upstream:\n" + "\n".join(lines) + "\n"


def add_station201(site: SiteHarness, station_id: str, **spec: Any) -> SimulatedStation201:
    station = SimulatedStation201(StationSpec(station_id=station_id, **spec), site.url)
    site.stations.append(station)  # type: ignore[arg-type]
    site._station_tasks.append(asyncio.create_task(station.run()))
    return station


def add_station(site: SiteHarness, station_id: str, **spec: Any) -> SimulatedStation:
    return site.add_station(station_id, **spec)
