"""The JSON API, login, operator actions and /metrics, over HTTP against a running bridge."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import aiohttp
import fastjsonschema
import pytest
from conftest import SiteHarness, wait_until
from test_ocpp_201 import add_201

from bridge.config import load_config_text
from bridge.dispatch import StationRecord
from bridge.holds import PAUSED_REASON
from bridge.sim.vtn import free_port
from bridge.web.auth import hash_password, verify_password
from policies.fleet import value_at
from policies.validation import InvalidDocument

PASSWORD = "correct horse battery"
PASSWORD_HASH = hash_password(PASSWORD)
WEB = f"web:\n  port: 0\n  password_hash: '{PASSWORD_HASH}'\n"


def web_config(site: SiteHarness, **kwargs: object) -> None:
    site.write_config(**kwargs)
    # the site config from conftest has a web section with port 0; add the password
    text = site.config_path.read_text().replace("web:\n  port: 0\n", WEB)
    site.config_path.write_text(text)


def base_url(site: SiteHarness) -> str:
    assert site.bridge is not None and site.bridge.web is not None
    return f"http://127.0.0.1:{site.bridge.web.port}"


async def get_json(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


def parse_metrics(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


async def start(site: SiteHarness, **kwargs: object) -> str:
    web_config(site, **kwargs)
    bridge = await site.start_bridge()
    assert bridge.web is not None
    await wait_until(lambda: bridge.web is not None and bridge.web.ready.is_set(),
                     what="the web server")
    return base_url(site)


async def test_api_shows_site_event_and_stations(site: SiteHarness):
    url = await start(site, capacity_kw=44, telemetry_interval_s=1)
    bridge = site.bridge
    assert bridge is not None
    # one OCPP 1.6J station and one 2.0.1
    stations = [site.add_station("CP1"), add_201(site, "CP2")]
    await wait_until(lambda: all(s.transaction_id for s in stations) and
                     bridge.reports.measured_load_w() > 0, what="charging")
    await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    ven_id = site.vtn.ven_id("test-site")
    start_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    event_id = site.vtn.add_simple_event(ven_id, start_at, [(timedelta(minutes=5), 2)])
    await wait_until(lambda: event_id in bridge.dr.events, what="the event at the bridge")
    await wait_until(lambda: datetime.now(UTC) > start_at + timedelta(seconds=2), what="start")

    async with aiohttp.ClientSession() as http:
        await wait_until(lambda: bridge.view.snapshot().site_limit_w == 11_000, what="the DR limit")
        site_now = await get_json(http, f"{url}/api/site")
        assert site_now["limit_w"] == 11_000
        assert site_now["capacity_w"] == 44_000
        assert site_now["dr_banner"]["active"] is True
        assert event_id in site_now["dr_banner"]["events"]
        assert "11.0 kW" in site_now["dr_banner"]["text"]
        assert site_now["vtn"]["state"] == "online"
        assert site_now["vtn"]["registered"] is True and site_now["vtn"]["ven_id"] == ven_id
        assert site_now["stations_connected"] == 2

        events = await get_json(http, f"{url}/api/events")
        [active] = events["active"]
        assert active["event_id"] == event_id and active["opt"] == "optIn"
        assert active["signals"][0]["name"] == "SIMPLE"
        assert active["signals"][0]["intervals"][0]["value"] == 2
        assert active["cap_w"] == 11_000
        assert events["upcoming"] == [] and events["history"] == []

        async def station_rows() -> dict[str, dict]:
            data = await get_json(http, f"{url}/api/stations")
            return {s["station_id"]: s for s in data["stations"]}

        # a row shows the limit its station acknowledged: wait for both answers
        def acknowledged_w(state: StationRecord) -> float:
            step = value_at(state.applied or (), datetime.now(UTC))
            return step.limit_w if step is not None else float("inf")

        await wait_until(lambda: all(acknowledged_w(state) <= 11_000
                                     for state in bridge.dispatcher.stations.values()),
                         what="the limits acknowledged")
        rows = await station_rows()
        assert set(rows) == {"CP1", "CP2"}
        for row in rows.values():
            assert row["connected"] is True
            assert row["last_seen"] is not None
            assert row["limit_w"] is not None and row["limit_w"] <= 11_000
            assert f"event {event_id}" in row["limit_reason"]
            assert row["profile_state"] in ("accepted", "unverified")
            # where it is in its life: steered since it acknowledged its limit
            life = row["life"]
            assert life["phase"] in ("acknowledged", "verified")
            assert datetime.fromisoformat(life["since"]) <= datetime.now(UTC)
            assert life["counted_as"] == "share"
            [connector] = row["connectors"]
            assert connector["connector_id"] == 1
            assert connector["session"] is not None
            assert connector["status"] in ("Charging", "Occupied")  # 1.6, 2.0.1
        assert sum(r["limit_w"] for r in rows.values()) <= 11_000

        await wait_until(lambda: len(bridge.store.site_load(start_at - timedelta(hours=1))) >= 2,
                         what="site load rows")
        load = await get_json(http, f"{url}/api/load?hours=1")
        assert load["points"] and load["capacity_w"] == 44_000
        assert {"at", "load_w", "limit_w"} <= set(load["points"][-1])
        async with http.get(f"{url}/api/load?hours=-1") as response:
            assert response.status == 400

        spec = await get_json(http, f"{url}/api/openapi.json")
        assert spec["openapi"].startswith("3.")
        life_schema = spec["components"]["schemas"]["Station"]["properties"]["life"]
        for row in rows.values():
            fastjsonschema.validate(life_schema, row["life"])
        refs = set()

        def collect(node: object) -> None:
            if isinstance(node, dict):
                refs.update(v for k, v in node.items() if k == "$ref")
                for value in node.values():
                    collect(value)
            elif isinstance(node, list):
                for value in node:
                    collect(value)

        collect(spec)
        assert refs and all(ref.removeprefix("#/components/schemas/") in
                            spec["components"]["schemas"] for ref in refs)
        # every field the API answers is described
        described = spec["components"]["schemas"]
        assert set(site_now) == set(described["Site"]["properties"])
        assert set(active) == set(described["Event"]["properties"])
        assert set(rows["CP1"]) == set(described["Station"]["properties"])
        assert set(rows["CP1"]["connectors"][0]) == \
            set(described["Station"]["properties"]["connectors"]["items"]["properties"])
        for path in ("/api/site", "/api/events", "/api/stations", "/api/load", "/metrics",
                     "/api/events/{event_id}/opt-out", "/api/stations/{station_id}/hold"):
            assert path in spec["paths"]

        async with http.get(f"{url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = await response.text()
        metrics = parse_metrics(text)
        assert "# TYPE drbridge_site_load_watts gauge" in text
        assert metrics["drbridge_site_limit_watts"] == 11_000
        assert metrics["drbridge_site_capacity_watts"] == 44_000
        assert metrics["drbridge_dr_limit_active"] == 1
        assert metrics["drbridge_stations_connected"] == 2
        assert 0 <= metrics["drbridge_stations_dispatching"] <= 2
        assert metrics["drbridge_vtn_registered"] == 1
        assert metrics["drbridge_vtn_last_contact_timestamp_seconds"] > start_at.timestamp() - 60
        assert metrics[f'drbridge_event_info{{event_id="{event_id}",state="active",'
                       f'opt="optIn"}}'] == 1
        assert metrics['drbridge_events{state="active"}'] == 1
        assert metrics['drbridge_ocpp_messages_received_total{action="MeterValues"}'] > 0
        assert metrics['drbridge_ocpp_messages_received_total{action="BootNotification"}'] == 2
        assert metrics["drbridge_profiles_sent_total"] >= 2
        assert metrics['drbridge_ocpp_calls_sent_total{action="SetChargingProfile"}'] >= 2
        # capabilities: GetConfiguration from the 1.6 station, GetVariables from the 2.0.1 one
        # (asked again when a BootNotification comes after the first read)
        assert 1 <= metrics['drbridge_ocpp_calls_sent_total{action="GetConfiguration"}'] <= 2
        assert metrics['drbridge_ocpp_calls_sent_total{action="GetVariables"}'] >= 1
        assert metrics["drbridge_site_load_watts"] > 0


async def test_actions_need_login_and_pause_holds_a_station_at_zero(site: SiteHarness):
    url = await start(site, capacity_kw=44)
    bridge = site.bridge
    assert bridge is not None
    stations = [site.add_station("CP1"), site.add_station("CP2")]
    await wait_until(lambda: all(s.transaction_id for s in stations) and
                     all(s.composite_limit_w() > 0 for s in stations), what="charging")
    hold_url = f"{url}/api/stations/CP1/hold"
    # unsafe: keep cookies from an IP address (127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        session = await get_json(http, f"{url}/api/session")
        assert session == {"logged_in": False, "login_enabled": True, "login_required": False}
        async with http.put(hold_url, json={"mode": "pause"}) as response:
            assert response.status == 401
        async with http.post(f"{url}/api/events/nope/opt-out", json={}) as response:
            assert response.status == 401
        async with http.post(f"{url}/api/login", json={"password": "wrong"}) as response:
            assert response.status == 401
        async with http.post(f"{url}/api/login", data="password") as response:
            assert response.status == 415
        async with http.post(f"{url}/api/login", json={"password": PASSWORD}) as response:
            assert response.status == 200
            assert response.cookies["drbridge_session"]["httponly"]
        assert (await get_json(http, f"{url}/api/session"))["logged_in"] is True

        async with http.put(hold_url, json={"mode": "sleep"}) as response:
            assert response.status == 400
        async with http.put(f"{url}/api/stations/NOPE/hold", json={"mode": "pause"}) as response:
            assert response.status == 404
        async with http.post(f"{url}/api/events/nope/opt-out", json={}) as response:
            assert response.status == 404
        async with http.put(hold_url, json={"mode": "pause", "reason": "cable check"}) as r:
            assert r.status == 200
        await wait_until(lambda: stations[0].composite_limit_w() == 0, what="CP1 paused")
        rows = {s["station_id"]: s for s in
                (await get_json(http, f"{url}/api/stations"))["stations"]}
        assert rows["CP1"]["hold"]["mode"] == "pause"
        assert rows["CP1"]["hold"]["reason"] == "cable check"
        await wait_until(lambda: bridge.dispatcher.stations["CP1"].applied is not None and
                         bridge.dispatcher.stations["CP1"].applied[-1].reason == PAUSED_REASON,
                         what="the pause acknowledged")
        rows = {s["station_id"]: s for s in
                (await get_json(http, f"{url}/api/stations"))["stations"]}
        assert rows["CP1"]["limit_w"] == 0 and rows["CP1"]["limit_reason"] == PAUSED_REASON
        # the other station gets the capacity the paused one left
        await wait_until(lambda: stations[1].composite_limit_w() >= 22_000,
                         what="CP2 at its maximum (32 A)")
        # stored, so it survives a restart
        assert bridge.store.holds()["CP1"][0] == "pause"

        async with http.delete(hold_url) as response:
            assert response.status == 200
        await wait_until(lambda: stations[0].composite_limit_w() > 0, what="CP1 resumed")
        async with http.post(f"{url}/api/logout", json={}) as response:
            assert response.status == 200
        async with http.delete(hold_url) as response:
            assert response.status == 401


def test_bad_password_hash_is_refused_with_its_key(tmp_path):
    text = textwrap.dedent("""\
        ven: {vtn_url: 'http://127.0.0.1:1/OpenADR2/Simple/2.0b', ven_name: a}
        site: {capacity_kw: 10}
        web:
          password_hash: hunter2
        """)
    with pytest.raises(InvalidDocument) as error:
        load_config_text(text, tmp_path / "site.yaml")
    assert "site.yaml:4: web.password_hash" in str(error.value)
    assert "drbridge hash-password" in str(error.value)


async def test_drbridge_run_serves_the_dashboard(site: SiteHarness):
    port = free_port()
    site.write_config()
    text = site.config_path.read_text().replace("web:\n  port: 0\n", f"web:\n  port: {port}\n")
    site.config_path.write_text(text)
    log = (site.tmp_path / "bridge.log").open("a")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "run", "--config", str(site.config_path),
        stdout=log, stderr=log)
    try:
        async with aiohttp.ClientSession() as http:
            answer: dict = {}

            async def poll() -> None:
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/api/site") as response:
                            if response.status == 200:
                                answer.update(await response.json())
                                return
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(poll(), 20)
            assert answer["capacity_w"] == 44_000
            async with http.get(f"http://127.0.0.1:{port}/") as response:
                assert response.status == 200
                page = await response.text()
            assert "/static/app.js" in page
            assert "http://" not in page and "https://" not in page  # nothing from elsewhere
            async with http.get(f"http://127.0.0.1:{port}/static/app.js") as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0


def test_hash_password_command_prints_a_usable_hash():
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "hash-password"],
                            input="long enough secret\n", capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    stored = result.stdout.strip().removeprefix("password_hash: ")
    assert verify_password("long enough secret", stored)


async def test_exempt_station_is_not_curtailed_by_an_event(site: SiteHarness):
    url = await start(site, capacity_kw=44)
    bridge = site.bridge
    assert bridge is not None
    stations = [site.add_station("CP1"), site.add_station("CP2")]
    await wait_until(lambda: all(s.transaction_id and s.composite_limit_w() > 0
                                 for s in stations), what="charging")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{url}/api/login", json={"password": PASSWORD}) as response:
            assert response.status == 200
        async with http.put(f"{url}/api/stations/CP1/hold",
                            json={"mode": "exempt", "reason": "ambulance bay"}) as response:
            assert response.status == 200
        await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
        start_at = datetime.now(UTC) + timedelta(seconds=1)
        site.vtn.add_simple_event(site.vtn.ven_id("test-site"), start_at,
                                  [(timedelta(minutes=5), 2)])
        during = start_at + timedelta(seconds=30)
        # 25 % of 44 kW is 11 kW: the exempt station keeps its 32 A (22 kW), the other pauses
        await wait_until(lambda: stations[1].composite_limit_w(during) == 0
                         and stations[0].composite_limit_w(during) >= 22_000,
                         what="CP2 curtailed by the event, CP1 at full power")
        assert sum(s.composite_limit_w(during) for s in stations) <= 44_000
        rows = {s["station_id"]: s for s in
                (await get_json(http, f"{url}/api/stations"))["stations"]}
        assert rows["CP1"]["hold"]["mode"] == "exempt"
        assert rows["CP1"]["planned"]["reason"].startswith("exempt from DR by the operator")


async def test_event_history_has_cap_baseline_measured_and_shed(site: SiteHarness):
    # the baseline: the load over the 3 s before the event (no previous days here)
    url = await start(site, capacity_kw=44, telemetry_interval_s=1,
                      extra="report:\n  pre_event_s: 3\n")
    bridge = site.bridge
    assert bridge is not None
    stations = [site.add_station("CP1"), site.add_station("CP2")]
    await wait_until(lambda: all(s.transaction_id for s in stations) and
                     bridge.reports.measured_load_w() > 20_000, what="charging at full power")
    await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    await asyncio.sleep(3)  # full load before the event
    # room for a slow poll on a loaded machine: the event arrives before it starts, and
    # lasts long enough that the shed dominates its mean
    start_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    event_id = site.vtn.add_simple_event(site.vtn.ven_id("test-site"), start_at,
                                         [(timedelta(seconds=8), 2)])
    await wait_until(lambda: datetime.now(UTC) > start_at + timedelta(seconds=9),
                     timeout=20, what="the event over")
    async with aiohttp.ClientSession() as http:
        events = await get_json(http, f"{url}/api/events")
    assert events["active"] == [] and events["upcoming"] == []
    [past] = events["history"]
    assert past["event_id"] == event_id and past["state"] == "completed"
    assert past["cap_w"] == 11_000
    assert past["baseline_w"] > 20_000
    assert past["measured_w"] < past["baseline_w"]
    assert past["shed_w"] == pytest.approx(past["baseline_w"] - past["measured_w"], abs=1)
    assert past["baseline_method"].startswith("pre-event load: mean site load over the 0.05 min")
