"""The station-events part on its own: what stations say becomes the observed fleet.

Called as the OCPP edge calls it (boots, statuses, transactions, meter values), over a
real SQLite store and dispatcher, with the clock in the test's hands; no network.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.config import Config, load_config_text
from bridge.dispatch import Dispatcher
from bridge.runtime.stations import StationEvents
from bridge.store import Store
from policies.fleet import Session

T0 = datetime(2030, 5, 6, 12, 0, tzinfo=UTC)
STALE_AFTER_S = 5


def site_config(tmp_path: Path) -> Config:
    text = textwrap.dedent(f"""\
        ven: {{vtn_url: "http://127.0.0.1:1/OpenADR2/Simple/2.0b", ven_name: test-site}}
        ocpp: {{host: 127.0.0.1, port: 1}}
        site: {{capacity_kw: 44}}
        storage: {{path: bridge.db}}
        telemetry: {{interval_s: 60, stale_after_s: {STALE_AFTER_S}}}
        web: {{enabled: false}}
        """)
    return load_config_text(text, tmp_path / "site.yaml")


class Parts:
    """A store, a dispatcher and the station-events part over them; ``now`` is the clock."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.now = T0
        self.replans = 0
        self.voltages: list[str] = []
        self.store = Store(config.storage_path)
        self.dispatcher = Dispatcher(self.store, min_current_a=6, retry_s=1,
                                     on_change=lambda: None, clock=self.clock)
        self.fleet = StationEvents(config, self.store, self.dispatcher, self.clock,
                                   request_replan=self.replan, on_voltage=self.voltages.append)

    def clock(self) -> datetime:
        return self.now

    def replan(self) -> None:
        self.replans += 1

    def restart(self) -> Parts:
        """The same store, read by a new run."""
        self.store.flush()
        self.store.close()
        return Parts(self.config)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    made = Parts(site_config(tmp_path))
    yield made
    made.store.close()


def meter_value(at: datetime, power_w: float | None = None, energy_wh: float | None = None,
                volts: float | None = None) -> dict[str, object]:
    sampled: list[dict[str, object]] = []
    if power_w is not None:
        sampled.append({"measurand": "Power.Active.Import", "unit": "W", "value": str(power_w)})
    if energy_wh is not None:
        sampled.append({"measurand": "Energy.Active.Import.Register", "unit": "Wh",
                        "value": str(energy_wh)})
    if volts is not None:
        sampled.append({"measurand": "Voltage", "unit": "V", "phase": "L1-N",
                        "value": str(volts)})
    return {"timestamp": at.isoformat(), "sampledValue": sampled}


def open_transactions(store: Store) -> list[int]:
    return [row["id"] for row in store.open_transactions()]


async def test_boots_statuses_and_transactions_become_the_observed_fleet(parts: Parts):
    fleet = parts.fleet
    fleet.station_booted("CP1", {"vendor": "V", "model": "M"})
    assert parts.store.booted("CP1")
    assert fleet.last_seen["CP1"] == T0
    fleet.status_changed("CP1", 1, "Preparing")
    assert fleet.connector_status[("CP1", 1)] == ("Preparing", T0)

    tx = fleet.transaction_started("CP1", 1, "TAG", 1_000, T0)
    assert fleet.sessions == {tx: Session("CP1", 1, T0)}
    assert open_transactions(parts.store) == [tx]  # stored before it counts
    assert parts.replans == 1

    # the station reboots and starts anew without stopping: the old one is closed
    parts.now = T0 + timedelta(minutes=1)
    again = fleet.transaction_started("CP1", 1, "TAG", 1_500, parts.now)
    assert list(fleet.sessions) == [again]
    assert open_transactions(parts.store) == [again]

    fleet.meter_values("CP1", 1, [meter_value(parts.now, power_w=7_000, energy_wh=2_000)])
    assert fleet.load_w() == 7_000
    assert fleet.stations_load_w(frozenset({"CP1"})) == 7_000
    assert fleet.stations_load_w(frozenset({"CP2"})) == 0
    [sample] = fleet.take_samples()
    assert (sample.station_id, sample.power_w, sample.energy_wh) == ("CP1", 7_000, 2_000)
    assert fleet.take_samples() == []

    # the EV is done: its last reading no longer counts, though it is not stale yet
    fleet.transaction_stopped("CP1", again, 2_500, parts.now)
    assert fleet.sessions == {}
    assert open_transactions(parts.store) == []
    assert fleet.load_w() == 0
    assert parts.replans == 3
    assert fleet.messages_in == {"BootNotification": 1, "StatusNotification": 1,
                                 "StartTransaction": 2, "MeterValues": 1,
                                 "StopTransaction": 1}


