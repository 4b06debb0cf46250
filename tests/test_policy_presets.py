"""Every preset shipped with drbridge loads and does what its description says."""

from datetime import UTC, datetime, timedelta

import pytest

from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, Session, Site, StationInfo, value_at
from policies.model import PRESETS, parse_policy, preset_text
from policies.plan import Conditions, decide_opt, make_plan, site_limit_at

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SITE = Site(100_000)


def preset(name: str):
    return parse_policy(preset_text(name), f"<preset {name}>")


def event(name: str, kind: str, value: float, unit: str | None = None) -> DrEvent:
    return DrEvent(
        event_id="e", modification_number=0, status=EventStatus.ACTIVE, start=NOW,
        duration=timedelta(minutes=10), signals=(EventSignal(
            name=name, type=kind, unit=unit, intervals=(SignalInterval(
                start=NOW, duration=timedelta(minutes=10), value=value),)),))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_is_named_after_its_file(name):
    policy = preset(name)
    assert policy.name == name and policy.description


def limit(name: str, ev: DrEvent) -> float:
    return site_limit_at([ev], preset(name), SITE, NOW)[0]


def test_default_follows_simple_levels():
    assert [limit("default", event("SIMPLE", "level", v)) for v in range(4)] == \
        [100_000, 50_000, 25_000, 0]
    assert decide_opt(event("ELECTRICITY_PRICE", "price", 0.9), preset("default"))[0] == "optOut"


def test_price_responsive_follows_price_tiers():
    prices = [0.10, 0.30, 0.45, 0.80]
    assert [limit("price-responsive", event("ELECTRICITY_PRICE", "price", p)) for p in prices] \
        == [100_000, 70_000, 40_000, 10_000]
    assert preset("price-responsive").allocation.demand_aware.enabled


def test_emergency_only_opts_out_of_ordinary_levels_and_sheds_all_at_level_three():
    policy = preset("emergency-only")
    opt, why = decide_opt(event("SIMPLE", "level", 2), policy)
    assert opt == "optOut" and "opt_out.simple_below" in why
    assert decide_opt(event("SIMPLE", "level", 3), policy)[0] == "optIn"
    assert limit("emergency-only", event("SIMPLE", "level", 3)) == 0
    assert limit("emergency-only", event("LOAD_DISPATCH", "setpoint", 30, unit="kW")) == 30_000
    assert decide_opt(event("LOAD_DISPATCH", "delta", 30), policy)[0] == "optOut"


def test_fleet_depot_puts_the_fleet_first_and_holds_a_safe_limit():
    policy = preset("fleet-depot")
    stations = {s: StationInfo(s, 3, 230, 32) for s in ("VISITOR-1", "DEPOT-1", "DEPOT-2")}
    fleet = Fleet(stations, tuple(Session(s, 1, NOW - timedelta(minutes=i))
                                  for i, s in enumerate(reversed(list(stations)))))
    plan = make_plan([event("SIMPLE", "level", 3)], policy, Site(100_000), fleet, NOW)
    # level 3 keeps 10 kW: room for two minimums (4.14 kW), and both go to the fleet
    got = {sid: steps[0].limit_w for sid, steps in plan.stations.items()}
    assert got["VISITOR-1"] == 0 and got["DEPOT-1"] > 0 and got["DEPOT-2"] > 0
    silent = make_plan([], policy, Site(100_000), fleet, NOW,
                       conditions=Conditions(vtn_last_heard=NOW - timedelta(minutes=16)))
    assert silent.site[0].limit_w == 60_000
    assert value_at(silent.site, NOW).chain[0].kind == "failsafe"
    assert limit("fleet-depot", event("LOAD_CONTROL", "x-loadControlLevelOffset", 2)) == 35_000


def test_check_rejects_a_bad_policy_with_its_line(tmp_path, capsys):
    from bridge.cli import main

    policy = tmp_path / "mine.yaml"
    policy.write_text("name: mine\nelectricity_price:\n  tiers:\n    - {above: 0.3, limit: 5 kWh}\n"
                      "allocation:\n  rotation: {guard_s: -1}\n")
    config = tmp_path / "site.yaml"
    config.write_text("ven: {vtn_url: http://x, ven_name: v}\nsite: {capacity_kw: 10}\n"
                      "policy: mine.yaml\n")
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{policy}:4: electricity_price.tiers[0].limit: expected a share" in err
    assert f"{policy}:6: allocation.rotation.guard_s: Input should be greater than or equal" \
        in err
