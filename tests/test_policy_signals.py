"""Each signal kind the policy language handles, and how several events combine."""

from datetime import UTC, datetime, timedelta

import pytest

from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, Session, Site, StationInfo, value_at
from policies.model import parse_policy
from policies.plan import Conditions, decide_opt, make_plan, site_limit_at
from policies.validation import InvalidDocument

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SITE = Site(100_000)

ALL_SIGNALS = """
name: all
simple:
  levels: {0: 100%, 1: 60 kW, 2: 25%, 3: 0%}
electricity_price:
  tiers:
    - {above: 0.20, limit: 75%}
    - {above: 0.40, limit: 20 kW}
load_dispatch:
  other_load_kw: 10
load_control:
  level_offset: {0: 100%, 1: 50%, 2: 0%}
"""


def policy(text: str = ALL_SIGNALS):
    return parse_policy(text, "test.yaml")


def event(name: str, kind: str, *values: float, event_id: str = "e1", unit: str | None = None,
          scale: str | None = None, minutes: int = 10, **kw) -> DrEvent:
    intervals = tuple(
        SignalInterval(start=NOW + timedelta(minutes=minutes * i),
                       duration=timedelta(minutes=minutes), value=v)
        for i, v in enumerate(values))
    return DrEvent(
        event_id=event_id, modification_number=0, status=EventStatus.ACTIVE, start=NOW,
        duration=timedelta(minutes=minutes * len(values)),
        signals=(EventSignal(name=name, type=kind, intervals=intervals, unit=unit, scale=scale),),
        **kw)


def limit(ev: DrEvent, at: datetime = NOW, baseline: float | None = None, pol=None):
    baselines = {} if baseline is None else {ev.event_id: baseline}
    return site_limit_at([ev], pol or policy(), SITE, at, baselines)


def test_simple_levels_give_a_share_or_an_absolute_power():
    assert limit(event("SIMPLE", "level", 0))[0] == 100_000
    watts, reason = limit(event("SIMPLE", "level", 1))
    assert watts == 60_000 and "SIMPLE level 1" in reason and "60 kW" in reason
    assert limit(event("SIMPLE", "level", 2))[0] == 25_000
    assert limit(event("SIMPLE", "level", 7))[0] == 0  # above every level: the highest's


def test_absolute_power_never_above_capacity():
    pol = policy("name: p\nsimple:\n  levels: {0: 100%, 1: 500 kW}\n")
    assert limit(event("SIMPLE", "level", 1), pol=pol)[0] == 100_000


def test_price_tiers():
    ev = event("ELECTRICITY_PRICE", "price", 0.10, 0.25, 0.55, unit="currencyPerKWh")
    assert limit(ev, NOW)[0] == 100_000  # below every tier: no limit
    watts, reason = limit(ev, NOW + timedelta(minutes=10))
    assert watts == 75_000 and "tier above 0.2" in reason
    assert limit(ev, NOW + timedelta(minutes=20))[0] == 20_000


@pytest.mark.parametrize(("unit", "scale", "value", "expected"), [
    ("W", "k", 50, 40_000),  # powerReal in kW via the scale code; less 10 kW other load
    ("W", "none", 50_000, 40_000),
    ("W", None, 30_000, 20_000),
    ("kW", None, 30, 20_000),
    ("W", "M", 0.03, 20_000),
    (None, None, 30, 20_000),  # no unit: the policy's (kW)
    ("W", "k", 5, 0),  # setpoint under the other load: nothing left for EVs
])
def test_load_dispatch_setpoint_honours_unit_and_scale(unit, scale, value, expected):
    ev = event("LOAD_DISPATCH", "setpoint", value, unit=unit, scale=scale)
    watts, reason = limit(ev)
    assert watts == pytest.approx(expected)
    assert "load_dispatch.setpoint" in reason


def test_load_dispatch_setpoint_in_an_unknown_unit_is_ignored():
    assert limit(event("LOAD_DISPATCH", "setpoint", 5, unit="USD"))[0] == 100_000


def test_load_dispatch_delta_sheds_from_the_callers_baseline():
    ev = event("LOAD_DISPATCH", "delta", 15, unit="W", scale="k")
    watts, reason = limit(ev, baseline=70_000)
    assert watts == 55_000 and "baseline 70 kW less 15 kW" in reason
    # without a baseline the capacity stands in, and the reason says so
    watts, reason = limit(ev)
    assert watts == 85_000 and "baseline unknown" in reason
    # a delta larger than the baseline asks for zero, not a negative limit
    assert limit(ev, baseline=10_000)[0] == 0


