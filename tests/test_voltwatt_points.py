"""The volt-watt rule as points: thresholds worth a station's report, and the curve a
station can follow by itself, equal to the rule's own reading of it."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from policies.model import VoltageRule
from policies.voltwatt import curve_share
from policies.voltwatt_points import (
    MAX_THRESHOLDS,
    STEP_PU,
    interpolate,
    response_points,
    thresholds,
)

MIN_SHARE = 6 / 32
RULE = VoltageRule(curve={0.95: 1.0, 0.90: "min"}, pause_below=0.88,
                   over_voltage={"start": 1.05, "full": 1.08}, pause_above=1.10)


def test_thresholds_cover_the_rule_and_step_down_the_slope():
    found = thresholds(RULE)
    pus = [t.pu for t in found]
    assert pus == sorted(pus) and len(set(pus)) == len(pus)
    for pu in (0.88, 0.90, 0.95, 1.05, 1.08, 1.10):
        assert pu in pus
    # the sag's slope 0.90-0.95 in steps of the hysteresis (0.01 pu)
    assert [0.91, 0.92, 0.93, 0.94] == [p for p in pus if 0.90 < p < 0.95]
    assert {t.side for t in found if t.pu < 1} == {"below"}
    assert {t.side for t in found if t.pu > 1} == {"above"}
    assert next(t for t in found if t.pu == 0.88).why == "pause_below"


def test_thresholds_fit_the_limit_and_keep_the_rules_own_points():
    steep = VoltageRule(curve={0.99: 1.0, 0.90: 0.5, 0.85: "min"}, pause_below=0.84,
                        hysteresis=0.0)
    found = thresholds(steep, limit=8)
    assert len(found) <= 8
    assert {0.84, 0.85, 0.90, 0.99} <= {t.pu for t in found}
    # with room, the steps are the minimum spacing
    roomy = [t.pu for t in thresholds(steep, limit=100)]
    assert 0.905 in roomy and 0.91 in roomy


def test_a_flat_curve_has_its_points_only():
    flat = VoltageRule(curve={0.9: 1.0}, pause_below=None)
    assert [(t.pu, t.side) for t in thresholds(flat)] == [(0.9, "below")]


def test_response_points_of_the_default_rule():
    points = response_points(RULE, MIN_SHARE)
    assert points == [
        (pytest.approx(0.88 - STEP_PU), 0.0), (0.88, MIN_SHARE), (0.90, MIN_SHARE),
        (0.95, 1.0), (1.10, 1.0), (pytest.approx(1.10 + STEP_PU), 0.0)]


def test_a_stretch_from_zero_keeps_the_minimum():
    rule = VoltageRule(curve={0.90: 0.0, 0.95: 1.0}, pause_below=None)
    points = response_points(rule, 0.2)
    for pu in (0.9001, 0.905, 0.91, 0.93, 0.95, 0.97, 0.85):
        assert interpolate(points, pu) == pytest.approx(curve_share(rule, pu, 0.2), abs=1e-9)


curves = st.dictionaries(
    st.floats(0.80, 1.10).map(lambda x: round(x, 3)),
    st.one_of(st.floats(0, 1).map(lambda x: round(x, 3)), st.just("min")),
    min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(curve=curves, min_share=st.floats(0.05, 0.5),
       below=st.one_of(st.none(), st.floats(0.70, 0.80)),
       above=st.one_of(st.none(), st.floats(1.11, 1.3)),
       pu=st.floats(0.6, 1.4))
def test_a_station_following_the_points_answers_as_the_rule(curve, min_share, below, above, pu):
    rule = VoltageRule(curve=curve, pause_below=below, pause_above=above)
    # the steps: a pause threshold, and a point at 0 next to charging at the minimum
    steps = [below, above, *(at for at, value in curve.items() if value == 0)]
    assume(all(step is None or abs(pu - step) > 2 * STEP_PU for step in steps))
    points = response_points(rule, min_share)
    assert interpolate(points, pu) == pytest.approx(curve_share(rule, pu, min_share), abs=1e-6)
    assert all(a[0] < b[0] for a, b in zip(points, points[1:], strict=False))


@settings(max_examples=200, deadline=None)
@given(curve=curves, hysteresis=st.floats(0, 0.1), limit=st.integers(4, 20))
def test_thresholds_hold_every_point_within_the_limit_when_they_can(curve, hysteresis, limit):
    rule = VoltageRule(curve=curve, pause_below=None, hysteresis=hysteresis)
    found = thresholds(rule, limit=limit)
    own = {round(float(pu), 4) for pu in curve}
    assert own <= {t.pu for t in found}
    assert len(found) <= max(limit, len(own))


def test_the_default_limit_applies():
    steep = VoltageRule(curve={1.0: 1.0, 0.80: "min"}, pause_below=None, hysteresis=0.0)
    assert len(thresholds(steep)) <= MAX_THRESHOLDS
