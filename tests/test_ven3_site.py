"""A site on an OpenADR 3 utility, wired by its configuration (``ven.protocol: "3"``).

Everything real on the protocol path: the OpenADR 3 VTN simulator over HTTP with OAuth2
client credentials (the secret from the environment), the bridge as ``drbridge run``
builds it from the YAML, OCPP 1.6J stations over websockets, SQLite. The cap is judged by
what the stations draw.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from conftest import SiteHarness, site_config, wait_until
from test_end_to_end import start_fleet

from bridge.config import load_config
from bridge.sim.station import SimulatedStation
from bridge.sim.vtn import DemoVtn, free_port
from bridge.sim.vtn3 import Vtn3, iso
from ven.oadr3.ven import Ven3
from ven.oadr20b.client import Ven

SECRET_ENV = "DRBRIDGE_TEST_OADR3_SECRET"
FULL = ["Current", "Power"]  # two EVs of 11 kW: 22 kW unhindered

FAILSAFE_POLICY = """\
name: failsafe-test
description: the default policy, with a fail-safe when the VTN is silent
simple:
  levels: {0: 100%, 1: 50%, 2: 25%, 3: 0%}
capacity_limit:
  unit: kW
allocation:
  strategy: fair
  min_current_a: 6
failsafe:
  vtn_silent_after_s: SILENT_S
  limit: 50%
"""

PRICE_POLICY = """\
name: price-test
description: dear prices hold charging back
electricity_price:
  tiers:
    - {above: 0.40, limit: 40%}
allocation:
  strategy: fair
  min_current_a: 6
"""


def openadr3(extra: str = "", poll_s: float = 0.5) -> str:
    """The ``ven`` keys of an OpenADR 3 site (beside vtn_url and ven_name)."""
    return textwrap.dedent(f"""\
        protocol: "3"
        auth:
          client_id: site-a
          client_secret_env: {SECRET_ENV}
        poll_interval_s: {poll_s}
        poll_retry_max_s: 1
        """) + textwrap.dedent(extra)


@pytest.fixture
async def vtn3() -> AsyncIterator[Vtn3]:
    server = Vtn3(port=free_port())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def site3(tmp_path: Path, vtn3: Vtn3, monkeypatch: pytest.MonkeyPatch
                ) -> AsyncIterator[SiteHarness]:
    monkeypatch.setenv(SECRET_ENV, "secret-a")
    harness = SiteHarness(tmp_path, vtn3)  # type: ignore[arg-type]  # it reads .url only
    yield harness
    await harness.close()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def draw(stations: list[SimulatedStation]) -> float:
    return sum(s.power_w for s in stations)


def limits(stations: list[SimulatedStation], at: datetime) -> list[float]:
    """What each station's profiles let it draw at ``at`` (they hold the future)."""
    return [round(s.composite_limit_w(at)) for s in stations]


def cap_event(program: str, kw: float, start: datetime, duration: str = "PT1H",
              **fields: object) -> dict:
    return {"programID": program,
            "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR",
                                    "payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
            "intervalPeriod": {"start": iso(start), "duration": duration},
            "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT",
                                                  "values": [kw]}]}], **fields}


def simple_event(program: str, level: int, start: datetime, seconds: int) -> dict:
    return {"programID": program,
            "intervalPeriod": {"start": iso(start), "duration": f"PT{seconds}S"},
            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [level]}]}]}


def write_policy(site: SiteHarness, text: str, **config: object) -> None:
    """The site's config with a policy file of its own."""
    (site.tmp_path / "policy.yaml").write_text(text)
    text = site_config(site.vtn.url, site.ocpp_port, **config)  # type: ignore[arg-type]
    site.config_path.write_text(text.replace("policy: default", "policy: policy.yaml"))


async def api_site(site: SiteHarness) -> dict:
    """The dashboard's /api/site (on loopback it needs no login)."""
    bridge = site.bridge
    assert bridge is not None and bridge.web is not None
    await wait_until(lambda: bridge.web is not None and bridge.web.ready.is_set(),
                     what="the web server")
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{bridge.web.port}/api/site") as reply:
        assert reply.status == 200, await reply.text()
        return await reply.json()