def test_load_control_capacity_and_offsets():
    assert limit(event("LOAD_CONTROL", "x-loadControlCapacity", 0.4))[0] == 40_000
    assert limit(event("LOAD_CONTROL", "x-loadControlCapacity", 1.7))[0] == 100_000
    assert limit(event("LOAD_CONTROL", "x-loadControlLevelOffset", 1))[0] == 50_000
    assert limit(event("LOAD_CONTROL", "x-loadControlLevelOffset", 2))[0] == 0
    watts, reason = limit(event("LOAD_CONTROL", "x-loadControlPercentOffset", -30),
                          baseline=80_000)
    assert watts == 56_000 and "-30 %" in reason
    watts, _ = limit(event("LOAD_CONTROL", "x-loadControlSetpoint", 12, unit="W", scale="k"))
    assert watts == 12_000


def test_level_offset_without_a_table_is_not_handled():
    pol = policy("name: p\nload_control: {}\n")
    ev = event("LOAD_CONTROL", "x-loadControlLevelOffset", 2)
    assert limit(ev, pol=pol)[0] == 100_000
    assert decide_opt(ev, pol)[0] == "optOut"


def test_unhandled_signal_is_opted_out_with_the_reason():
    pol = policy("name: only-simple\n")
    opt, why = decide_opt(event("ELECTRICITY_PRICE", "price", 0.5), pol)
    assert opt == "optOut" and "ELECTRICITY_PRICE" in why
    assert decide_opt(event("ELECTRICITY_PRICE", "price", 0.5), policy())[0] == "optIn"


def test_most_restrictive_of_several_events_wins_and_the_plan_says_which():
    events = [
        event("SIMPLE", "level", 1, event_id="simple-1"),  # 60 kW
        event("LOAD_DISPATCH", "setpoint", 45, 45, unit="kW", event_id="dispatch"),  # 35 kW
        event("ELECTRICITY_PRICE", "price", 0.1, 0.5, event_id="price"),  # -, 20 kW
    ]
    stations = {f"CP{i}": StationInfo(f"CP{i}", 3, 230, 32) for i in range(4)}
    fleet = Fleet(stations, tuple(Session(s, 1, NOW) for s in stations))
    plan = make_plan(events, policy(), SITE, fleet, NOW)
    first = value_at(plan.site, NOW)
    assert first.limit_w == 35_000
    assert [link.kind for link in first.chain] == ["event", "signal", "rule"]
    assert first.chain[0].text == "event dispatch"
    second = value_at(plan.site, NOW + timedelta(minutes=10))
    assert second.limit_w == 20_000 and "event price" in second.reason
    third = value_at(plan.site, NOW + timedelta(minutes=20))
    assert third.limit_w == 100_000 and third.reason == "site capacity"
    for steps in plan.stations.values():
        step = value_at(steps, NOW + timedelta(minutes=10))
        kinds = [link.kind for link in step.chain]
        assert kinds[:3] == ["event", "signal", "rule"] and kinds[-1] == "allocation"
        assert "event price" in step.reason


def test_cancelled_event_asks_nothing():
    ev = event("SIMPLE", "level", 3).model_copy(update={"status": EventStatus.CANCELLED})
    assert limit(ev)[0] == 100_000


def test_opt_out_when_the_shed_exceeds_what_the_site_gives():
    pol = policy(ALL_SIGNALS + "opt_out:\n  shed_exceeds: 50%\n")
    opt, why = decide_opt(event("SIMPLE", "level", 3), pol, SITE)
    assert opt == "optOut" and "shed 100 kW" in why and "opt_out.shed_exceeds" in why
    assert decide_opt(event("SIMPLE", "level", 1), pol, SITE)[0] == "optIn"
    delta = event("LOAD_DISPATCH", "delta", 30, unit="kW")
    assert decide_opt(delta, pol, SITE, baseline_w=40_000)[0] == "optIn"
    assert decide_opt(delta.model_copy(update={"signals": (delta.signals[0].model_copy(
        update={"intervals": (delta.signals[0].intervals[0].model_copy(
            update={"value": 60.0}),)}),)}), pol, SITE, baseline_w=90_000)[0] == "optOut"


