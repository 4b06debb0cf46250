"""Open admission (security profile 0, no stations listed): ids that never booted are
forgotten when they leave, and `check` and `run` warn when the port is reachable."""

from __future__ import annotations

import json
import logging
import secrets
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import SiteHarness, wait_steered, wait_until
from test_ocpp_edge import exchange, raw_station

from bridge.cli import main
from bridge.store import Store

# Two real stations share 22 kW: 11 kW each (15.9 A on three phases, as sent: 10,971 W).
CAPACITY_KW = 22
FULL_SHARE_W = 10_900


def start_transaction(message_id: str) -> str:
    return json.dumps([2, message_id, "StartTransaction", {
        "connectorId": 1, "idTag": "FUZZ", "meterStart": 0,
        "timestamp": datetime.now(UTC).isoformat()}])


def open_transactions(site: SiteHarness, station_id: str) -> list[dict]:
    store = Store(site.tmp_path / "var" / "bridge.db")
    try:
        return [row for row in store.open_transactions() if row["station_id"] == station_id]
    finally:
        store.close()


async def test_an_id_that_never_booted_holds_no_capacity_once_gone(site: SiteHarness):
    bridge = await site.start_bridge(capacity_kw=CAPACITY_KW)
    real = [site.add_station("CP1"), site.add_station("CP2")]
    await wait_steered(bridge, "CP1", "CP2")
    await wait_until(lambda: all(s.composite_limit_w() >= FULL_SHARE_W for s in real),
                     what="the real stations at their full share")

    # A client under a random id starts a "session" without a BootNotification ...
    fake = f"FUZZ-{secrets.token_hex(4)}"
    ws = await raw_station(site, fake)
    reply = await exchange(ws, start_transaction("f1"))
    assert reply[0] == 3 and isinstance(reply[2]["transactionId"], int)
    # ... and takes capacity from the real stations while it is there,
    await wait_until(lambda: all(s.composite_limit_w() < FULL_SHARE_W for s in real),
                     timeout=20, what="the fake session taking a share")
    await ws.close()

    # ... but none once it is gone: the real stations get their full share back,
    await wait_until(lambda: all(s.composite_limit_w() >= FULL_SHARE_W for s in real),
                     timeout=20, what="the real stations' full share back")
    # and nothing of the id is kept; its session is closed in the store.
    assert fake not in bridge.dispatcher.stations
    assert all(s.station_id != fake for s in bridge.station_events.sessions.values())
    assert fake not in bridge.station_events.last_seen
    assert not any(sid == fake for sid, _ in bridge.station_events.connector_status)
    assert not any(sid == fake for sid, _ in bridge.station_events.meters)
    assert open_transactions(site, fake) == []
    assert {"CP1", "CP2"} <= bridge.dispatcher.stations.keys()


async def test_a_station_with_a_boot_on_record_is_kept_when_it_leaves(site: SiteHarness):
    """After a restart of the bridge a real station may reconnect without booting: its boot
    in the store says it is one of the site's."""
    site.write_config(capacity_kw=CAPACITY_KW)
    store = Store(site.tmp_path / "var" / "bridge.db")
    store.save_station("CP-OLD", {"vendor": "v", "model": "m", "last_boot": "2026-01-01T00:00:00"})
    store.close()
    bridge = await site.start_bridge()
    ws = await raw_station(site, "CP-OLD")
    reply = await exchange(ws, start_transaction("k1"))
    transaction_id = reply[2]["transactionId"]
    await ws.close()
    await wait_until(lambda: "CP-OLD" in bridge.dispatcher.stations
                     and bridge.dispatcher.stations["CP-OLD"].link is None,
                     what="the station seen gone")
    assert transaction_id in bridge.station_events.sessions
    assert [row["id"] for row in open_transactions(site, "CP-OLD")] == [transaction_id]


async def test_sessions_an_earlier_run_left_open_for_unbooted_ids_are_closed(site: SiteHarness):
    site.write_config(capacity_kw=CAPACITY_KW)
    store = Store(site.tmp_path / "var" / "bridge.db")
    now = datetime.now(UTC)
    fake_tx = store.start_transaction("FUZZ-OLD", 1, "FUZZ", 0, now)
    store.save_station("CP-REAL", {"last_boot": now.isoformat()})
    real_tx = store.start_transaction("CP-REAL", 1, "TAG", 100, now)
    store.close()
    bridge = await site.start_bridge()
    assert fake_tx not in bridge.station_events.sessions
    assert real_tx in bridge.station_events.sessions
    assert open_transactions(site, "FUZZ-OLD") == []


# ---- warnings -----------------------------------------------------------------------------------
def write_config(tmp_path: Path, ocpp: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent("""\
        ven:
          vtn_url: http://127.0.0.1:8080/OpenADR2/Simple/2.0b
          ven_name: site
        site:
          capacity_kw: 22
        ocpp:
        """) + textwrap.indent(textwrap.dedent(ocpp), "  "))
    return path


def test_check_warns_of_open_admission_off_loopback(tmp_path: Path, capsys):
    path = write_config(tmp_path, "host: 0.0.0.0\n")
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    [warning] = [line for line in out.splitlines() if "open admission" in line]
    assert warning.startswith("  WARNING    ")
    assert f"{path}:6: ocpp.stations: " in warning  # the file, the ocpp section's line, the key
    assert "0.0.0.0" in warning
    assert "list the stations under ocpp.stations" in warning
    assert "ocpp.security.profile 1-3" in warning


@pytest.mark.parametrize("ocpp", [
    "host: 127.0.0.1\n",  # loopback only
    "host: 0.0.0.0\nstations: [{id: CP01}]\n",  # listed
    "host: '::'\nstations: [{id: CP01}]\n",
])
def test_no_open_admission_warning_when_listed_or_on_loopback(tmp_path: Path, capsys,
                                                              ocpp: str):
    assert main(["check", "--config", str(write_config(tmp_path, ocpp))]) == 0
    assert "open admission" not in capsys.readouterr().out


def test_run_warns_of_open_admission(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch):
    path = write_config(tmp_path, "host: 0.0.0.0\n")

    async def serve(config: object) -> None:  # the config is what is under test, not serving
        return None

    monkeypatch.setattr("bridge.cli._run", serve)
    with caplog.at_level(logging.WARNING):
        assert main(["run", "--config", str(path)]) == 0
    [record] = [r for r in caplog.records if "open admission" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert f"{path}:6: ocpp.stations: " in record.getMessage()