async def registered(site: SiteHarness) -> None:
    assert site.bridge is not None
    await wait_until(lambda: site.bridge is not None and site.bridge.ven.registration
                     is not None, timeout=30, what="registration with the VTN")


# the switch ------------------------------------------------------------------------------------

async def _limits_for_simple_level_1(site: SiteHarness, ven_extra: str,
                                     issue: Callable[[datetime], Awaitable[str]]
                                     ) -> tuple[list[float], ...]:
    """Start the site, issue SIMPLE level 1 from 20 s on, and read the stations' limits
    before and during the event, and the site limit during it."""
    bridge = await site.start_bridge(capacity_kw=22, ven_extra=ven_extra)
    stations = await start_fleet(site, FULL)
    await registered(site)
    start = now() + timedelta(seconds=20)
    event_id = await issue(start)
    during = start + timedelta(seconds=5)
    await wait_until(lambda: sum(limits(stations, during)) <= 11_000, timeout=15,
                     what="the event in the stations' profiles")
    step = bridge.planner.site_step(during)
    assert step is not None
    assert bridge.dr.events[event_id].opt == "optIn"
    vtn = (await api_site(site))["vtn"]
    assert vtn["state"] == "online" and vtn["registered"] is True
    return limits(stations, start - timedelta(seconds=2)), limits(stations, during), \
        [round(step.limit_w)], [vtn["protocol"], vtn["programs"]]


async def test_a_site_switches_protocol_by_its_config_and_behaves_the_same(
        tmp_path: Path, vtn: DemoVtn, vtn3: Vtn3, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(SECRET_ENV, "secret-a")
    program = vtn3.add_program("peak")

    async def issue_20b(start: datetime) -> str:
        ven_id = vtn.ven_id("test-site")
        assert ven_id is not None
        return vtn.add_simple_event(ven_id, start, [(timedelta(seconds=60), 1)])

    async def issue_3(start: datetime) -> str:
        return await vtn3.add_event(simple_event(program, 1, start, 60))

    results = {}
    # the same site, stations and policy; only ven.protocol and the VTN's keys differ
    for protocol, server, ven_extra, issue in (("2.0b", vtn, "", issue_20b),
                                               ("3", vtn3, openadr3(), issue_3)):
        folder = tmp_path / protocol
        folder.mkdir()
        site = SiteHarness(folder, server)  # type: ignore[arg-type]
        try:
            results[protocol] = await _limits_for_simple_level_1(site, ven_extra, issue)
            assert site.bridge is not None
            assert isinstance(site.bridge.ven, Ven if protocol == "2.0b" else Ven3)
        finally:
            await site.close()
    before, during, site_limit, dashboard = results["3"]
    assert results["2.0b"][:3] == results["3"][:3]
    assert sum(before) >= 21_900 and sum(during) <= 11_000 and site_limit == [11_000]
    # the dashboard says which protocol the site speaks, and the OpenADR 3 VTN's programs
    assert results["2.0b"][3] == ["OpenADR 2.0b", []]
    assert dashboard == ["OpenADR 3.1.0", ["peak"]]


# an import cap ---------------------------------------------------------------------------------

async def test_an_import_cap_holds_from_its_start_and_lifts_after(site3: SiteHarness,
                                                                  vtn3: Vtn3):
    bridge = await site3.start_bridge(capacity_kw=22, ven_extra=openadr3())
    stations = await start_fleet(site3, FULL)
    await registered(site3)
    assert isinstance(bridge.ven, Ven3)
    await wait_until(lambda: draw(stations) > 20_000, timeout=30, what="full power")
    program = vtn3.add_program("grid-aware-charging")
    start = now() + timedelta(seconds=8)
    end = start + timedelta(seconds=10)
    await vtn3.add_event(cap_event(program, 12, start, "PT10S"))
    # the stations hold the cap in their profiles from its start (a lower limit a second
    # early, on whole seconds), not before, and not after its end
    await wait_until(lambda: sum(limits(stations, start)) <= 12_000,
                     timeout=15, what="the cap in the profiles")
    assert datetime.now(UTC) < start
    assert sum(limits(stations, start - timedelta(seconds=3))) >= 21_900
    assert sum(limits(stations, end - timedelta(seconds=1))) <= 12_000
    assert sum(limits(stations, end + timedelta(seconds=1))) >= 21_900
    await wait_until(lambda: datetime.now(UTC) >= start + timedelta(seconds=2), timeout=20,
                     what="the event's start")
    while datetime.now(UTC) < end - timedelta(seconds=1):
        assert draw(stations) <= 12_000
        await asyncio.sleep(0.2)
    await wait_until(lambda: draw(stations) > 20_000, timeout=30, what="full power after it")


async def test_a_modified_cap_applies_and_a_deleted_one_lifts_by_webhook(site3: SiteHarness,
                                                                         vtn3: Vtn3):
    hook = free_port()
    # polled every minute: the changes come by the VTN's notifications
    await site3.start_bridge(capacity_kw=22, ven_extra=openadr3(f"""\
        webhook:
          port: {hook}
          public_url: http://127.0.0.1:{hook}/openadr3/notifications
        """, poll_s=60))
    stations = await start_fleet(site3, FULL)
    await registered(site3)
    program = vtn3.add_program("grid-aware-charging")
    await wait_until(lambda: vtn3.subscriptions != {}, timeout=30, what="a subscription")
    event_id = await vtn3.add_event(cap_event(program, 10, now() - timedelta(seconds=1)))
    await wait_until(lambda: 0 < draw(stations) <= 10_000, timeout=20, what="the 10 kW cap")
    await vtn3.modify_event(event_id, {"intervals": [
        {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [16]}]}]})
    await wait_until(lambda: 12_000 < draw(stations) <= 16_000, timeout=20,
                     what="the cap raised to 16 kW")
    assert site3.bridge is not None
    assert site3.bridge.dr.events[event_id].event.modification_number == 1
    await vtn3.delete_event(event_id)
    await wait_until(lambda: draw(stations) > 20_000, timeout=30, what="full power")
    assert site3.bridge.dr.events[event_id].event.status == "cancelled"
    assert vtn3.received.event_lists <= 2  # changes came by notification, not by a poll


