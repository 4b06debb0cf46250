"""The site as a tree: circuits, lines and stations; every node's limit holds."""

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import load_config_text
from policies.fleet import Circuit, Fleet, Session, Site, StationInfo
from policies.model import parse_policy, preset_text
from policies.plan import make_plan
from policies.tree import (
    _SETTLE_RELATIVE,
    FixedLoad,
    Load,
    TreeError,
    _settle,
    allocate_tree,
    blocking,
    circuit_paths,
    overloads,
)
from policies.validation import InvalidDocument

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = parse_policy(preset_text("default"), "default")
V = 230.0


def load(key, circuit=None, phases=3, line=1, min_a=6, max_a=32, weight=1.0) -> Load:
    info = StationInfo(str(key), phases, V, max_a, circuit, line)
    return Load(key, circuit, info.amps_per_watt(), info.watts(min_a), info.max_w, weight)


def test_single_phase_stations_on_one_line_are_held_by_that_lines_current():
    # a 32 A feeder: three single-phase 32 A stations on L1 share 32 A; one on L2 gets its own
    site = Site(100_000, circuits=(Circuit("feeder", max_current_a=32),))
    loads = [load(i, "feeder", phases=1, line=1) for i in range(3)]
    loads.append(load(9, "feeder", phases=1, line=2))
    shares = allocate_tree(100_000, loads, site)
    on_l1 = sum(shares[i].watts for i in range(3))
    assert on_l1 == pytest.approx(32 * V, rel=1e-6)
    assert shares[9].watts == pytest.approx(32 * V)
    assert "circuit feeder L1 current limit (32 A)" in shares[0].reason
    # a kW sum alone would have allowed 4 x 7.36 kW on a 22 kW three-phase feeder
    assert not overloads(site, 100_000, loads, {k: s.watts for k, s in shares.items()})


def test_three_phase_and_single_phase_share_a_panel():
    site = Site(100_000, circuits=(Circuit("panel", max_current_a=40, max_power_w=20_000),))
    loads = [load("3ph", "panel"), load("1ph", "panel", phases=1, line=3)]
    shares = allocate_tree(100_000, loads, site)
    watts = {k: s.watts for k, s in shares.items()}
    assert not overloads(site, 100_000, loads, watts)
    # L3 carries a third of the three-phase station and all of the single-phase one: it binds
    # (40 A = w/3V + w/V) before the 20 kW does
    assert watts["3ph"] == pytest.approx(watts["1ph"]) == pytest.approx(40 * V * 3 / 4)
    assert "L3 current limit" in shares["3ph"].reason
    site = Site(100_000, circuits=(Circuit("panel", max_current_a=63, max_power_w=20_000),))
    shares = allocate_tree(100_000, loads, site)
    assert sum(s.watts for s in shares.values()) == pytest.approx(20_000)
    assert "held by its maximum" in shares["1ph"].reason  # 7.36 kW on one line
    assert "power limit (20 kW)" in shares["3ph"].reason


def test_nested_circuits_each_hold():
    site = Site(60_000, max_current_a=80, circuits=(
        Circuit("panel", max_current_a=50), Circuit("feeder", parent="panel", max_current_a=20)))
    assert circuit_paths(site)["feeder"] == ("site", "panel", "feeder")
    loads = [load(i, "feeder") for i in range(3)] + [load(i, "panel") for i in range(3, 5)]
    shares = allocate_tree(60_000, loads, site)
    feeder = sum(shares[i].watts for i in range(3))
    assert feeder == pytest.approx(20 * 3 * V, rel=1e-6)
    panel = feeder + shares[3].watts + shares[4].watts
    assert panel <= 50 * 3 * V + 1e-6


def test_not_a_tree_is_refused():
    with pytest.raises(TreeError, match="cycle"):
        circuit_paths(Site(1, circuits=(Circuit("a", "b"), Circuit("b", "a"))))
    with pytest.raises(TreeError, match="unknown parent"):
        circuit_paths(Site(1, circuits=(Circuit("a", "nowhere"),)))


