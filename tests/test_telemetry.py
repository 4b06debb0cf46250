from datetime import UTC, datetime, timedelta

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
