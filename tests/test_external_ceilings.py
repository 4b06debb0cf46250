"""External limits a station reports, as the ceiling the plan counts (pure)."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from bridge.external_ceilings import station_ceiling
from bridge.ocpp.external_limits import (
    ExternalLimit,
    ExternalPeriod,
    ExternalSchedule,
)
from policies.fleet import StationInfo

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V = 230.0
INFO = StationInfo("S", 3, V, 32, connector_max_a=((2, 16),))


def limit(amps: float, evse: int = 0, source: str = "EMS", start: datetime = NOW,
          duration_s: int | None = None, critical: bool | None = None, *later) -> ExternalLimit:
    periods = (ExternalPeriod(start, amps), *later)
    end = start + timedelta(seconds=duration_s) if duration_s is not None else None
    return ExternalLimit(source, evse, NOW, critical, (ExternalSchedule("A", periods, end),))


def test_a_limit_on_the_station_is_its_ceiling_until_it_ends():
    steps = station_ceiling([limit(10, duration_s=600)], INFO, [1], NOW)
    assert [(s.start, s.limit_w) for s in steps] == [
        (NOW, 10 * V * 3), (NOW + timedelta(seconds=600), math.inf)]
    assert steps[0].reason == "station's external constraint (EMS): 6.9 kW"


def test_the_lowest_of_several_holds_and_says_who():
    steps = station_ceiling([limit(10), limit(8, source="SO", critical=True)], INFO, [1], NOW)
    assert steps[0].limit_w == 8 * V * 3
    assert steps[0].reason == "station's external constraint (SO, grid critical): 5.5 kW"


def test_a_limit_on_one_evse_caps_that_evse_and_the_others_count_at_their_hardware():
    steps = station_ceiling([limit(6, evse=1)], INFO, [1, 2], NOW)
    # EVSE 1 at 6 A, EVSE 2 at its 16 A hardware
    assert steps[0].limit_w == pytest.approx((6 + 16) * V * 3)
    assert steps[0].reason == "external constraint on EVSE 1 (EMS): 4.1 kW"
    # an EVSE without a session limits nothing
    assert station_ceiling([limit(6, evse=3)], INFO, [1, 2], NOW) == ()


def test_a_limit_later_and_periods_without_a_limit():
    start = NOW + timedelta(minutes=5)
    steps = station_ceiling([limit(10, 0, "EMS", start, None, None,
                                   ExternalPeriod(start + timedelta(minutes=5), None))],
                            INFO, [1], NOW)
    assert [(s.start - NOW, s.limit_w) for s in steps] == [
        (timedelta(0), math.inf), (timedelta(minutes=5), 10 * V * 3),
        (timedelta(minutes=10), math.inf)]


def test_nothing_to_count():
    assert station_ceiling([], INFO, [1], NOW) == ()
    bare = ExternalLimit("EMS", 0, NOW)  # no schedule: what it holds is unknown
    assert station_ceiling([bare], INFO, [1], NOW) == ()
    assert station_ceiling([ExternalLimit("EMS", 0, NOW, cleared=True)], INFO, [1], NOW) == ()
    assert station_ceiling([limit(10, duration_s=60)], INFO, [1],
                           NOW + timedelta(minutes=2)) == ()
