"""What a station the bridge cannot steer is counted at, from what it tells (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import site_config

from bridge.cli import main as cli
from bridge.config import load_config
from bridge.ocpp.capabilities import parse_rated_current
from bridge.telemetry import read_meter_value
from bridge.worst_case import Declared, Rated, Told, count
from policies.fleet import StationInfo

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TEN_MIN = timedelta(minutes=10)
UNDECLARED = Declared(phases=False, max_current=False)
DEFAULT = StationInfo("CP", 3, 230.0, 32.0)  # site phases, ocpp.default_max_current_a


def reading(phases: list[str | None], amps: float = 16.0) -> dict:
    return {"timestamp": "2026-11-25T12:00:00Z", "sampledValue": [
        {"value": str(amps), "measurand": "Current.Import", "unit": "A",
         **({"phase": p} if p else {})} for p in phases]}


def test_meters_tell_the_lines_they_name():
    assert read_meter_value(reading(["L1"]), 230).current_lines == {1}
    assert read_meter_value(reading(["L2-N"]), 230).current_lines == {2}
    # three-phase, the EV on one: the idle lines are named at 0 A
    three = read_meter_value(reading(["L1", "L2", "L3"]), 230)
    assert three.current_lines == {1, 2, 3}
    # a current that names no phase says nothing of the lines
    assert read_meter_value(reading([None]), 230).current_lines == frozenset()
    assert read_meter_value(reading([None, "L1"]), 230).current_lines == frozenset()


def test_undeclared_station_is_counted_at_the_worst_case_until_it_tells_more():
    told = Told()
    worst = count(DEFAULT, UNDECLARED, told, T0, TEN_MIN)
    assert worst.watts == 32 * 230 * 3
    assert "ocpp.default_max_current_a" in worst.reason and "not declared" in worst.reason
    # two readings naming L2 only are not enough; the third is
    for second in range(2):
        told.observe(T0 + timedelta(seconds=second), 3_680, frozenset({2}))
    assert count(DEFAULT, UNDECLARED, told, T0, TEN_MIN).watts == 32 * 230 * 3
    told.observe(T0 + timedelta(seconds=2), 3_680, frozenset({2}))
    single = count(DEFAULT, UNDECLARED, told, T0, TEN_MIN)
    assert single.watts == 32 * 230
    assert (single.info.phases, single.info.phase) == (1, 2)
    assert "its meter reports current on L2 only" in single.reason
    # a key of its own states its maximum
    told.rated = Rated("Vendor.MaxCurrentA", amps=16)
    rated = count(DEFAULT, UNDECLARED, told, T0, TEN_MIN)
    assert rated.watts == 16 * 230 and "its configuration key Vendor.MaxCurrentA" in rated.reason
    # any reading naming another line ends the single-phase reading for good
    told.observe(T0 + timedelta(seconds=3), 3_680, frozenset({1, 2, 3}))
    assert count(DEFAULT, UNDECLARED, told, T0, TEN_MIN).watts == 16 * 230 * 3


def test_declared_hardware_is_not_narrowed_by_the_station():
    told = Told(rated=Rated("MaxCurrent", amps=10))
    for second in range(5):
        told.observe(T0 + timedelta(seconds=second), 2_300, frozenset({1}))
    declared = count(StationInfo("CP", 3, 230.0, 32.0), Declared(), told, T0, TEN_MIN)
    assert declared.watts == 32 * 230 * 3 and declared.info.phases == 3


def test_measured_peak_counts_after_a_while_and_a_new_ev_starts_over():
    told = Told()
    told.sessions(frozenset({7}))
    start = T0
    for second in range(0, 300, 10):  # the EV ramps up to 16 A on three phases
        told.observe(start + timedelta(seconds=second), min(11_040, 2_000 + 100 * second),
                     frozenset({1, 2, 3}))
    early = count(DEFAULT, UNDECLARED, told, start + timedelta(seconds=300), TEN_MIN)
    assert early.watts == 32 * 230 * 3  # not long enough to know the EV
    after = start + timedelta(minutes=11)
    told.observe(after, 10_900, frozenset({1, 2, 3}))
    learned = count(DEFAULT, UNDECLARED, told, after, TEN_MIN)
    assert learned.watts == 11_040 * 1.25
    assert "its peak of 11.0 kW" in learned.reason
    # the same EV still: the peak stays; a new transaction brings a new EV
    assert not told.sessions(frozenset({7}))
    assert told.sessions(frozenset({7, 8}))
    assert count(DEFAULT, UNDECLARED, told, after, TEN_MIN).watts == 32 * 230 * 3


def test_never_counted_below_what_it_draws():
    told = Told(rated=Rated("MaxCurrent", amps=10))  # a key that says too little
    for second in range(3):
        told.observe(T0 + timedelta(seconds=second), 2_000, frozenset({1}))
    assert count(DEFAULT, UNDECLARED, told, T0, TEN_MIN).watts == 10 * 230
    told.observe(T0 + timedelta(seconds=4), 5_000, frozenset({1}))
    more = count(DEFAULT, UNDECLARED, told, T0, TEN_MIN)
    assert more.watts == 10 * 230 * 3  # its lines are in doubt: the site's phases again
    assert more.info.phases == 3 and "measured drawing 5.0 kW" in more.reason
    told.observe(T0 + timedelta(seconds=5), 9_000, frozenset({1}))
    assert count(DEFAULT, UNDECLARED, told, T0, TEN_MIN).watts == 9_000


def test_rated_current_is_read_from_vendor_keys_by_name():
    def keys(**pairs: str) -> list[dict]:
        return [{"key": k, "readonly": True, "value": v} for k, v in pairs.items()]

    assert parse_rated_current(keys(MaxCurrent="16", MinCurrent="6")) == \
        Rated("MaxCurrent", amps=16)
    assert parse_rated_current([{"key": "Station.MaxCurrentA", "value": " 32 "},
                                {"key": "MaxChargeRate", "value": 20}]) == \
        Rated("Station.MaxCurrentA", amps=32)
    # not a maximum current: the standard rate unit, a cable, a fallback, kW, mA, junk
    assert parse_rated_current(keys(
        ChargingScheduleAllowedChargingRateUnit="Current", CableMaxCurrent="20",
        FallbackMaxCurrent="6", MaxChargeRateKW="11", MaxCurrentmA="32000",
        MaxChargingCurrent="auto", MaxCurrentLimit="9000")) is None
    assert parse_rated_current(["junk", {"value": "16"}]) is None  # type: ignore[list-item]


def test_check_warns_for_every_listed_station_without_its_maximum(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(site_config("http://127.0.0.1:1/x", 9999).replace(
        "  meter_interval_s: 1\n",
        "  meter_interval_s: 1\n  stations:\n    - id: CP-1\n      max_current_a: 16\n"
        "    - id: CP-2\n    - {id: CP-3, phases: 1}\n"))
    config = load_config(path)
    assert config.declared("CP-1") == Declared(phases=False, max_current=True)
    assert config.declared("CP-3") == Declared(phases=True, max_current=False)
    assert config.declared("unlisted") == UNDECLARED
    assert cli(["check", "--config", str(path)]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "WARNING" in line]
    assert len(warnings) == 2
    assert f"{path}:14: ocpp.stations[1] (CP-2): no max_current_a" in warnings[0]
    assert "ocpp.default_max_current_a (32 A per phase)" in warnings[0]
    assert "ocpp.stations[2] (CP-3)" in warnings[1]
