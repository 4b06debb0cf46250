"""OCPP 2.0.1 EVSEs: counted from the device model, and each transaction kept on its own
EVSE by its transaction id, across reconnections and restarts, never guessed."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from conftest import SiteHarness, wait_until
from test_ocpp_201 import add_201

from bridge.app import Bridge
from bridge.ocpp.link import UNKNOWN_EVSE
from bridge.ocpp.v201 import device_evses, evse_status
from bridge.sim.station201 import SimulatedStation201
from bridge.store import Store

# Generous: these tests must hold on a shared machine under load.
wait = partial(wait_until, timeout=30)


def test_evse_status_and_device_model_read_defensively():
    assert evse_status(["Available", "Occupied"]) == "Occupied"  # one connector in use
    assert evse_status(["Available", "Available"]) == "Available"
    assert evse_status(["Faulted", "Unavailable"]) == "Unavailable"
    reports = [{"reportData": [
        {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Available"}},
        {"component": {"name": "Connector", "evse": {"id": 2, "connectorId": 2}},
         "variable": {"name": "Available"}},
        {"component": {"name": "connector", "evse": {"id": 2, "connectorId": 1}}},
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "Enabled"}},
        {"component": {"name": "EVSE", "evse": {"id": "x"}}},
        "junk",
    ]}, {"reportData": None}]
    assert device_evses(reports) == {1: set(), 2: {1, 2}}


def sessions_on(bridge: Bridge, station_id: str) -> dict[int, int]:
    """The bridge's open transactions of a station: connector (EVSE) -> transaction id."""
    return {s.connector_id: tx for tx, s in bridge.station_events.sessions.items()
            if s.station_id == station_id}


def station_tx_of(bridge: Bridge, tx_id: int) -> str | None:
    return bridge.store.db["transactions"].get(tx_id)["station_tx"]


async def both_charging(bridge: Bridge, station: SimulatedStation201) -> dict[int, int]:
    await wait(lambda: set(sessions_on(bridge, station.id)) == {1, 2},
                     what="a session on each EVSE")
    return sessions_on(bridge, station.id)


async def events_after(station: SimulatedStation201, count: int) -> None:
    seq = station._seq
    await wait(lambda: station._seq >= seq + count, what="TransactionEvents")


async def test_the_evses_come_from_the_device_model(site: SiteHarness):
    """Two EVSEs of two connectors each, no EV yet: its device model says so, before any
    StatusNotification could. An EVSE in use on one connector is in use."""
    bridge = await site.start_bridge(capacity_kw=20)
    station = add_201(site, "PAIR", connectors=2, connectors_per_evse=2, plugged_in=False)
    await wait(lambda: "PAIR" in bridge.dispatcher.stations
                     and bridge.dispatcher.stations["PAIR"].caps.known, what="its capabilities")
    assert bridge.dispatcher.stations["PAIR"].caps.connectors == 2
    # a station of several EVSEs gets a default per EVSE besides its cap
    await wait(lambda: {(1, "TxDefaultProfile"), (2, "TxDefaultProfile")}
                     <= {k[:2] for k in station.installed_profiles}, what="a default per EVSE")
    station.plug_in(2)
    await wait(lambda: set(sessions_on(bridge, "PAIR")) == {2}, what="EVSE 2's session")


async def test_an_evse_in_use_on_one_of_its_connectors_is_occupied(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=20)
    add_201(site, "TWIN", connectors_per_evse=2)  # connector 1 occupied, 2 available
    await wait(lambda: ("TWIN", 1) in bridge.station_events.connector_status, what="its status")
    await wait(lambda: bridge.view.snapshot().station_status.get("TWIN") == "steered",
                     what="steered")
    assert bridge.station_events.connector_status[("TWIN", 1)][0] == "Occupied"


async def test_events_without_their_evse_after_a_reconnection_stay_on_their_evse(site: SiteHarness):
    """After the first, a station's TransactionEvents need not name their EVSE. On a new
    connection, EVSE 2's events must not be taken for EVSE 1's: its Ended would stop
    EVSE 1's session."""
    bridge = await site.start_bridge(capacity_kw=20)
    station = add_201(site, "DUO", connectors=2)
    sessions = await both_charging(bridge, station)
    link = bridge.ocpp.links["DUO"]
    await station.drop_connection()
    await wait(lambda: bridge.ocpp.links.get("DUO") not in (None, link),
                     what="the station back on a new link")
    await events_after(station, 4)  # events of both transactions, naming no EVSE
    assert sessions_on(bridge, "DUO") == sessions
    station.unplug(2)
    await wait(lambda: 2 not in sessions_on(bridge, "DUO"), what="EVSE 2's session ended")
    assert sessions_on(bridge, "DUO") == {1: sessions[1]}