# prices ------------------------------------------------------------------------------------------

async def test_a_price_curve_drives_the_price_rules(site3: SiteHarness, vtn3: Vtn3):
    write_policy(site3, PRICE_POLICY, capacity_kw=22, ven_extra=openadr3())
    bridge = await site3.start_bridge()
    stations = await start_fleet(site3, FULL)
    await registered(site3)
    program = vtn3.add_program("dynamic-tariff")
    start = now()
    cheap_until = start + timedelta(minutes=5)
    event_id = await vtn3.add_event({
        "programID": program, "payloadDescriptors": [
            {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "PRICE",
             "units": "MWH", "currency": "EUR"}],
        # two values: two intervals of five minutes each
        "intervalPeriod": {"start": iso(start), "duration": "PT10M"},
        # per MWh: 120 (0.12 per kWh) now, 550 (0.55 per kWh, dear) from five minutes on
        "intervals": [{"id": 0, "payloads": [{"type": "PRICE", "values": [120, 550]}]}]})
    dear = cheap_until + timedelta(minutes=1)
    await wait_until(lambda: sum(limits(stations, dear)) <= 0.4 * 22_000 + 1, timeout=20,
                     what="the dear interval held back")
    assert sum(limits(stations, start + timedelta(minutes=1))) >= 21_900
    step = bridge.planner.site_step(dear)
    assert step is not None and round(step.limit_w) == 8_800
    assert "price" in step.reason
    assert bridge.dr.events[event_id].opt == "optIn"


# reports --------------------------------------------------------------------------------------

