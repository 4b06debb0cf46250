from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import telemetry
from bridge.telemetry import ConnectorMeter, read_meter_value, site_load_w

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def meter_value(at: datetime, *sampled: dict) -> dict:
    return {"timestamp": at.isoformat().replace("+00:00", "Z"), "sampledValue": list(sampled)}


def test_power_measurand_wins_and_units_scale():
    reading = read_meter_value(meter_value(
        T0,
        {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "10", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
        {"value": "12.5", "unit": "kWh"},  # no measurand: Energy.Active.Import.Register
    ), 230)
    assert reading is not None
    assert reading.power_w == 7_400 and reading.energy_wh == 12_500
    assert reading.at == T0


def test_power_from_per_phase_current_or_power():
    amps = read_meter_value(meter_value(T0, *[
        {"value": "16", "measurand": "Current.Import", "phase": p, "unit": "A"}
        for p in ("L1", "L2", "L3")]), 230)
    assert amps is not None and amps.power_w == 3 * 16 * 230
    phases = read_meter_value(meter_value(T0, *[
        {"value": "1000", "measurand": "Power.Active.Import", "phase": p, "unit": "W"}
        for p in ("L1", "L2")]), 230)
    assert phases is not None and phases.power_w == 2000


def test_power_from_energy_deltas():
    meter = ConnectorMeter()
    assert meter.update(read_meter_value(meter_value(T0, {"value": "1000"}), 230)) is None
    later = read_meter_value(meter_value(T0 + timedelta(seconds=60), {"value": "1110"}), 230)
    assert meter.update(later) == 110 * 60  # 110 Wh in a minute = 6.6 kW
    assert meter.latest == (T0 + timedelta(seconds=60), 6_600)


def test_garbage_is_skipped_not_fatal():
    assert read_meter_value({"timestamp": "yesterday"}, 230) is None
    junk = {"value": "n/a", "measurand": "Power.Active.Import"}
    reading = read_meter_value(meter_value(T0, junk), 230)
    assert reading is not None and reading.power_w is None


def test_stale_connectors_stop_counting():
    latest = [(T0, 5_000.0), (T0 - timedelta(seconds=200), 7_000.0), None]
    assert site_load_w(latest, T0 + timedelta(seconds=10), timedelta(seconds=180)) == 5_000


def test_grid_measurands_per_phase():
    reading = read_meter_value(meter_value(
        T0,
        *[{"value": v, "measurand": "Voltage", "phase": f"{p}-N", "unit": "V"}
          for p, v in (("L1", "229.5"), ("L2", "221"), ("L3", "0.2251"))][:2],
        {"value": "0.2251", "measurand": "Voltage", "phase": "L3-N", "unit": "kV"},
        {"value": "400", "measurand": "Voltage", "phase": "L1-L2", "unit": "V"},  # skipped
        *[{"value": "16", "measurand": "Current.Import", "phase": p, "unit": "A"}
          for p in ("L1", "L2")],
        {"value": "49.98", "measurand": "Frequency"},
        {"value": "7360", "measurand": "Power.Active.Import", "unit": "W"},
    ), 230)
    assert reading is not None and reading.has_voltage
    assert reading.voltages_v == (229.5, 221.0, 225.1)
    assert reading.currents_a == (16.0, 16.0, None)
    assert reading.frequency_hz == 49.98 and reading.power_w == 7360


def test_single_phase_voltage_without_a_phase_is_l1():
    reading = read_meter_value(meter_value(T0, {"value": "212", "measurand": "Voltage"}), 230)
    assert reading is not None and reading.voltages_v == (212.0, None, None)
    plain = read_meter_value(meter_value(T0, {"value": "1"}), 230)
    assert plain is not None and not plain.has_voltage


# -- the reading rules, written plainly, against what the bridge runs ------------------------
def reference_reading(meter_value: dict, voltage_v: float) -> tuple | None:
    """The rules of read_meter_value, one at a time: what its result must equal."""
    at = telemetry.parse_timestamp(meter_value.get("timestamp", ""))
    if at is None:
        return None
    power = energy = frequency = None
    phase_powers: dict = {}
    phase_amps: dict = {}
    volts: list = [None, None, None]
    ignored = []
    phaseless = False
    for sampled in meter_value.get("sampledValue") or []:
        measurand = sampled.get("measurand", telemetry.ENERGY)
        if measurand not in telemetry.PLAUSIBLE_MAX:
            continue
        try:
            value = float(sampled.get("value"))
        except (TypeError, ValueError, OverflowError):
            ignored.append((measurand, telemetry.UNREADABLE))
            continue
        unit = sampled.get("unit")
        value *= {"W": 1.0, "kW": 1000.0, "Wh": 1.0, "kWh": 1000.0, "A": 1.0, "V": 1.0,
                  "kV": 1000.0}.get(unit, 1.0) if unit else 1.0
        why = telemetry.implausible(measurand, value)
        if why is not None:
            ignored.append((measurand, why))
            continue
        phase = sampled.get("phase")
        if measurand == telemetry.POWER:
            if phase:
                phase_powers[phase] = value
            else:
                power = value
        elif measurand == telemetry.ENERGY and not phase:
            energy = value
        elif measurand == telemetry.CURRENT:
            phase_amps[phase or "L1"] = value
            phaseless = phaseless or not phase
        elif measurand == telemetry.VOLTAGE:
            line = telemetry._line(phase)
            if line is not None and value > 0:
                volts[line] = value
        elif measurand == telemetry.FREQUENCY and value > 0:
            frequency = value
    if power is None and phase_powers:
        power = sum(phase_powers.values())
    elif power is None and phase_amps:
        power = sum(phase_amps.values()) * voltage_v
    amps: list = [None, None, None]
    for phase, value in phase_amps.items():
        line = telemetry._line(phase)
        if line is not None:
            amps[line] = value
    lines = frozenset() if phaseless else frozenset(
        n + 1 for n, a in enumerate(amps) if a is not None)
    return (at, power, energy, tuple(volts), tuple(amps), frequency, tuple(ignored), lines)


MEASURANDS = [telemetry.POWER, telemetry.ENERGY, telemetry.CURRENT, telemetry.VOLTAGE,
              telemetry.FREQUENCY, "SoC", "Power.Offered"]
PHASES = ["L1", "L2", "L3", "l2", "L1-N", "L2-n", "L3-N", "L1-L2", "N", "", []]  # [] unhashable
sampled_value = st.fixed_dictionaries({}, optional={
    "measurand": st.sampled_from(MEASURANDS),
    "value": st.sampled_from(["0", "-0.0", "16", "7.4", "230", "49.98", "1e308", "-1", "nan",
                              "inf", "-inf", "abc", "", "12500000", "1e13"])
    | st.floats(allow_nan=True).map(str) | st.integers(-10, 10**7),
    "unit": st.sampled_from(["W", "kW", "Wh", "kWh", "A", "V", "kV", "Hertz", ""]),
    "phase": st.sampled_from(PHASES),
})


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(sampled_value, max_size=8),
       st.sampled_from(["2026-12-05T01:00:00.123Z", "2026-12-05T01:00:00", "yesterday"]))
def test_a_meter_value_is_read_as_the_rules_say(samples: list, timestamp: str):
    meter_value = {"timestamp": timestamp, "sampledValue": samples}
    got = read_meter_value(meter_value, 230.0)
    want = reference_reading(meter_value, 230.0)
    if want is None:
        assert got is None
        return
    assert got is not None
    # NaN never reaches a reading, so tuples compare by value
    assert tuple(got) == want
