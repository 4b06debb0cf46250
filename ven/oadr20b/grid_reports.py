"""The site's voltage in TELEMETRY_USAGE: per phase, the lowest and the mean over the stations.

Each phase and statistic is its own report item (rID ``site-voltage-L1-min``), named as a
resource of its own (``<site>-L1-min``) so that a VTN keeping readings by resource and
measurement tells them apart; the measurement is ``voltage`` in V. A phase without fresh
readings sends no interval (no data is not 0 V).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from openleadr import OpenADRClient, objects

from ven.interface import VoltageSource
from ven.oadr20b.reports import TELEMETRY_MAX_SAMPLING, USAGE_ID

Statistic = Literal["min", "mean"]
STATISTICS: tuple[Statistic, ...] = ("min", "mean")
PHASES = ("L1", "L2", "L3")


def voltage_rid(phase: str, statistic: Statistic) -> str:
    return f"site-voltage-{phase}-{statistic}"


def voltage_resource(resource_id: str, phase: str, statistic: Statistic) -> str:
    return f"{resource_id}-{phase}-{statistic}"


def voltage_sample(source: VoltageSource, phase: str,
                   statistic: Statistic) -> list[tuple[datetime, float]]:
    values = source.site_voltages().get(phase)
    if values is None:
        return []
    return [(datetime.now(UTC), values[0] if statistic == "min" else values[1])]


def offer_voltage_reports(client: OpenADRClient, source: VoltageSource, resource_id: str,
                          phases: Iterable[str], sampling: timedelta) -> None:
    """Add the voltage items to the TELEMETRY_USAGE report (call after offer_reports)."""
    rate = objects.SamplingRate(min_period=sampling,
                                max_period=max(sampling, TELEMETRY_MAX_SAMPLING))
    for phase in phases:
        for statistic in STATISTICS:
            client.add_report(
                callback=lambda p=phase, s=statistic: voltage_sample(source, p, s),
                resource_id=voltage_resource(resource_id, phase, statistic),
                measurement="voltage", unit="V", scale="none",
                reading_type="Mean" if statistic == "mean" else "Derived",
                report_specifier_id=USAGE_ID, r_id=voltage_rid(phase, statistic),
                sampling_rate=rate, report_duration=TELEMETRY_MAX_SAMPLING)