def test_fixed_load_takes_room_on_its_own_circuit():
    site = Site(100_000, circuits=(Circuit("a", max_current_a=32), Circuit("b")))
    fixed = [FixedLoad("a", StationInfo("x", 3, V, 32).amps_per_watt(), 16 * 3 * V)]
    shares = allocate_tree(100_000, [load(1, "a"), load(2, "b")], site, fixed)
    assert shares[1].watts == pytest.approx(16 * 3 * V)
    assert shares[2].watts == pytest.approx(32 * 3 * V)


def test_plan_places_stations_in_the_tree():
    site = Site(50_000, circuits=(Circuit("feeder", max_current_a=16),))
    stations = {
        "A": StationInfo("A", 1, V, 32, circuit="feeder", phase=2),
        "B": StationInfo("B", 1, V, 32, circuit="feeder", phase=2),
        "C": StationInfo("C", 3, V, 32),
    }
    fleet = Fleet(stations, tuple(Session(s, 1, NOW) for s in stations))
    plan = make_plan([], POLICY, site, fleet, NOW)
    a, b, c = (plan.stations[s][0].limit_w for s in "ABC")
    assert a + b <= 16 * V + 1e-6
    assert min(a, b) >= 6 * V - 1e-6
    assert c == pytest.approx(32 * 3 * V)


def test_connector_maximum_caps_a_station():
    info = StationInfo("A", 3, V, 32, connector_max_a=((1, 16),))
    assert info.max_w_for([1]) == pytest.approx(16 * 3 * V)
    assert info.max_w_for([2]) == pytest.approx(32 * 3 * V)
    assert info.max_w_for([1, 2]) == info.max_w  # never above the station's own maximum
    assert StationInfo("P", 3, V, 32, max_power_w=11_000).max_w == 11_000


@given(st.sampled_from([1, 3]), st.floats(100, 400), st.floats(6, 80),
       st.one_of(st.none(), st.floats(1_000, 50_000)),
       st.lists(st.integers(1, 4), max_size=5))
def test_a_station_without_connector_limits_draws_its_maximum_on_any_connectors(
        phases, voltage, amps, max_power, connectors):
    info = StationInfo("A", phases, voltage, amps, max_power_w=max_power)
    # as with a limit per connector that limits nothing
    same = StationInfo("A", phases, voltage, amps, max_power_w=max_power,
                       connector_max_a=tuple((c, amps) for c in range(1, 5)))
    assert info.max_w_for(connectors) == same.max_w_for(connectors) == info.max_w


# -- property: random trees, fleets and limits ----------------------------------------------

@st.composite
def trees(draw):
    count = draw(st.integers(0, 5))
    circuits = []
    for i in range(count):
        parent = draw(st.sampled_from([None, *[c.circuit_id for c in circuits]]))
        circuits.append(Circuit(
            f"c{i}", parent,
            draw(st.one_of(st.none(), st.floats(5, 120))),
            draw(st.one_of(st.none(), st.floats(2_000, 80_000)))))
    site = Site(draw(st.floats(0, 200_000)), V,
                max_current_a=draw(st.one_of(st.none(), st.floats(10, 250))),
                circuits=tuple(circuits))
    ids = [None, *[c.circuit_id for c in circuits]]
    loads = [
        load(i, draw(st.sampled_from(ids)), phases=draw(st.sampled_from([1, 3])),
             line=draw(st.integers(1, 3)), max_a=draw(st.floats(6, 63)),
             weight=draw(st.sampled_from([1.0, 1.0, 2.0, 0.5])))
        for i in range(draw(st.integers(0, 25)))
    ]
    return site, loads