async def test_events_without_their_evse_after_a_bridge_restart_stay_on_their_evse(
        site: SiteHarness):
    """The station's transaction ids are kept with the bridge's transactions, so a restarted
    bridge finds each event's transaction (and EVSE) by its id."""
    bridge = await site.start_bridge(capacity_kw=20)
    station = add_201(site, "KEPT", connectors=2)
    sessions = await both_charging(bridge, station)
    assert station_tx_of(bridge, sessions[2]) == station.evses[2].tx_id
    await site.stop_bridge()
    bridge = await site.start_bridge()
    await wait(lambda: "KEPT" in bridge.ocpp.links, what="the station back")
    await events_after(station, 4)
    assert sessions_on(bridge, "KEPT") == sessions
    station.unplug(2)
    await wait(lambda: 2 not in sessions_on(bridge, "KEPT"), what="EVSE 2's session ended")
    assert sessions_on(bridge, "KEPT") == {1: sessions[1]}


async def test_a_transaction_unknown_to_the_bridge_is_not_guessed_onto_an_evse(site: SiteHarness):
    """Transactions that began under another central system: their events name no EVSE.
    None is guessed; they count for the station as a whole until the station, asked,
    names each one's EVSE."""
    bridge = await site.start_bridge(capacity_kw=20)
    station = add_201(site, "ELSE", connectors=2, tx_started_elsewhere=True)
    sessions = await both_charging(bridge, station)
    for evse in (1, 2):
        assert station_tx_of(bridge, sessions[evse]) == station.evses[evse].tx_id
    asked = [p["evse"]["id"] for a, p in station.received if a == "TriggerMessage"
             and p["requestedMessage"] == "TransactionEvent"]
    # one round asks every EVSE once; the second transaction's first event starts another
    # round when it comes after the first round ended (on a slow machine)
    assert asked in ([1, 2], [1, 2, 1, 2]), asked
    assert bridge.ocpp.links["ELSE"].unattributed_events > 0  # type: ignore[attr-defined]
    assert ("ELSE", UNKNOWN_EVSE) in bridge.station_events.meters  # their draw counted meanwhile


def test_a_database_of_an_older_run_gains_the_station_transaction_column(tmp_path: Path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE transactions (id INTEGER PRIMARY KEY, station_id TEXT,"
                   " connector_id INTEGER, id_tag TEXT, meter_start INTEGER, started_at TEXT,"
                   " stopped_at TEXT, meter_stop INTEGER)")
        db.execute("INSERT INTO transactions (station_id, connector_id, id_tag, meter_start,"
                   " started_at) VALUES ('OLD', 2, 't', 0, '2026-11-25T12:00:00+00:00')")
    store = Store(path)
    assert [r["station_tx"] for r in store.open_transactions()] == [None]
    store.set_station_tx(1, "OLD-tx9")
    tx = store.start_transaction("OLD", 1, "t", 0, datetime.now(UTC), "OLD-tx10")
    assert {r["id"]: r["station_tx"] for r in store.open_transactions()} == \
        {1: "OLD-tx9", tx: "OLD-tx10"}
    store.close()


async def test_transactions_recorded_without_the_stations_id_are_taken_up_again(site: SiteHarness):
    """Open transactions an older version recorded without the station's id: after an
    upgrade the station's events name no EVSE, so it is asked, and each transaction is
    taken up again on the EVSE it names, with the station's id kept from then on."""
    bridge = await site.start_bridge(capacity_kw=20)
    station = add_201(site, "UPGR", connectors=2)
    sessions = await both_charging(bridge, station)
    await site.stop_bridge()
    with sqlite3.connect(site.tmp_path / "var" / "bridge.db") as db:
        db.execute("UPDATE transactions SET station_tx = NULL")
    bridge = await site.start_bridge()
    await wait(lambda: all(station_tx_of(bridge, sessions[e]) == station.evses[e].tx_id
                           for e in (1, 2)), what="both taken up again by their EVSEs")
    assert sessions_on(bridge, "UPGR") == sessions  # the same transactions, no new ones
