"""A plan as the store keeps it: each distinct schedule written once, stations naming theirs
by index; plans stored before that are still read."""

import json
import sqlite3
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bridge.plan_json import decode_schedules, encode_plan, step_item
from bridge.store import Store
from policies.fleet import Step, Why

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SITE = (Step(NOW, 40_000.0, "site capacity"),)


def schedule(limit_w: float, reason: str = "fair share") -> tuple[Step, ...]:
    return (Step(NOW, limit_w, reason, (Why("allocation", reason),)),
            Step(NOW + timedelta(minutes=30), 7_000.0, "site capacity"))


def test_stations_given_the_same_steps_share_one_schedule():
    shared, other = schedule(4_140.0), schedule(0.0, "turn: paused")
    stations = {f"CP{i}": shared for i in range(1_000)} | {"CP-x": other}
    encoded = encode_plan(NOW, SITE, stations)
    distinct = json.loads(encoded.schedules)
    assert distinct == [[step_item(s) for s in shared], [step_item(s) for s in other]]
    assert json.loads(encoded.stations) == {**{f"CP{i}": 0 for i in range(1_000)}, "CP-x": 1}
    # the reasons are written twice, not once per station
    assert encoded.schedules.count("fair share") == 2


def test_equal_schedules_of_distinct_objects_share_one_schedule_too():
    encoded = encode_plan(NOW, SITE, {"A": schedule(5_000.0), "B": list(schedule(5_000.0)),
                                      "C": schedule(6_000.0)})
    assert json.loads(encoded.stations) == {"A": 0, "B": 0, "C": 1}
    assert len(json.loads(encoded.schedules)) == 2


def test_a_plan_without_stations_encodes_and_decodes():
    encoded = encode_plan(NOW, SITE, {})
    assert decode_schedules(encoded.stations, encoded.schedules) == {}


limits = st.sampled_from([0.0, 1_380.0, 4_140.052046367899, 7_000.0])
reasons = st.sampled_from(["fair share", "event ev-1; SIMPLE level 1", "turn: paused"])
steps = st.builds(lambda minutes, limit, reason: Step(NOW + timedelta(minutes=minutes), limit,
                                                      reason, (Why("rule", reason),)),
                  st.integers(0, 120), limits, reasons)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.integers(0, 3)), max_size=30),
       st.lists(st.lists(steps, max_size=3), min_size=4, max_size=4))
def test_every_station_decodes_to_the_items_of_its_own_schedule(placed, pool):
    stations = {station_id: tuple(pool[index]) for station_id, index in placed}
    encoded = encode_plan(NOW, SITE, stations)
    assert decode_schedules(encoded.stations, encoded.schedules) == {
        station_id: [step_item(s) for s in steps] for station_id, steps in stations.items()}


def test_the_store_reads_back_the_plan_it_wrote(tmp_path):
    stations = {"CP1": schedule(4_140.0), "CP2": schedule(4_140.0), "CP3": schedule(0.0)}
    store = Store(tmp_path / "plans.db")
    try:
        store.save_plan(NOW, SITE, stations)
        assert store.last_plan() == (NOW, SITE, stations)
    finally:
        store.close()


def test_a_plan_stored_before_schedules_were_shared_is_still_read(tmp_path):
    """A database of an older release: a plans table without the schedules column, each
    station's steps written out in stations. Opening it adds the column; its plan reads
    as it was written, and new plans are written the new way beside it."""
    path = tmp_path / "old.db"
    old_items = {"CP1": [step_item(s) for s in schedule(3_000.0)]}
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE plans (id INTEGER PRIMARY KEY, made_at TEXT, site TEXT,"
                   " stations TEXT)")
        db.execute("INSERT INTO plans (made_at, site, stations) VALUES (?, ?, ?)",
                   [NOW.isoformat(), json.dumps([step_item(s) for s in SITE]),
                    json.dumps(old_items)])
    db.close()
    store = Store(path)
    try:
        assert store.last_plan() == (NOW, SITE, {"CP1": schedule(3_000.0)})
        later = NOW + timedelta(minutes=1)
        store.save_plan(later, SITE, {"CP1": schedule(2_000.0)})
        assert store.last_plan() == (later, SITE, {"CP1": schedule(2_000.0)})
    finally:
        store.close()
