"""Reports against a real openleadr VTN: METADATA, TELEMETRY_USAGE, TELEMETRY_STATUS,
HISTORY_USAGE, and the sampling and report-back intervals the VTN asks for."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import wait_until
from lxml import etree
from openleadr.messaging import validate_xml_schema
from test_ven_client import Listener, settings

from bridge.sim.vtn import DemoVtn
from ven.oadr20b.client import Ven
from ven.oadr20b.reports import (
    HISTORY_ID,
    HISTORY_RID,
    SITE_ENERGY_RID,
    SITE_POWER_RID,
    STATUS_ID,
    STATUS_RID,
    USAGE_ID,
    bucket_means,
    group_power_rid,
)

SECOND = timedelta(seconds=1)
OADR = "{http://openadr.org/oadr-2.0b/2012/07}"


class Reporting:
    def __init__(self, vtn: DemoVtn, ven: Ven, listener: Listener) -> None:
        self.vtn, self.ven, self.listener = vtn, ven, listener

    def sent(self, message_type: str) -> list[dict[str, Any]]:
        return [p for t, p in self.vtn.received.messages if t == message_type]

    def reports(self, request_id: str) -> list[dict[str, Any]]:
        return [r for p in self.sent("oadrUpdateReport") for r in p["reports"]
                if r["report_request_id"] == request_id]

    def request(self, request_id: str, specifier_id: str, r_ids: list[str],
                granularity: timedelta, back: timedelta = timedelta(0),
                window: tuple[datetime, timedelta] | None = None) -> None:
        specifier: dict[str, Any] = {
            "report_specifier_id": specifier_id, "granularity": granularity,
            "report_back_duration": back,
            "specifier_payloads": [{"r_id": r, "reading_type": "Direct Read"} for r in r_ids]}
        if window is not None:
            specifier["report_interval"] = {"dtstart": window[0], "duration": window[1]}
        self.vtn.send_raw(self.vtn._message(
            "oadrCreateReport", request_id=f"create-{request_id}", ven_id=self.ven_id,
            report_requests=[{"report_request_id": request_id, "report_specifier": specifier}]))

    @property
    def ven_id(self) -> str:
        return self.listener.registrations[0].ven_id

    async def pending(self, request_id: str) -> list[str]:
        def answers() -> list[dict[str, Any]]:
            return [p for p in self.sent("oadrCreatedReport")
                    if (p.get("response") or {}).get("request_id") == f"create-{request_id}"]

        await wait_until(lambda: answers() != [], what=f"the oadrCreatedReport for {request_id}")
        pending = answers()[-1].get("pending_reports") or []
        return [str(p["report_request_id"]) for p in pending]


@pytest.fixture
async def reporting(vtn: DemoVtn, request: pytest.FixtureRequest) -> AsyncIterator[Reporting]:
    sampling = getattr(request, "param", SECOND)  # the fastest sampling offered
    listener = Listener()
    ven_settings = dataclasses.replace(settings(vtn.url), telemetry_interval=sampling,
                                       group_ids=frozenset({"vans"}))
    ven = Ven(ven_settings, listener)
    task = asyncio.create_task(ven.run())
    await wait_until(lambda: listener.registrations != [], what="registration")
    # the VEN offers its reports in a round trip of its own after registering
    await wait_until(lambda: any(t == "oadrRegisterReport" for t, _ in vtn.received.messages),
                     what="the reports offered")
    yield Reporting(vtn, ven, listener)
    await ven.stop()
    await asyncio.wait_for(task, 5)


async def test_metadata_offers_usage_status_and_history(reporting: Reporting):
    [register] = reporting.sent("oadrRegisterReport")
    offered = {r["report_name"]: r for r in register["reports"]}
    assert set(offered) == {"METADATA_TELEMETRY_USAGE", "METADATA_TELEMETRY_STATUS",
                            "METADATA_HISTORY_USAGE"}
    usage = {d["r_id"]: d for d in offered["METADATA_TELEMETRY_USAGE"]["report_descriptions"]}
    assert set(usage) == {SITE_POWER_RID, SITE_ENERGY_RID, group_power_rid("vans")}
    assert (usage[SITE_POWER_RID]["measurement"]["unit"],
            usage[SITE_ENERGY_RID]["measurement"]["unit"]) == ("W", "Wh")
    assert usage[group_power_rid("vans")]["report_data_source"] == {"resource_id": "vans"}
    assert usage[SITE_POWER_RID]["report_data_source"] == {"resource_id": "test-site"}
    assert usage[SITE_POWER_RID]["sampling_rate"]["min_period"] == SECOND
    [status] = offered["METADATA_TELEMETRY_STATUS"]["report_descriptions"]
    assert status["r_id"] == STATUS_RID
    [history] = offered["METADATA_HISTORY_USAGE"]["report_descriptions"]
    assert history["r_id"] == HISTORY_RID and history["measurement"]["unit"] == "W"


async def test_telemetry_usage_carries_power_energy_and_groups(reporting: Reporting):
    reporting.request("usage-1", USAGE_ID,
                      [SITE_POWER_RID, SITE_ENERGY_RID, group_power_rid("vans")], SECOND)
    await wait_until(lambda: len(reporting.reports("usage-1")) >= 2, what="reports")
    report = reporting.reports("usage-1")[0]
    values = {i["report_payload"]["r_id"]: i["report_payload"]["value"]
              for i in report["intervals"]}
    assert values == {SITE_POWER_RID: 1234.0, SITE_ENERGY_RID: 56_789.0,
                      group_power_rid("vans"): 700.0}
    assert report["report_name"] == "TELEMETRY_USAGE"
    assert report["report_specifier_id"] == USAGE_ID
    for message_type, body in reporting.vtn.received.bodies:
        if message_type == "oadrUpdateReport":
            validate_xml_schema(body)


async def test_status_report_on_request(reporting: Reporting):
    reporting.request("status-1", STATUS_ID, [STATUS_RID], timedelta(0))
    await wait_until(lambda: reporting.reports("status-1") != [], what="the status report")
    assert await reporting.pending("status-1") == ["status-1"]
    [body] = [b for t, b in reporting.vtn.received.bodies
              if t == "oadrUpdateReport" and b"status-1" in b]
    tree = validate_xml_schema(body)
    status = tree.find(f".//{OADR}oadrPayloadResourceStatus")
    assert status is not None
    text = {etree.QName(e).localname: (e.text or "").strip() for e in status.iter()}
    assert text["oadrOnline"] == "true" and text["oadrManualOverride"] == "false"
    assert float(text["oadrCurrent"]) == 11_000 and float(text["oadrMax"]) == 44_000
    assert float(text["oadrMin"]) == 0
    assert reporting.reports("status-1")[0]["report_name"] == "TELEMETRY_STATUS"


@pytest.mark.parametrize("reporting", [2 * SECOND], indirect=True)
async def test_requested_sampling_and_report_back_are_honoured_within_the_offer(
        reporting: Reporting):
    reporting.request("fast", USAGE_ID, [SITE_POWER_RID, SITE_ENERGY_RID], 2 * SECOND,
                      back=6 * SECOND)
    reporting.request("too-fast", USAGE_ID, [SITE_POWER_RID], SECOND, back=2 * SECOND)
    reporting.request("too-slow", USAGE_ID, [SITE_POWER_RID], timedelta(hours=2))
    await wait_until(lambda: reporting.reports("fast") != [], timeout=15,
                     what="the first batch")
    [first, *_] = reporting.reports("fast")
    # three samples two seconds apart, per rID, in one report
    powers = [i for i in first["intervals"] if i["report_payload"]["r_id"] == SITE_POWER_RID]
    assert len(powers) == 3 and len(first["intervals"]) == 6
    gaps = [(b["dtstart"] - a["dtstart"]).total_seconds() for a, b in zip(powers, powers[1:],
                                                                           strict=False)]
    assert all(1.5 <= gap <= 2.5 for gap in gaps)
    assert await reporting.pending("fast") == ["fast"]
    assert await reporting.pending("too-fast") == [] and await reporting.pending("too-slow") == []
    assert reporting.reports("too-fast") == reporting.reports("too-slow") == []

    reporting.vtn.send_raw(reporting.vtn._message(
        "oadrCancelReport", request_id="cancel-fast", ven_id=reporting.ven_id,
        report_request_id="fast", report_to_follow=False))
    await wait_until(lambda: reporting.sent("oadrCanceledReport") != [], what="the cancel")
    cancelled_at = datetime.now(UTC)
    await asyncio.sleep(7)  # longer than a report-back duration
    # a report already queued may still arrive, but nothing sampled after the cancel
    sampled = [i["dtstart"] for r in reporting.reports("fast") for i in r["intervals"]]
    assert max(sampled) <= cancelled_at


async def test_history_for_the_requested_window_from_the_store(reporting: Reporting):
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    reporting.listener.history = [(t0 + timedelta(seconds=10 * i), float(1000 * i))
                                  for i in range(30)]  # five minutes of samples
    reporting.request("hist-1", HISTORY_ID, [HISTORY_RID], timedelta(minutes=1),
                      window=(t0 + timedelta(minutes=1), timedelta(minutes=2)))
    await wait_until(lambda: reporting.reports("hist-1") != [], what="the history report")
    [report] = reporting.reports("hist-1")
    assert report["report_name"] == "HISTORY_USAGE"
    points = [(i["dtstart"], i["report_payload"]["value"]) for i in report["intervals"]]
    # minute 1: samples 6..11, minute 2: samples 12..17
    assert points == [(t0 + timedelta(minutes=1), 8500.0), (t0 + timedelta(minutes=2), 14500.0)]
    assert await reporting.pending("hist-1") == ["hist-1"]


def test_bucket_means_leave_gaps_out():
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    samples = [(t0, 1.0), (t0 + SECOND, 3.0), (t0 + 5 * SECOND, 10.0), (t0 + 9 * SECOND, 7.0)]
    assert bucket_means(samples, t0, t0 + 6 * SECOND, 2 * SECOND) == [
        (t0, 2.0), (t0 + 4 * SECOND, 10.0)]
    with pytest.raises(ValueError):
        bucket_means(samples, t0, t0, timedelta(0))