async def test_reports_carry_the_measured_load_of_the_site_and_its_groups(site3: SiteHarness,
                                                                          vtn3: Vtn3):
    await site3.start_bridge(capacity_kw=22, telemetry_interval_s=1, ven_extra=openadr3("""\
        groups:
          fleet: [CP0]
        """))
    stations = await start_fleet(site3, FULL)
    await registered(site3)
    await wait_until(lambda: draw(stations) > 20_000, timeout=30, what="full power")
    # and measured: the stations' meters have told the bridge before the event begins
    await wait_until(lambda: site3.bridge is not None
                     and site3.bridge.station_events.load_w() > 20_000,
                     timeout=30, what="full power measured")
    program = vtn3.add_program("measured")
    start = now() + timedelta(seconds=1)
    event_id = await vtn3.add_event({
        **simple_event(program, 0, start, 4),
        "intervals": [{"id": k, "payloads": [{"type": "SIMPLE", "values": [0]}]}
                      for k in range(2)],
        "reportDescriptors": [{"payloadType": "DEMAND", "readingType": "MEAN",
                               "units": "KW"}]})
    await wait_until(lambda: vtn3.reports_for(event_id), timeout=30, what="the report")
    (report,) = vtn3.reports_for(event_id)
    values = {r["resourceName"]: [i["payloads"][0]["values"][0] for i in r["intervals"]]
              for r in report["resources"]}
    assert set(values) == {"test-site", "fleet"}
    # what the stations drew, as their own meters told the bridge
    for site_kw in values["test-site"]:
        assert site_kw == pytest.approx(draw(stations) / 1000, rel=0.1)
    for fleet_kw in values["fleet"]:
        assert fleet_kw == pytest.approx(stations[0].power_w / 1000, rel=0.1)
    assert report["clientName"] == "test-site"


# the VTN away -------------------------------------------------------------------------------

async def test_a_vtn_down_at_start_leaves_the_fail_safe_then_events_flow_once_it_is_up(
        site3: SiteHarness, vtn3: Vtn3):
    await vtn3.stop()
    write_policy(site3, FAILSAFE_POLICY.replace("SILENT_S", "3"), capacity_kw=22,
                 ven_extra=openadr3())
    bridge = await site3.start_bridge()
    stations = await start_fleet(site3, FULL)
    # never heard since the start: after 3 s the fail-safe (half the site) holds
    await wait_until(lambda: "fail-safe" in (bridge.view.snapshot().site_limit_reason),
                     timeout=20, what="the fail-safe")
    await wait_until(lambda: 0 < draw(stations) <= 11_000, timeout=20,
                     what="the stations under the fail-safe")
    assert bridge.ven.registration is None
    await vtn3.start()
    await registered(site3)
    await wait_until(lambda: "fail-safe" not in bridge.view.snapshot().site_limit_reason,
                     timeout=15, what="the fail-safe lifted")
    await wait_until(lambda: draw(stations) > 20_000, timeout=30, what="full power again")
    program = vtn3.add_program("grid-aware-charging")
    await vtn3.add_event(cap_event(program, 14, now() - timedelta(seconds=1)))
    await wait_until(lambda: 11_000 < draw(stations) <= 14_000, timeout=20,
                     what="the cap of an event sent once the VTN is up")


async def test_an_event_received_before_the_vtn_went_down_executes_at_its_times(
        site3: SiteHarness, vtn3: Vtn3):
    bridge = await site3.start_bridge(capacity_kw=22, ven_extra=openadr3())
    stations = await start_fleet(site3, FULL)
    await registered(site3)
    program = vtn3.add_program("grid-aware-charging")
    start = now() + timedelta(seconds=6)
    end = start + timedelta(seconds=8)
    event_id = await vtn3.add_event(cap_event(program, 10, start, "PT8S"))
    await wait_until(lambda: event_id in bridge.dr.events, timeout=10, what="the event")
    await vtn3.stop()  # before the event starts, for good
    await wait_until(lambda: datetime.now(UTC) >= start + timedelta(seconds=2), timeout=20,
                     what="the event's start")
    await wait_until(lambda: 0 < draw(stations) <= 10_000, timeout=5, what="the cap")
    while datetime.now(UTC) < end - timedelta(seconds=1):
        assert draw(stations) <= 10_000
        await asyncio.sleep(0.2)
    await wait_until(lambda: draw(stations) > 20_000, timeout=30, what="full power after it")
    assert bridge.dr.events[event_id].event.status != "cancelled"


