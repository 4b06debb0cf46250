"""The dashboard in real headless Chromium (Debian's, driven by Playwright) against a running
bridge with a VTN and simulated stations."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import SiteHarness, wait_until
from lc_helpers import upstream_config
from test_web_api import PASSWORD, start
from test_web_security import start as start_with_web_keys

from bridge.sim.csms import UpstreamCsms
from bridge.sim.vtn import free_port
from bridge.sim.vtn3 import Vtn3

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.xdist_group("heavy")  # see the Makefile

CHROMIUM = os.environ.get("DRBRIDGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Set to a path (docs/dashboard.png) to keep a screenshot of the dashboard during the event.
SCREENSHOT = os.environ.get("DRBRIDGE_SCREENSHOT")


@pytest.fixture
async def page() -> AsyncIterator[object]:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 1000})
        yield await context.new_page()
        await browser.close()


async def limit_polyline_ys(page) -> list[float]:
    points = await page.get_attribute("#chart polyline.limit", "points")
    return [float(p.split(",")[1]) for p in (points or "").split()]


async def test_dashboard_shows_event_limits_and_opts_out(site: SiteHarness, page):
    url = await start(site, capacity_kw=44, telemetry_interval_s=1)
    bridge = site.bridge
    assert bridge is not None
    stations = [site.add_station(f"CP{i}", rate_unit=unit)
                for i, unit in enumerate(["Current", "Power", "Current", "Power"], 1)]
    await wait_until(lambda: all(s.transaction_id and s.composite_limit_w() > 0
                                 for s in stations), what="charging")
    await wait_until(lambda: site.vtn.ven_id("test-site") is not None, what="registration")
    ven_id = site.vtn.ven_id("test-site")

    await page.goto(url)
    await page.wait_for_selector('#stations tr[data-station="CP4"]')
    assert await page.inner_text("#vtn") != "VTN …"
    # before the event: the limit line is flat at capacity, no banner
    assert await page.is_hidden("#banner")

    start_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    event_id = site.vtn.add_simple_event(ven_id, start_at, [(timedelta(seconds=40), 2)])
    await wait_until(lambda: datetime.now(UTC) > start_at + timedelta(seconds=3),
                     timeout=15, what="the event running")

    # the chart: the limit line steps down from 44 kW to 11 kW (lower on screen)
    await page.wait_for_function(
        "document.querySelector('#chart').dataset.minLimitW === '11000'", timeout=10_000)
    assert await page.get_attribute("#chart", "data-max-limit-w") == "44000"
    ys = await limit_polyline_ys(page)
    assert len(set(ys)) == 2 and ys[-1] > ys[0]
    assert await page.get_attribute("#chart polyline.load", "points")

    # the banner and the event row
    await page.wait_for_selector("#banner:not([hidden])")
    assert "11.0 kW" in await page.inner_text("#banner")
    row = f'#events tr[data-event="{event_id}"]'
    assert "active" in await page.inner_text(row)
    assert await page.inner_text(f"{row} td.opt") == "optIn"

    # a station row: its limit (its share of 11 kW) and why
    station_row = '#stations tr[data-station="CP1"]'
    await page.wait_for_function(
        f"document.querySelector('{station_row} td.reason').textContent.includes('{event_id}')",
        timeout=10_000)
    limit_text = await page.inner_text(f"{station_row} td.limit")
    assert limit_text.endswith("kW") and float(limit_text.split()[0]) <= 11.0
    assert "SIMPLE level 2" in await page.inner_text(f"{station_row} td.reason")
    # its profile cell: the phase of its life, and since when
    await page.wait_for_function(
        f"/^(acknowledged|verified) since /"
        f".test(document.querySelector('{station_row} td.profile .life')?.textContent)",
        timeout=10_000)
    assert "share" in await page.get_attribute(f"{station_row} td.profile .life", "title")
    if SCREENSHOT:
        await page.screenshot(path=SCREENSHOT, full_page=True)

    # no actions before logging in
    assert await page.query_selector(f"{row} button.opt-out") is None
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#logged-in:not([hidden])")
    await page.wait_for_selector(f"{row} button.opt-out")

    async def answer(dialog) -> None:
        await dialog.accept("overrideStatus")

    page.on("dialog", answer)
    await page.click(f"{row} button.opt-out")
    await wait_until(lambda: any(o.get("event_id") == event_id and o.get("opt_type") == "optOut"
                                 for o in site.vtn.received.created_opts),
                     what="the opt-out at the VTN")
    [sent] = [o for o in site.vtn.received.created_opts if o.get("event_id") == event_id]
    assert sent["opt_reason"] == "overrideStatus"
    await page.wait_for_function(
        f"document.querySelector('{row} td.opt')?.textContent === 'optOut'", timeout=10_000)
    # the DR limit is lifted: the banner goes
    await page.wait_for_selector("#banner", state="hidden", timeout=10_000)
    assert bridge.dr.events[event_id].opt == "optOut"
    assert "overrideStatus" in await page.get_attribute(f"{row} td.opt", "title")

    # pause a station from its row, then resume it
    cp1 = stations[0]
    await page.click(f"{station_row} button.pause")
    await wait_until(lambda: cp1.composite_limit_w() == 0 and "CP1" in bridge.operator.holds,
                     what="CP1 paused from the page")
    await page.wait_for_selector(f"{station_row} span.hold")
    assert await page.inner_text(f"{station_row} span.hold") == "pause"
    await page.click(f"{station_row} button.resume")
    await wait_until(lambda: cp1.composite_limit_w() > 0, what="CP1 resumed from the page")

    # withdrawn from the page: the VTN hears oadrCancelOpt and the event's limit is back
    await page.click(f"{row} button.withdraw")
    await wait_until(lambda: any(opt_id == sent["opt_id"]
                                 for _, opt_id in site.vtn.received.cancelled_opts),
                     what="the withdrawal at the VTN")
    await page.wait_for_selector("#banner:not([hidden])", timeout=10_000)
    assert bridge.dr.events[event_id].opt == "optIn"


async def test_dashboard_offers_the_login_when_reading_needs_one(site: SiteHarness, page):
    url = await start_with_web_keys(site, "require_login: true\n")
    site.add_station("CP1")
    await page.goto(url)
    await page.wait_for_selector("#login-form:not([hidden])")
    await page.wait_for_function(
        "document.getElementById('message').textContent === 'Log in to see the site.'")
    assert await page.inner_text("#load") == "–"
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button")
    await page.wait_for_selector('#stations tr[data-station="CP1"]', timeout=10_000)
    assert await page.is_hidden("#message")
    assert await page.is_visible("#logged-in")


async def test_dashboard_shows_the_operators_csms_and_limits(site: SiteHarness, page):
    """Local-controller mode: the CSMS's links in the header, and per station its link and
    the operator's own limit beside drbridge's."""
    csms = UpstreamCsms(id_tags=["ALLOWED"])
    await csms.start()
    try:
        url = await start(site, capacity_kw=44, ocpp_extra=upstream_config(csms))
        station = site.add_station("CP1", id_tag="ALLOWED")
        await csms.wait_for("StartTransaction", station_id="CP1")
        profile = {"chargingProfileId": 3, "stackLevel": 0,
                   "chargingProfilePurpose": "ChargePointMaxProfile",
                   "chargingProfileKind": "Absolute", "chargingSchedule": {
                       "chargingRateUnit": "A",
                       "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8.0}]}}
        assert (await csms.request("CP1", "SetChargingProfile", {
            "connectorId": 0, "csChargingProfiles": profile}))["status"] == "Accepted"
        await page.goto(url)
        await page.wait_for_selector('#stations tr[data-station="CP1"] .operator-limit')
        assert await page.inner_text("#upstream") == "CSMS 1 up"
        row = '#stations tr[data-station="CP1"]'
        assert await page.inner_text(f"{row} .operator-limit") == "operator 5.5 kW"
        assert await page.inner_text(f"{row} .upstream") == "CSMS up"
        # the CSMS goes away: the link down, and the messages kept for it waiting
        await csms.stop(abort=True)
        station.unplug()
        await page.wait_for_function(
            "document.querySelector('#upstream').textContent.includes('queued')"
            f" && document.querySelector('{row} .upstream').textContent.includes('queued')",
            timeout=20_000)
        assert (await page.inner_text("#upstream")).startswith("CSMS 0 up, 1 down, ")
        assert (await page.inner_text(f"{row} .upstream")).startswith("CSMS down, ")
    finally:
        await csms.stop()


async def test_dashboard_shows_the_openadr_3_vtn_and_its_programs(
        tmp_path: Path, page, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DRBRIDGE_TEST_OADR3_SECRET", "secret-a")
    vtn3 = Vtn3(port=free_port())
    vtn3.add_program("grid-aware-charging")
    vtn3.add_program("dynamic-tariff")
    await vtn3.start()
    site = SiteHarness(tmp_path, vtn3)  # type: ignore[arg-type]
    try:
        bridge = await site.start_bridge(ven_extra=(
            'protocol: "3"\nauth:\n  client_id: site-a\n'
            "  client_secret_env: DRBRIDGE_TEST_OADR3_SECRET\npoll_interval_s: 0.5\n"))
        await wait_until(lambda: bridge.ven.registration is not None, timeout=20,
                         what="registration")
        await wait_until(lambda: bridge.web is not None and bridge.web.ready.is_set(),
                         what="the web server")
        assert bridge.web is not None
        await page.goto(f"http://127.0.0.1:{bridge.web.port}/")
        await page.wait_for_function(
            "document.getElementById('vtn').textContent.startsWith('OpenADR 3.1.0 VTN online')")
        assert await page.inner_text("#programs") == \
            "programs: dynamic-tariff, grid-aware-charging"
        assert vtn3.url in (await page.get_attribute("#vtn", "title") or "")
    finally:
        await site.close()
        await vtn3.stop()


async def test_dashboard_says_where_each_station_s_voltage_comes_from(site: SiteHarness, page):
    """Each station's row names how the volt-watt rule reaches it (its monitors, its own DER
    control, or its meter values) and, on hover, why: a refusal keeps the central rule."""
    from test_voltage_wiring import add, state_of
    from test_voltage_wiring import start as start_with_rule

    from bridge.sim.feeder import Feeder
    from bridge.sim.station21 import SimulatedStation21
    from bridge.sim.station201_monitors import MonitoringStation201

    bridge = await start_with_rule(site)
    feeder = Feeder(source_v=230.0, impedance_ohm=0.05)
    add(site, MonitoringStation201, "MON201", feeder)
    add(site, MonitoringStation201, "REF201", feeder, monitors="rejected")
    add(site, SimulatedStation21, "DER21", feeder)
    site.add_station("CP16")
    await wait_until(lambda: state_of(bridge, "MON201", "monitors") == "installed"
                     and state_of(bridge, "REF201", "monitors") == "refused"
                     and state_of(bridge, "DER21", "der") == "in-force"
                     and state_of(bridge, "CP16", "monitors") == "not-supported", timeout=30,
                     what="the voltage controls settled")
    assert bridge.web is not None
    await page.goto(f"http://127.0.0.1:{bridge.web.port}/")
    expected = {"MON201": "monitors", "REF201": "meter values", "DER21": "der-control",
                "CP16": "meter values"}
    for station_id, source in expected.items():
        cell = f'#stations tr[data-station="{station_id}"] .voltage-source'
        await page.wait_for_function(
            f"document.querySelector('{cell}')?.textContent === 'voltage from {source}'",
            timeout=15_000)
    refused = await page.get_attribute(
        '#stations tr[data-station="REF201"] .voltage-source', "title")
    assert "monitors: refused (the station refused them (Rejected))" in (refused or "")
    own = await page.get_attribute('#stations tr[data-station="DER21"] .voltage-source', "title")
    assert "DER control: in-force (VoltWatt curve" in (own or "")