async def test_a_reading_counts_until_it_goes_stale(parts: Parts):
    fleet = parts.fleet
    fleet.station_booted("CP1", {})
    fleet.meter_values("CP1", 1, [meter_value(T0, power_w=3_000)])
    fleet.meter_values("CP1", 2, [meter_value(T0, power_w=4_000)])
    assert fleet.load_w() == 7_000
    parts.now = T0 + timedelta(seconds=STALE_AFTER_S)
    assert fleet.load_w() == 7_000
    parts.now = T0 + timedelta(seconds=STALE_AFTER_S + 1)
    assert fleet.load_w() == 0


async def test_a_newer_voltage_is_handed_to_the_planner(parts: Parts):
    fleet = parts.fleet
    fleet.meter_values("CP1", 1, [meter_value(T0, power_w=1_000, volts=236)])
    fleet.meter_values("CP1", 1, [meter_value(T0 - timedelta(seconds=1), volts=250)])  # older
    fleet.meter_values("CP1", 1, [meter_value(T0, power_w=1_000)])  # no voltage
    assert parts.voltages == ["CP1"]
    assert fleet.grid.latest["CP1"].phases_v[0] == 236


async def test_a_201_transaction_is_found_by_the_stations_id_after_a_restart(parts: Parts):
    fleet = parts.fleet
    fleet.station_booted("CP2", {})
    fleet.station_booted("CP3", {})
    named = fleet.transaction_started("CP2", 1, "TAG", 0, T0, station_tx="tx-abc")
    unnamed = fleet.transaction_started("CP3", 2, "TAG", 0, T0)  # as an older version kept it
    assert fleet.transaction_of("CP2", "tx-abc", None) == (named, 1)
    assert fleet.station_transaction("CP2", named) == "tx-abc"
    assert fleet.station_transaction("CP3", named) is None

    restarted = parts.restart()
    fleet = restarted.fleet
    try:
        assert fleet.transaction_of("CP2", "tx-abc", None) == (named, 1)
        assert fleet.transaction_of("CP3", "tx-xyz", None) is None  # names no EVSE
        # naming the EVSE finds the open one there, and keeps the station's id for it
        assert fleet.transaction_of("CP3", "tx-xyz", 2) == (unnamed, 2)
        again = restarted.restart()
        try:
            assert again.fleet.transaction_of("CP3", "tx-xyz", None) == (unnamed, 2)
        finally:
            again.store.close()
    finally:
        restarted.store.close()


async def test_sessions_of_an_id_that_never_booted_are_closed_at_the_next_start(parts: Parts):
    fleet = parts.fleet
    fleet.station_booted("REAL", {})
    real = fleet.transaction_started("REAL", 1, "TAG", 0, T0)
    ghost = fleet.transaction_started("GHOST", 1, "TAG", 0, T0)  # no boot, no profile of ours
    fleet.meter_values("GHOST", 1, [meter_value(T0, power_w=5_000)])
    restarted = parts.restart()
    try:
        assert list(restarted.fleet.sessions) == [real]
        assert open_transactions(restarted.store) == [real]
        assert ghost not in restarted.fleet.sessions
    finally:
        restarted.store.close()
