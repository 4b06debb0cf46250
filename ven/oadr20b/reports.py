"""The reports the VEN offers the VTN, and how their values are put on the wire.

Offered in the oadrRegisterReport (METADATA) after every registration:

- TELEMETRY_USAGE: the site's real power (W) and energy (Wh, the sum of the stations'
  energy registers), and the real power (W) of each configured group as its own resource;
- TELEMETRY_STATUS: oadrOnline, oadrManualOverride and the load control state (the
  capacity the site can offer: current / minimum / maximum, in W);
- HISTORY_USAGE: the site's real power (W) from the store, for the window the VTN asks for.

Each is offered with a sampling range (the telemetry interval up to an hour; a day for
history); openleadr refuses requests outside it and samples and sends at the granularity
and report-back duration the VTN asks for. openleadr's oadrUpdateReport cannot carry
status payloads, so every update goes out through drbridge's own template.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader
from openleadr import OpenADRClient, objects
from openleadr.messaging import TEMPLATES

from ven.interface import ReportSource, SiteStatus

USAGE_ID = "drbridge-telemetry-usage"
STATUS_ID = "drbridge-telemetry-status"
HISTORY_ID = "drbridge-history-usage"
SITE_POWER_RID = "site-real-power"
SITE_ENERGY_RID = "site-energy"
STATUS_RID = "site-status"
HISTORY_RID = "site-real-power-history"
UPDATE_REPORT_TEMPLATE = "drbridge_oadrUpdateReport"
TELEMETRY_MAX_SAMPLING = timedelta(hours=1)
HISTORY_MAX_SAMPLING = timedelta(days=1)
HISTORY_SPAN = timedelta(days=7)


def group_power_rid(group_id: str) -> str:
    return f"group-{group_id}-real-power"


def bucket_means(samples: Iterable[tuple[datetime, float]], start: datetime, end: datetime,
                 interval: timedelta) -> list[tuple[datetime, float]]:
    """The mean of the samples in each ``interval`` from ``start`` to ``end``; buckets
    without samples are left out (no data is not zero load)."""
    if interval <= timedelta(0):
        raise ValueError("interval must be positive")
    sums: dict[int, tuple[float, int]] = {}
    for at, value in samples:
        if start <= at < end:
            index = int((at - start) / interval)
            total, count = sums.get(index, (0.0, 0))
            sums[index] = (total + value, count + 1)
    return [(start + index * interval, total / count)
            for index, (total, count) in sorted(sums.items())]


def offer_reports(client: OpenADRClient, source: ReportSource, resource_id: str,
                  group_ids: Iterable[str], sampling: timedelta) -> None:
    """Declare drbridge's reports on openleadr's client (sent as METADATA at registration)."""
    usage = objects.SamplingRate(min_period=sampling,
                                 max_period=max(sampling, TELEMETRY_MAX_SAMPLING))
    common: dict[str, Any] = {"sampling_rate": usage, "report_duration": TELEMETRY_MAX_SAMPLING}
    client.add_report(callback=source.measured_load_w, resource_id=resource_id,
                      measurement="REAL_POWER", unit="W", scale="none",
                      report_specifier_id=USAGE_ID, r_id=SITE_POWER_RID, **common)
    client.add_report(callback=source.measured_energy_wh, resource_id=resource_id,
                      measurement="ENERGY_REAL", unit="Wh", scale="none",
                      report_specifier_id=USAGE_ID, r_id=SITE_ENERGY_RID, **common)
    for group_id in sorted(group_ids):
        client.add_report(callback=lambda g=group_id: source.group_load_w(g),
                          resource_id=group_id, measurement="REAL_POWER", unit="W",
                          scale="none", report_specifier_id=USAGE_ID,
                          r_id=group_power_rid(group_id), **common)
    client.add_report(callback=lambda: [(datetime.now(UTC), source.site_status())],
                      resource_id=resource_id, report_name="TELEMETRY_STATUS",
                      report_specifier_id=STATUS_ID, r_id=STATUS_RID,
                      reading_type="x-notApplicable", **common)

    def history(date_from: datetime, date_to: datetime,
                sampling_interval: timedelta) -> list[tuple[datetime, float]]:
        return bucket_means(source.load_history(date_from, date_to), date_from, date_to,
                            sampling_interval)

    client.add_report(callback=history, resource_id=resource_id, measurement="REAL_POWER",
                      unit="W", scale="none", report_name="HISTORY_USAGE",
                      data_collection_mode="full", report_specifier_id=HISTORY_ID,
                      r_id=HISTORY_RID, report_duration=HISTORY_SPAN,
                      sampling_rate=objects.SamplingRate(
                          min_period=sampling,
                          max_period=max(sampling, HISTORY_MAX_SAMPLING)))


def install_templates() -> None:
    """Let openleadr's message builder (and so its signing) render drbridge's templates."""
    if not isinstance(TEMPLATES.loader, ChoiceLoader):
        folder = FileSystemLoader(str(Path(__file__).with_name("templates")))
        TEMPLATES.loader = ChoiceLoader([TEMPLATES.loader, folder])  # type: ignore[list-item]


def update_report_payload(report: objects.Report) -> dict[str, Any]:
    """One openleadr outgoing report as drbridge's oadrUpdateReport template takes it."""
    intervals = []
    for interval in report.intervals or []:
        value = interval.report_payload.value
        status = value if isinstance(value, SiteStatus) else None
        intervals.append({"dtstart": interval.dtstart, "duration": interval.duration,
                          "r_id": interval.report_payload.r_id,
                          "value": None if status else float(value), "status": status})
    starts = [i["dtstart"] for i in intervals]
    return {
        "dtstart": min(starts) if starts else datetime.now(UTC),
        "duration": report.duration, "intervals": intervals,
        "report_id": f"drbridge-report-{uuid.uuid4().hex[:16]}",
        "report_request_id": report.report_request_id,
        "report_specifier_id": report.report_specifier_id,
        "report_name": report.report_name.replace("METADATA_", ""),
        "created": datetime.now(UTC),
    }
