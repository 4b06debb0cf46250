"""Pure event lifecycle, status and targeting decisions (ven.oadr20b.lifecycle, DrEvent)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from ven.oadr20b.lifecycle import Change, SiteTargets, classify, match_targets
from ven.shared import Targeting, implicitly_cancelled

T0 = datetime(2030, 6, 1, 12, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def event(modification: int = 0, status: EventStatus = EventStatus.FAR,
          start: datetime = T0, minutes: int = 10, **fields: object) -> DrEvent:
    signal = EventSignal(name="SIMPLE", type="level", intervals=(
        SignalInterval(start=start, duration=minutes * MINUTE, value=2),))
    return DrEvent(event_id="e", modification_number=modification, status=status, start=start,
                   duration=minutes * MINUTE, signals=(signal,), **fields)


def test_classify_by_modification_number_and_cancellation():
    assert classify(None, event()) == Change.NEW
    assert classify(event(1), event(2)) == Change.MODIFIED
    assert classify(event(2), event(2)) == Change.UNCHANGED
    assert classify(event(2), event(1)) == Change.STALE
    assert classify(event(2), event(3, EventStatus.CANCELLED)) == Change.CANCELLED
    # a VTN that cancels without counting up is not missed either
    assert classify(event(2), event(2, EventStatus.CANCELLED)) == Change.CANCELLED
    cancelled = event(3, EventStatus.CANCELLED)
    assert classify(cancelled, event(3, EventStatus.CANCELLED)) == Change.UNCHANGED


def test_only_pending_or_active_events_are_cancelled_by_omission():
    known = {"gone": event(start=T0), "listed": event(start=T0),
             "over": event(start=T0 - 2 * timedelta(hours=1)),
             "cancelled": event(status=EventStatus.CANCELLED)}
    assert implicitly_cancelled(known, ["listed"], T0 + MINUTE) == ["gone"]


def test_status_follows_the_clock_and_the_ramp_up():
    e = event(ramp_up=5 * MINUTE)
    assert e.status_at(T0 - 10 * MINUTE) == EventStatus.FAR
    assert e.status_at(T0 - 4 * MINUTE) == EventStatus.NEAR
    assert e.status_at(T0 - 20 * MINUTE, near=timedelta(hours=1)) == EventStatus.NEAR
    assert e.status_at(T0) == EventStatus.ACTIVE
    assert e.status_at(T0 + 10 * MINUTE) == EventStatus.COMPLETED
    assert event(status=EventStatus.CANCELLED).status_at(T0) == EventStatus.CANCELLED


def test_randomised_moves_start_and_intervals_once():
    e = event(start_after=10 * MINUTE).randomised(3 * MINUTE)
    assert e.start == T0 + 3 * MINUTE and e.signals[0].intervals[0].start == T0 + 3 * MINUTE
    again = e.randomised(3 * MINUTE)
    assert again is e
    assert e.randomised(MINUTE).start == T0 + MINUTE  # relative to the VTN's start


def test_targets():
    ours = SiteTargets(ven_id="ven-1", site_resource_id="site", party_ids=frozenset({"p"}),
                       resource_ids=frozenset({"r1", "r2"}), group_ids=frozenset({"g"}))
    whole = Targeting(whole_site=True)
    assert match_targets({}, ours) == whole
    assert match_targets({"group_name": ("anything",)}, ours) == whole
    assert match_targets({"ven_id": ("ven-1", "ven-2")}, ours) == whole
    assert match_targets({"party_id": ("p",)}, ours) == whole
    assert match_targets({"resource_id": ("site",)}, ours) == whole
    assert match_targets({"resource_id": ("r2", "x"), "group_id": ("g",)}, ours) == Targeting(
        whole_site=False, resources=("r2",), groups=("g",))
    assert match_targets({"ven_id": ("ven-2",), "resource_id": ("x",)}, ours) is None