async def test_a_vtn_down_mid_event_the_event_holds_then_the_fail_safe_then_back(
        site3: SiteHarness, vtn3: Vtn3):
    write_policy(site3, FAILSAFE_POLICY.replace("SILENT_S", "4"), capacity_kw=22,
                 ven_extra=openadr3())
    bridge = await site3.start_bridge()
    stations = await start_fleet(site3, FULL)
    await registered(site3)
    program = vtn3.add_program("grid-aware-charging")
    event_id = await vtn3.add_event(cap_event(program, 15, now() - timedelta(seconds=1)))
    await wait_until(lambda: 11_000 < draw(stations) <= 15_000, timeout=20, what="the cap")
    loop = asyncio.get_running_loop()
    await vtn3.stop()
    down_at = loop.time()
    # the VEN's last contact was at most a poll before: the event holds until the fail-safe
    step = bridge.planner.site_step(datetime.now(UTC))
    assert step is not None and round(step.limit_w) == 15_000 and event_id in step.reason
    await wait_until(lambda: "fail-safe" in bridge.view.snapshot().site_limit_reason,
                     timeout=15, what="the fail-safe")
    assert loop.time() - down_at >= 4 - 1  # (the poll before the outage counts)
    await wait_until(lambda: 0 < draw(stations) <= 11_000, timeout=20,
                     what="the stations under the fail-safe")
    assert bridge.dr.events[event_id].event.status != "cancelled"
    await vtn3.start()
    # lifted once the VEN hears the VTN again (its retries are a second apart), before the
    # next periodic plan (REPLAN_PERIOD_S)
    await wait_until(lambda: "fail-safe" not in bridge.view.snapshot().site_limit_reason,
                     timeout=15, what="the fail-safe lifted")
    await wait_until(lambda: 11_000 < draw(stations) <= 15_000, timeout=20,
                     what="the event's cap again once the VTN answers")


# hostile input -------------------------------------------------------------------------------

async def test_hostile_json_from_the_vtn_is_refused_with_a_log_line(site3: SiteHarness,
                                                                    vtn3: Vtn3, caplog):
    program = vtn3.add_program("grid-aware-charging")
    vtn3.hostile_events = [
        "not an object", 17, None,
        {"id": "wrong-types", "programID": program, "intervals": "many"},
        {"id": "bad-time", "programID": program,
         "intervalPeriod": {"start": "when it suits", "duration": "PT1H"},
         "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}]},
    ]
    good = await vtn3.add_event(cap_event(program, 10, now() - timedelta(seconds=1)))
    with caplog.at_level(logging.INFO):
        bridge = await site3.start_bridge(capacity_kw=22, ven_extra=openadr3())
        stations = await start_fleet(site3, FULL)
        await wait_until(lambda: 0 < draw(stations) <= 10_000, timeout=30,
                         what="the good event's cap")
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    for event_id in ("wrong-types", "bad-time"):
        assert sum(event_id in line for line in refused) == 1, (event_id, refused)
    assert set(bridge.dr.events) == {good}
    assert bridge.view.snapshot().station_status == {"CP0": "steered", "CP1": "steered"}


def test_the_config_builds_the_openadr_3_ven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(SECRET_ENV, "secret-a")
    (tmp_path / "certs").mkdir()
    path = tmp_path / "site.yaml"
    path.write_text(site_config("https://vtn.example/openadr3/3.0.1", 9999,
                                telemetry_interval_s=30, ven_extra=openadr3("""\
        groups:
          fleet: [CP1]
        webhook:
          host: 0.0.0.0
          public_url: https://gw.example:8089/openadr3/notifications
        """)))
    config = load_config(path)
    settings = config.ven3_settings()
    assert (settings.client_id, settings.client_secret) == ("site-a", "secret-a")
    assert settings.version == "3.0.1" and settings.group_ids == {"fleet"}
    assert settings.poll_interval == timedelta(seconds=0.5)
    assert settings.retry_max == timedelta(seconds=1)
    assert settings.sample_interval == timedelta(seconds=10)  # at most 10 s apart
    assert settings.webhook is not None and settings.webhook.host == "0.0.0.0"
