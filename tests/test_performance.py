"""Event performance (pure): baseline from comparable days or before the event, shed, compliance."""

from datetime import UTC, datetime, timedelta

from bridge.performance import (
    BaselineSettings,
    comparable_days,
    evaluate,
    exempt_during,
    non_compliant_stations,
)
from policies.fleet import Step

# a Wednesday
START = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
STEP = timedelta(minutes=15)


def flat(start: datetime, end: datetime, load_w: float, limit_w: float = 50_000,
         every: timedelta = timedelta(minutes=1)) -> list[tuple[datetime, float, float]]:
    rows = []
    at = start
    while at < end:
        rows.append((at, load_w, limit_w))
        at += every
    return rows


def test_comparable_days_skip_weekends_for_a_weekday():
    offsets = comparable_days(START, BaselineSettings(days=5))
    days = [(START - timedelta(days=d)).strftime("%a") for d in offsets]
    assert days == ["Tue", "Mon", "Fri", "Thu", "Wed"]
    saturday = START + timedelta(days=3)
    weekend = comparable_days(saturday, BaselineSettings(days=3))
    assert [(saturday - timedelta(days=d)).strftime("%a") for d in weekend] == \
        ["Sun", "Sat", "Sun"]
    assert comparable_days(START, BaselineSettings(days=3, comparable="all")) == [1, 2, 3]


def test_baseline_from_previous_comparable_days():
    rows = []
    for back, load in ((1, 40_000), (2, 30_000), (5, 20_000)):  # Tue, Mon, Fri
        day = timedelta(days=back)
        rows += flat(START - day, END - day, load)
    rows += flat(START - timedelta(days=4), END - timedelta(days=4), 99_000)  # a Saturday
    rows += flat(START, END, 10_000, limit_w=12_500)
    perf = evaluate("e1", START, END, rows, STEP, BaselineSettings(days=3, min_days=3))
    assert len(perf.intervals) == 4
    assert all(i.baseline_w == 30_000 for i in perf.intervals)
    assert all(i.measured_w == 10_000 and i.limit_w == 12_500 for i in perf.intervals)
    assert perf.achieved_shed_w == 20_000
    assert perf.requested_shed_w == 17_500
    assert perf.compliance_pct == 100
    assert round(perf.delivered_pct or 0) == 114
    assert "3 previous weekdays" in perf.method
    assert "2026-11-24, 2026-11-23, 2026-11-20" in perf.method


def test_short_history_falls_back_to_the_load_before_the_event():
    rows = flat(START - timedelta(days=1), END - timedelta(days=1), 40_000)
    rows += flat(START - timedelta(hours=1), START, 24_000)
    rows += flat(START, END, 8_000, limit_w=10_000)
    perf = evaluate("e1", START, END, rows, STEP, BaselineSettings(days=10, min_days=3))
    assert perf.method.startswith("pre-event load: mean site load over the 60 min")
    assert "only 1 previous weekdays with data" in perf.method
    assert all(i.baseline_w == 24_000 for i in perf.intervals)
    assert perf.achieved_shed_w == 16_000


def test_the_pre_event_baseline_leaves_out_the_second_when_limits_already_fall():
    # stations lower their draw up to a second ahead of the start: that is the event's shed
    rows = flat(START - timedelta(hours=1), START - timedelta(seconds=1), 24_000)
    rows += [(START - timedelta(seconds=1) + timedelta(milliseconds=ms), 8_000, 10_000)
             for ms in (0, 500)]
    rows += flat(START, END, 8_000, limit_w=10_000)
    perf = evaluate("e1", START, END, rows, STEP, BaselineSettings(days=10, min_days=3))
    assert all(i.baseline_w == 24_000 for i in perf.intervals)
    assert "ending 1 s before the start" in perf.method


def test_no_history_at_all_says_so():
    perf = evaluate("e1", START, END, flat(START, END, 8_000), STEP, BaselineSettings())
    assert perf.method.startswith("no baseline")
    assert perf.achieved_shed_w is None and perf.requested_shed_w is None
    assert perf.compliance_pct == 100


def test_compliance_counts_intervals_over_the_limit():
    rows = flat(START, START + 2 * STEP, 9_000, limit_w=10_000)
    rows += flat(START + 2 * STEP, END, 12_000, limit_w=10_000)
    perf = evaluate("e1", START, END, rows, STEP, BaselineSettings())
    assert perf.compliance_pct == 50


def test_cap_stands_in_where_no_limit_was_recorded():
    perf = evaluate("e1", START, END, [], STEP, BaselineSettings(), cap_w=7_000)
    assert all(i.limit_w == 7_000 and i.measured_w is None for i in perf.intervals)
    assert perf.compliance_pct is None


def test_non_compliant_station_stays_above_its_accepted_limit():
    schedule = (Step(START, 11_000, "site capacity"), Step(START + STEP, 4_000, "event"))
    accepted = {"CP1": [(START, schedule)], "CP2": [(START, schedule)]}
    samples = []
    for second in range(0, 3600, 10):
        at = START + timedelta(seconds=second)
        samples.append(("CP1", at, 4_000.0 if at >= START + STEP + timedelta(seconds=10)
                        else 11_000.0))  # follows within the grace
        samples.append(("CP2", at, 11_000.0))  # ignores the decrease
        samples.append(("CP3", at, 11_000.0))  # never accepted a profile: not judged
    assert non_compliant_stations(samples, accepted, START, END) == ["CP2"]


def test_stations_exempt_during_the_event():
    log = [
        ("CP1", "exempt", START - timedelta(days=1)),  # exempt throughout
        ("CP2", "exempt", START - timedelta(hours=2)),
        ("CP2", None, START - timedelta(hours=1)),  # lifted before
        ("CP3", "pause", START - timedelta(hours=1)),
        ("CP3", "exempt", START + timedelta(minutes=10)),  # exempted during
        ("CP4", "exempt", END + timedelta(minutes=1)),  # after
        ("CP5", "exempt", START - timedelta(hours=1)),
        ("CP5", None, START + timedelta(minutes=5)),  # lifted during: was exempt at the start
    ]
    assert exempt_during(log, START, END) == ["CP1", "CP3", "CP5"]