def test_baseline_passed_through_conditions():
    ev = event("LOAD_DISPATCH", "delta", 20, unit="kW")
    stations = {"CP0": StationInfo("CP0", 3, 230, 32)}
    plan = make_plan([ev], policy(), SITE, Fleet(stations, (Session("CP0", 1, NOW),)), NOW,
                     conditions=Conditions(baselines_w={"e1": 50_000}))
    assert plan.site[0].limit_w == 30_000


@pytest.mark.parametrize(("text", "line", "message"), [
    ("name: p\nsimple:\n  levels:\n    1: 20 kWh\n", 4, "simple.levels[1]: expected a share"),
    ("name: p\nsimple:\n  levels:\n    1: 1.5\n", 4, "write 20 kW for a power"),
    ("name: p\nelectricity_price:\n  tiers:\n    - {above: 0.5, limit: 1%}\n"
     "    - {above: 0.2, limit: 2%}\n", 3, "tiers: list tiers by rising `above` price"),
    ("name: p\nload_dispatch:\n  unit: kWh\n", 3, "load_dispatch.unit"),
    ("name: p\nallocation:\n  strategy: priority\n", 2, "allocation: strategy priority needs"),
])
def test_bad_policies_name_the_line_and_key(text, line, message):
    with pytest.raises(InvalidDocument) as error:
        parse_policy(text, "bad.yaml")
    assert f"bad.yaml:{line}:" in str(error.value)
    assert message in str(error.value)


CHEAPEST = """
name: cheap
electricity_price:
  cheapest: {charge_in: 50%, otherwise: 10%}
"""


def test_cheapest_intervals_charge_and_the_others_hold_back():
    # four 10-minute intervals; the cheapest half (0.10 and 0.15) charge freely
    ev = event("ELECTRICITY_PRICE", "price", 0.30, 0.10, 0.40, 0.15)
    pol = policy(CHEAPEST)
    got = [limit(ev, NOW + timedelta(minutes=10 * i), pol=pol)[0] for i in range(4)]
    assert got == [10_000, 100_000, 10_000, 100_000]
    watts, reason = limit(ev, NOW, pol=pol)
    assert "not among the cheapest 50%" in reason


def test_cheapest_mode_raises_the_dear_limit_to_meet_known_needs():
    ev = event("ELECTRICITY_PRICE", "price", 0.30, 0.10, 0.40, 0.15)
    stations = {"CP0": StationInfo("CP0", 3, 230, 16)}  # 11.04 kW
    # leaves after 20 minutes wanting 5 kWh: the one cheap interval before (10 min) gives
    # 1.84 kWh; the other 3.16 kWh must come in the dear first 10 minutes (18.96 kW > max)
    needy = Session("CP0", 1, NOW, energy_needed_wh=5_000,
                    departure=NOW + timedelta(minutes=20))
    plan = make_plan([ev], policy(CHEAPEST), SITE, Fleet(stations, (needy,)), NOW)
    first = value_at(plan.site, NOW)
    assert first.limit_w == pytest.approx(11_040)
    assert "to meet sessions' needs by their departure" in first.reason
    # a session that can be filled in the cheap intervals changes nothing
    easy = Session("CP0", 1, NOW, energy_needed_wh=1_000, departure=NOW + timedelta(hours=1))
    plan = make_plan([ev], policy(CHEAPEST), SITE, Fleet(stations, (easy,)), NOW)
    assert value_at(plan.site, NOW).limit_w == 10_000


def test_tiers_and_cheapest_together_take_the_lower():
    pol = policy("name: p\nelectricity_price:\n  tiers: [{above: 0.35, limit: 5%}]\n"
                 "  cheapest: {charge_in: 50%, otherwise: 10%}\n")
    ev = event("ELECTRICITY_PRICE", "price", 0.30, 0.10, 0.40, 0.15)
    assert limit(ev, NOW + timedelta(minutes=20), pol=pol)[0] == 5_000
    assert limit(ev, NOW, pol=pol)[0] == 10_000


def test_price_rule_needs_tiers_or_cheapest():
    with pytest.raises(InvalidDocument, match="give `tiers`, `cheapest`, or both"):
        policy("name: p\nelectricity_price: {}\n")
