"""The VEN's event profile against a real openleadr VTN, with hand-written oadrDistributeEvents.

Signals with units and scale, the lifecycle (modification numbers, cancellation, events left
out of a complete list), responseRequired, randomisation and targets.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import wait_until
from oadr_payloads import Event, Signal, distribute_event, power_real, price
from test_ven_client import XXE, Listener, settings

from bridge.sim.vtn import DemoVtn
from policies.events import DrEvent, EventStatus
from ven.oadr20b.client import Ven, VenSettings
from ven.shared import MemoryState

MINUTE = timedelta(minutes=1)


class Harness:
    def __init__(self, vtn: DemoVtn, ven: Ven, listener: Listener) -> None:
        self.vtn, self.ven, self.listener = vtn, ven, listener
        self.request = 0
        self.handled = 0  # polls the VEN is done with

    @property
    def ven_id(self) -> str:
        ven_id = self.vtn.ven_id("test-site")
        assert ven_id is not None
        return ven_id

    async def distribute(self, *events: Event,
                         spoil: Callable[[bytes], bytes] = lambda body: body) -> str:
        """Send one oadrDistributeEvent (``spoil`` may edit its bytes); returns once the VEN
        has polled it and answered."""
        self.request += 1
        request_id = f"req-{self.request}"
        self.vtn.send_raw(spoil(distribute_event(list(events), request_id=request_id)))
        await wait_until(lambda: not self.vtn.raw_replies, what="the VEN's poll")
        # the poll that took it may still be in hand: wait for one more to be done with
        handled = self.handled
        await wait_until(lambda: self.handled > handled, what="the poll handled")
        return request_id

    def responses(self, event_id: str) -> list[dict[str, Any]]:
        return [r for r in self.vtn.received.event_responses if r["event_id"] == event_id]

    def delivered(self, event_id: str) -> list[DrEvent]:
        return [e for e in self.listener.events if e.event_id == event_id]


@pytest.fixture
async def harness(vtn: DemoVtn) -> AsyncIterator[Harness]:
    listener = Listener()
    ven_settings = VenSettings(**{**settings(vtn.url).__dict__,
                                  "resource_ids": frozenset({"bay-north"}),
                                  "group_ids": frozenset({"fleet-vans"}),
                                  "party_ids": frozenset({"party-7"})})
    ven = Ven(ven_settings, listener)
    h = Harness(vtn, ven, listener)
    original = ven._poll_once

    async def counting_poll() -> None:
        await original()
        h.handled += 1

    ven._poll_once = counting_poll  # type: ignore[method-assign]
    task = asyncio.create_task(ven.run())
    await wait_until(lambda: listener.registrations != [], what="registration")
    await wait_until(lambda: h.handled >= 1, what="the first poll")
    yield h
    await ven.stop()
    await asyncio.wait_for(task, 5)


def simple(*levels: float) -> Signal:
    return Signal("SIMPLE", "level", [(MINUTE, level) for level in levels])


async def test_signals_keep_intervals_units_and_scale(harness: Harness):
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    event = Event("ev-signals", start, [
        simple(1, 2),
        Signal("ELECTRICITY_PRICE", "price", [(MINUTE, 0.31), (MINUTE, 0.42)], price("EUR")),
        Signal("ELECTRICITY_PRICE", "priceRelative", [(MINUTE, 0.05), (MINUTE, -0.02)],
               price("EUR")),
        Signal("ELECTRICITY_PRICE", "priceMultiplier", [(MINUTE, 1.5), (MINUTE, 2)],
               price("USD")),
        Signal("LOAD_DISPATCH", "setpoint", [(MINUTE, 40), (MINUTE, 25)], power_real("W", "k")),
        Signal("LOAD_DISPATCH", "delta", [(MINUTE, -5), (MINUTE, -10)], power_real("W", "k")),
        Signal("LOAD_DISPATCH", "multiplier", [(MINUTE, 0.5), (MINUTE, 0.8)]),
        Signal("LOAD_CONTROL", "x-loadControlCapacity", [(MINUTE, 0.5), (MINUTE, 0.25)]),
        Signal("LOAD_CONTROL", "x-loadControlLevelOffset", [(MINUTE, 1), (MINUTE, 2)]),
        Signal("LOAD_CONTROL", "x-loadControlPercentOffset", [(MINUTE, 20), (MINUTE, 30)]),
        Signal("LOAD_CONTROL", "x-loadControlSetpoint", [(MINUTE, 10), (MINUTE, 12)],
               power_real("W", "k")),
        Signal("x-vendorSignal", "level", [(MINUTE, 1), (MINUTE, 1)]),
        Signal("SIMPLE", "level", [(MINUTE, 7), (MINUTE, 1)]),  # no such level
    ])
    await harness.distribute(event)
    [got] = harness.delivered("ev-signals")
    kinds = [(s.name, s.type) for s in got.signals]
    assert len(kinds) == 11 and ("SIMPLE", "level") == kinds[0]
    assert len(got.ignored_signals) == 2
    assert "x-vendorSignal" in got.ignored_signals[0] and "levels" in got.ignored_signals[1]
    by_type = {s.type: s for s in got.signals}
    second = start + MINUTE + timedelta(seconds=1)
    assert by_type["level"].value_at(second) == 2
    assert by_type["price"].currency == "EUR" and by_type["price"].value_at(second) == 0.42
    assert by_type["priceMultiplier"].currency == "USD"
    setpoint = by_type["setpoint"]
    assert (setpoint.item, setpoint.unit, setpoint.scale) == ("powerReal", "W", "k")
    assert setpoint.base_value_at(start) == 40_000 and setpoint.base_value_at(second) == 25_000
    assert by_type["delta"].base_value_at(start) == -5_000
    assert by_type["x-loadControlCapacity"].value_at(second) == 0.25
    assert by_type["x-loadControlSetpoint"].base_value_at(start) == 10_000
    assert all(len(s.intervals) == 2 for s in got.signals)
    assert got.status_at(datetime.now(UTC)) == EventStatus.FAR
    [answer] = harness.responses("ev-signals")
    assert answer["opt_type"] == "optIn" and answer["modification_number"] == 0


async def test_modification_numbers_cancellation_and_the_complete_list(harness: Harness):
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    a0 = Event("ev-a", start, [simple(1, 2)])
    b0 = Event("ev-b", start, [simple(3)])
    await harness.distribute(a0, b0)
    assert len(harness.delivered("ev-a")) == len(harness.delivered("ev-b")) == 1

    # resent unchanged: not handed on again, answered as before
    await harness.distribute(a0, b0)
    assert len(harness.delivered("ev-a")) == 1
    assert [r["opt_type"] for r in harness.responses("ev-a")] == ["optIn", "optIn"]

    # a higher modification replaces the schedule; a lower one is ignored (and not answered)
    a2 = Event("ev-a", start + MINUTE, [simple(3, 3, 3)], modification=2, status="near")
    await harness.distribute(a2, b0)
    latest = harness.delivered("ev-a")[-1]
    assert latest.modification_number == 2 and latest.start == start + MINUTE
    assert [i.value for i in latest.signals[0].intervals] == [3, 3, 3]
    a1 = Event("ev-a", start, [simple(1)], modification=1)
    await harness.distribute(a1, b0)
    assert harness.delivered("ev-a")[-1].modification_number == 2
    assert [r["modification_number"] for r in harness.responses("ev-a")] == [0, 0, 2]
    assert harness.ven.known["ev-a"].modification_number == 2

    # b is left out of a complete list: cancelled
    await harness.distribute(a2)
    assert harness.delivered("ev-b")[-1].status == EventStatus.CANCELLED
    assert len(harness.responses("ev-b")) == 4  # nothing to answer for an event not listed

    # an explicit cancellation
    a3 = Event("ev-a", start + MINUTE, [simple(3, 3, 3)], modification=3, status="cancelled")
    await harness.distribute(a3)
    assert harness.delivered("ev-a")[-1].status == EventStatus.CANCELLED
    assert harness.responses("ev-a")[-1]["modification_number"] == 3


async def test_an_empty_list_cancels_everything_known(harness: Harness):
    start = datetime.now(UTC) + timedelta(minutes=10)
    await harness.distribute(Event("ev-x", start, [simple(2)]))
    await harness.distribute()
    assert harness.delivered("ev-x")[-1].status == EventStatus.CANCELLED


async def test_response_required_never_sends_no_created_event(harness: Harness):
    start = datetime.now(UTC) + timedelta(minutes=10)
    await harness.distribute(Event("ev-quiet", start, [simple(1)], response_required="never"),
                             Event("ev-loud", start, [simple(1)]))
    assert len(harness.delivered("ev-quiet")) == 1
    assert harness.responses("ev-quiet") == []
    assert len(harness.responses("ev-loud")) == 1


async def test_start_after_draws_one_offset_per_event_kept_across_restarts(vtn: DemoVtn):
    state = MemoryState()
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    event = Event("ev-random", start, [simple(2, 1)], start_after=timedelta(minutes=10),
                  ramp_up=timedelta(minutes=2), recovery=timedelta(minutes=3))
    seen: list[DrEvent] = []
    for attempt in range(2):  # two VENs on one state: a restart
        listener = Listener()
        ven = Ven(settings(vtn.url), listener, state=state, rng=random.Random(attempt))
        task = asyncio.create_task(ven.run())
        try:
            await wait_until(lambda heard=listener: heard.registrations != [],
                             what="registration")
            vtn.send_raw(distribute_event([event]))
            await wait_until(lambda heard=listener: heard.events != [], what="the event")
            seen.append(listener.events[0])
        finally:
            await ven.stop()
            await asyncio.wait_for(task, 5)
    first, again = seen
    offset = state.offsets["ev-random"]
    assert timedelta(0) <= offset <= timedelta(minutes=10)
    assert first.random_offset == again.random_offset == offset
    assert first.start == again.start == start + offset
    assert first.signals[0].intervals[1].start == start + MINUTE + offset
    assert (first.ramp_up, first.recovery) == (timedelta(minutes=2), timedelta(minutes=3))
    assert first.start_after == timedelta(minutes=10)


async def test_targets_ours_partly_ours_and_foreign(harness: Harness):
    start = datetime.now(UTC) + timedelta(minutes=10)
    ven_id = harness.ven_id
    events = {
        "t-ven": {"venID": [ven_id]},
        "t-party": {"partyID": ["party-7"]},
        "t-site": {"resourceID": ["test-site"]},
        "t-bay": {"resourceID": ["bay-north", "bay-elsewhere"]},
        "t-group": {"groupID": ["fleet-vans"], "venID": ["another-ven"]},
        "t-foreign": {"resourceID": ["someone-else"], "venID": ["another-ven"]},
    }
    await harness.distribute(*(Event(i, start, [simple(1)], targets=t)
                               for i, t in events.items()))
    for event_id in ("t-ven", "t-party", "t-site"):
        [got] = harness.delivered(event_id)
        assert got.whole_site, event_id
    [bay] = harness.delivered("t-bay")
    assert bay.matched_resources == ("bay-north",) and not bay.whole_site
    [group] = harness.delivered("t-group")
    assert group.matched_groups == ("fleet-vans",)
    assert harness.delivered("t-foreign") == []
    assert [r["opt_type"] for r in harness.responses("t-foreign")] == ["optOut"]


async def test_hostile_polls_are_refused_and_the_ven_carries_on(harness: Harness,
                                                                caplog: pytest.LogCaptureFixture):
    start = datetime.now(UTC) + timedelta(minutes=10)
    harness.vtn.send_raw(XXE)
    harness.vtn.send_raw(b"<oadrPayload>" * 10)
    harness.vtn.send_raw(distribute_event([Event("ev-bad", start, [simple(1)])])
                         .replace(b"<ei:value>1</ei:value>", b"<ei:value>NaN</ei:value>"))
    await harness.distribute(Event("ev-good", start, [simple(1)]))
    assert caplog.text.count("refused a message from the VTN") >= 2
    assert "refused event ev-bad (modification 0) from the VTN" in caplog.text
    assert harness.delivered("ev-bad") == []
    assert len(harness.delivered("ev-good")) == 1


def nan_in(event_id: str) -> Callable[[bytes], bytes]:
    """Spoils one event of a message: its level-2 payloads (no other event here has any)
    become NaN, which the schema allows and no signal can mean."""
    def spoil(body: bytes) -> bytes:
        assert body.count(b"<ei:value>2</ei:value>") == 2, "one interval and its currentValue"
        assert f"<ei:eventID>{event_id}</ei:eventID>".encode() in body
        return body.replace(b"<ei:value>2</ei:value>", b"<ei:value>NaN</ei:value>")
    return spoil


async def test_a_bad_event_is_answered_with_an_error_and_the_others_are_taken(
        harness: Harness, caplog: pytest.LogCaptureFixture):
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    good_a = Event("ev-good-a", start, [simple(1)])
    bad = Event("ev-nan", start, [simple(2)])
    good_b = Event("ev-good-b", start, [simple(3)])
    await harness.distribute(good_a, bad, good_b, spoil=nan_in("ev-nan"))

    # the good events are acted on and answered as usual; the bad one is not acted on and
    # is answered 454 (OpenADR 2.0b "Invalid data"), opted out
    assert len(harness.delivered("ev-good-a")) == len(harness.delivered("ev-good-b")) == 1
    assert harness.delivered("ev-nan") == []
    assert "ev-nan" not in harness.ven.known
    for event_id in ("ev-good-a", "ev-good-b"):
        [answer] = harness.responses(event_id)
        assert (answer["response_code"], answer["opt_type"]) == (200, "optIn")
    [refusal] = harness.responses("ev-nan")
    assert (refusal["response_code"], refusal["opt_type"]) == (454, "optOut")
    assert refusal["modification_number"] == 0
    logged = "refused event ev-nan (modification 0) from the VTN"
    assert caplog.text.count(logged) == 1
    assert "finite" in caplog.text

    # the VTN sends the same list again: answered again, logged once
    await harness.distribute(good_a, bad, good_b, spoil=nan_in("ev-nan"))
    assert [r["response_code"] for r in harness.responses("ev-nan")] == [454, 454]
    assert [r["response_code"] for r in harness.responses("ev-good-a")] == [200, 200]
    assert caplog.text.count(logged) == 1
    assert len(harness.delivered("ev-good-a")) == 1

    # a bad modification of an event the VEN holds: the held one stays in force
    bad_a = Event("ev-good-a", start, [simple(2)], modification=1)
    await harness.distribute(bad_a, good_b, spoil=nan_in("ev-good-a"))
    assert harness.ven.known["ev-good-a"].modification_number == 0
    assert [e.status for e in harness.delivered("ev-good-a")] == [EventStatus.FAR]
    assert (harness.responses("ev-good-a")[-1]["response_code"],
            harness.responses("ev-good-a")[-1]["modification_number"]) == (454, 1)
    assert "refused event ev-good-a (modification 1) from the VTN" in caplog.text
    assert "modification 0 stays in force" in caplog.text