@settings(max_examples=150, deadline=None)
@given(trees(), st.floats(0, 200_000))
def test_tree_invariants(tree, limit):
    site, loads = tree
    limit = min(limit, site.capacity_w)
    shares = allocate_tree(limit, loads, site)
    watts = {k: s.watts for k, s in shares.items()}
    # no node's limit is exceeded (nor the site limit)
    assert not overloads(site, limit, loads, watts, slack=1e-6)
    for item in loads:
        w = watts[item.key]
        # paused, or between the minimum and the maximum
        assert w == 0 or item.min_w - 1e-6 <= w <= item.max_w + 1e-6
        # no stranded headroom: a paused session has no room for its minimum on its path
        if w == 0:
            assert blocking(site, limit, loads, watts, item) is not None
    # when demand exceeds the limit and nothing else binds, the sum is within one minimum
    if not site.circuits and site.max_current_a is None and loads:
        if sum(item.max_w for item in loads) > limit:
            assert limit - sum(watts.values()) < max(item.min_w for item in loads) + 1e-6


def test_flat_config_stays_valid_and_a_tree_config_loads(tmp_path: Path):
    flat = "ven: {vtn_url: http://x, ven_name: v}\nsite: {capacity_kw: 22}\n"
    assert load_config_text(flat, tmp_path / "flat.yaml").site.circuits == ()
    tree = """
ven: {vtn_url: http://x, ven_name: v}
ocpp:
  stations:
    - {id: A, phases: 1, phase: L3, circuit: feeder-1, connectors: [{id: 1, max_current_a: 16}]}
    - {id: B, max_power_kw: 11}
site:
  capacity_kw: 60
  max_current_a: 100
  circuits:
    - id: panel
      max_current_a: 63
      circuits:
        - {id: feeder-1, max_current_a: 32, max_power_kw: 7}
"""
    config = load_config_text(tree, tmp_path / "tree.yaml")
    site = config.site
    assert site.max_current_a == 100
    assert [(c.circuit_id, c.parent, c.max_power_w) for c in site.circuits] == [
        ("panel", None, None), ("feeder-1", "panel", 7_000)]
    a = config.station_info("A")
    assert (a.circuit, a.phases, a.phase, a.connector_max_a) == ("feeder-1", 1, 3, ((1, 16),))
    assert config.station_info("B").max_w == 11_000


@pytest.mark.parametrize(("stations", "line", "message"), [
    ("    - {id: A, circuit: feedr}\n", 4, "ocpp.stations[0].circuit: unknown circuit 'feedr'"),
    ("    - {id: A, phase: L2}\n", 4, "only a single-phase station"),
])
def test_tree_config_errors_name_line_and_key(tmp_path: Path, stations, line, message):
    text = ("ven: {vtn_url: http://x, ven_name: v}\nocpp:\n  stations:\n" + stations +
            "site:\n  capacity_kw: 10\n  circuits:\n    - {id: feeder}\n")
    with pytest.raises(InvalidDocument) as error:
        load_config_text(text, tmp_path / "site.yaml")
    assert f"site.yaml:{line}: {message}" in str(error.value) or message in str(error.value)
    assert f"site.yaml:{line}:" in str(error.value)


def test_duplicate_circuit_ids_are_refused(tmp_path: Path):
    text = ("ven: {vtn_url: http://x, ven_name: v}\nsite:\n  capacity_kw: 10\n  circuits:\n"
            "    - {id: a}\n    - {id: a}\n")
    with pytest.raises(InvalidDocument, match="site.circuits\\[1\\].id: circuit id 'a' is used"):
        load_config_text(text, tmp_path / "site.yaml")


def test_time_of_plan_step_is_now():
    plan = make_plan([], POLICY, Site(10_000), Fleet({}), NOW + timedelta(seconds=1))
    assert plan.site[0].start == NOW + timedelta(seconds=1)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1.0, max_value=1e7), st.integers(min_value=1, max_value=5000))
def test_a_settled_level_fits_and_lies_within_a_relative_1e_12_of_the_highest(
        top: float, ulps_below: int):
    # the highest level that fits lies a few floats below the exact one that did not
    highest = top
    for _ in range(ulps_below):
        highest = math.nextafter(highest, 0.0)
    trials: list[float] = []

    def fits(level: float) -> bool:
        trials.append(level)
        return level <= highest

    settled = _settle(fits, 0.0, top)
    assert fits(settled) and settled <= highest
    assert highest - settled <= _SETTLE_RELATIVE * top
    assert len(trials) <= 12  # bracketed near the top, not halved down to the last float
