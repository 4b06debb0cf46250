"""A plan's wave to many stations: the schedules it records go to the store in one commit
per turn of the event loop, each on record before its worker goes on; its sends go out a
few hundred stations per turn, all of them before the answers are booked; the follow-up
calls that come due together after it start a few dozen stations per turn (so the loop reads
the stations' own requests between)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import sqlite3
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.aio import TurnBatch, TurnGate, WaveTurns
from bridge.dispatch import FOLLOW_UPS_PER_TURN, Dispatcher, StationRecord
from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.link import BeforeAnswer, CallFailed
from bridge.ocpp.sampling import NOT_READ, SamplingChange, SamplingReply
from bridge.station_life import Event, Phase
from bridge.store import Store, steps_from_json
from policies.fleet import StationInfo, Step

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
STATIONS = 200


class Turns:
    """Counts the turns of the running loop: a callback that schedules itself again runs
    once in each."""

    def __init__(self) -> None:
        self.count = 0
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        self.count += 1
        self._handle = asyncio.get_running_loop().call_soon(self.start)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class CountingStore(Store):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.applied_commits = 0
        self.sent_commits = 0

    def save_applied_many(self, applied: Iterable[tuple[str, Iterable[Step], datetime]]
                          ) -> None:
        self.applied_commits += 1
        super().save_applied_many(applied)

    def save_sent_many(self, sent: Iterable[tuple[str, Iterable[Step], datetime]]) -> None:
        self.sent_commits += 1
        super().save_sent_many(sent)


class Link:
    """A station that accepts whatever it is sent, and notes in which turn of the loop."""

    def __init__(self, station_id: str, turns: Turns, sent_in: Counter[int],
                 db: Path | None = None) -> None:
        self.id = station_id
        self._turns, self._sent_in, self._db = turns, sent_in, db
        self.on_record_when_cleared: list[bool] = []
        self.cleared_in: list[int] = []  # the turns its stale profiles were cleared in
        self.registered = asyncio.Event()  # (its boot was answered long ago)
        self.registered.set()

    async def set_profile(self, profile: object,
                          before_answer: BeforeAnswer | None = None) -> str:
        self._sent_in[self._turns.count] += 1
        if before_answer is not None:  # as a station's link: after the send, before the answer
            await before_answer()
        return "Accepted"

    async def set_sampling(self, change: SamplingChange) -> SamplingReply:
        self._sent_in[self._turns.count] += 1
        return SamplingReply(interval="Rejected")

    async def clear_charging_profile(self, profile_id: int) -> str:
        self.cleared_in.append(self._turns.count)
        # what relies on the accepted schedule: it must be on disk by now (read as a
        # restarted bridge would, through a connection of its own)
        assert self._db is not None
        with contextlib.closing(sqlite3.connect(self._db)) as conn:
            row = conn.execute("SELECT schedule FROM applied WHERE station_id = ?",
                               [self.id]).fetchone()
        self.on_record_when_cleared.append(row is not None and bool(steps_from_json(row[0]))
                                           and steps_from_json(row[0])[0].limit_w == 5520.0)
        return "Accepted"


def fleet(tmp_path: Path, turns: Turns, sent_in: Counter[int], meter_interval_s: int = 0
          ) -> tuple[Dispatcher, CountingStore, dict[str, Link]]:
    store = CountingStore(tmp_path / "bridge.db")
    dispatch = Dispatcher(store, min_current_a=6, retry_s=1, on_change=lambda: None,
                          clock=lambda: T0, meter_interval_s=meter_interval_s)
    links = {}
    for n in range(STATIONS):
        sid = f"CP{n}"
        state = dispatch.stations[sid] = StationRecord(info=StationInfo(sid, 3, 230.0, 32.0))
        links[sid] = link = Link(sid, turns, sent_in, tmp_path / "bridge.db")
        state.link = link  # type: ignore[assignment]
        state.caps = Capabilities(known=True)
        state.applied = (Step(T0 - timedelta(minutes=1), 11040.0, "before"),)
        state.installed = {99}  # a profile of ours the new strategy no longer sends
        for event in (Event.CONNECTED, Event.REGISTERED, Event.SENT, Event.ACCEPTED):
            state.life.fire(event, T0)
        state.desired = (Step(T0, 5520.0, "event"),)  # 8 A: a decrease, out at once
        dispatch._refresh(state)
    return dispatch, store, links


def paced_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_turn: int
                ) -> tuple[Dispatcher, CountingStore, dict[str, Link], Turns, Counter[int]]:
    """:func:`fleet`, its wave paced at ``per_turn`` stations a turn, each station's worker
    started by its wakes (as the runtime does), and no follow-up reading after a wave."""
    monkeypatch.setattr("bridge.dispatch.WAVE_STATIONS_PER_TURN", per_turn)
    turns, sent_in = Turns(), Counter[int]()
    dispatch, store, links = fleet(tmp_path, turns, sent_in)
    for state in dispatch.stations.values():
        state.wake.on_set = functools.partial(dispatch._serve, state)
        state.handling.composite_supported = False
    return dispatch, store, links, turns, sent_in


async def test_a_wave_records_its_schedules_in_a_commit_per_turn_of_the_loop(tmp_path: Path):
    turns, sent_in = Turns(), Counter[int]()
    dispatch, store, links = fleet(tmp_path, turns, sent_in)
    turns.start()
    try:
        workers = [asyncio.create_task(dispatch._dispatch(state, state.link))  # type: ignore[arg-type]
                   for state in dispatch.stations.values()]
        await asyncio.wait_for(asyncio.gather(*workers), 10)
    finally:
        turns.stop()
    assert sum(sent_in.values()) == STATIONS  # every station got its limit
    # a commit per turn of the loop for the records, not one per station (before: 200
    # commits of accepted schedules)
    assert store.sent_commits <= len(sent_in) + 1
    assert store.applied_commits <= len(sent_in) + 1 < STATIONS
    with contextlib.closing(Store(tmp_path / "bridge.db")) as after:
        assert {sid: steps[0].limit_w for sid, steps in after.applied().items()} \
            == {sid: 5520.0 for sid in dispatch.stations}
        assert after.sent() == {}  # answered: nothing left uncertain
    # each accepted schedule was on disk before the stale profile was cleared after it
    assert all(link.on_record_when_cleared == [True] for link in links.values())
    assert all(state.applied is not None and state.applied[0].limit_w == 5520.0
               and state.in_flight is None for state in dispatch.stations.values())
    store.db.close()


async def test_a_wave_goes_out_a_few_hundred_a_turn_before_its_answers_are_booked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    per_turn = 16
    dispatch, store, links, turns, sent_in = paced_fleet(tmp_path, monkeypatch, per_turn)
    # one station with two connectors: a profile each besides its cap, sent in a row
    several = dispatch.stations["CP7"]
    several.caps = Capabilities(known=True, connectors=2)
    several_sent_in: list[int] = []

    async def set_profile(profile: object, before_answer: BeforeAnswer | None = None) -> str:
        several_sent_in.append(turns.count)  # (the first one counted with the others)
        if len(several_sent_in) == 1:
            return await Link.set_profile(links["CP7"], profile, before_answer)
        if before_answer is not None:
            await before_answer()
        return "Accepted"

    links["CP7"].set_profile = set_profile  # type: ignore[method-assign]
    turns.start()
    try:
        # an event lowers every station's limit at once (to 6 A a phase)
        dispatch.set_desired({sid: (Step(T0, 4140.0, "event"),) for sid in dispatch.stations})
        # the stations still to start count as sending limits: no follow-up call goes yet
        assert dispatch._wave.going_out and not dispatch._limits_sent.is_set()
        async def all_cleared() -> None:
            while any(not link.cleared_in for link in links.values()):
                await asyncio.sleep(0)

        await asyncio.wait_for(all_cleared(), 10)
    finally:
        turns.stop()
    assert sum(sent_in.values()) == STATIONS
    # before: all 200 sent in one turn, the loop's sockets unread until the last
    assert max(sent_in.values()) <= per_turn
    assert len(sent_in) >= math.ceil(STATIONS / per_turn)
    # the whole wave was out before the first answer went on to be booked
    assert max(sent_in) <= min(turn for link in links.values() for turn in link.cleared_in)
    assert all(state.applied is not None and state.applied[0].limit_w == 4140.0
               for state in dispatch.stations.values())
    # its profiles went out one after the other, not each behind the others' answers
    assert len(several_sent_in) >= 2 and len(set(several_sent_in)) == 1
    assert dispatch._limiting == 0 and dispatch._limits_sent.is_set()
    await dispatch.close()
    store.db.close()


async def test_each_station_of_a_wave_waits_for_it_once_whatever_its_last_call_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dispatch, store, links, turns, _ = paced_fleet(tmp_path, monkeypatch, 16)

    async def refused_before_it_went_out(profile: object,
                                         before_answer: BeforeAnswer | None = None) -> str:
        return "UnknownTransaction"  # as a 2.0.1 link without the station's transaction

    async def failed_on_the_way(profile: object,
                                before_answer: BeforeAnswer | None = None) -> str:
        raise CallFailed("ConnectionClosedError: the socket closed")

    links["CP3"].set_profile = refused_before_it_went_out  # type: ignore[method-assign]
    links["CP4"].set_profile = failed_on_the_way  # type: ignore[method-assign]
    waits: Counter[str] = Counter()
    after_send = WaveTurns.after_send

    async def counted(wave: WaveTurns) -> None:
        task = asyncio.current_task()
        assert task is not None
        waits[task.get_name()] += 1
        await after_send(wave)

    monkeypatch.setattr(WaveTurns, "after_send", counted)
    dispatch.set_desired({sid: (Step(T0, 4140.0, "event"),) for sid in dispatch.stations})
    turns.start()
    try:
        await asyncio.wait_for(dispatch.limits_sent(), 10)
    finally:
        turns.stop()
    assert waits == {f"dispatch {sid}": 1 for sid in dispatch.stations}
    assert dispatch.stations["CP3"].life.refuses and dispatch.stations["CP4"].life.refuses
    await dispatch.close()
    store.db.close()


async def test_a_station_nothing_bounds_yet_does_not_wait_behind_a_wave(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dispatch, store, _, turns, sent_in = paced_fleet(tmp_path, monkeypatch, 16)
    joined = dispatch.stations["NEW"] = StationRecord(info=StationInfo("NEW", 3, 230.0, 32.0))
    joined.link = Link("NEW", turns, sent_in)  # type: ignore[assignment]
    joined.caps, joined.handling.foreign = Capabilities(known=True), frozenset()
    joined.handling.composite_supported = False
    joined.wake.on_set = functools.partial(dispatch._serve, joined)
    for event in (Event.CONNECTED, Event.REGISTERED):
        joined.life.fire(event, T0)
    assert not joined.draw_bounded  # no limit of ours confirmed on this connection
    # a wave that raises every station (a decrease would have the joiner's first limit,
    # a raise from nothing, wait until every other station is down)
    dispatch.set_desired({sid: (Step(T0, 11500.0, "more"),) for sid in dispatch.stations})
    assert dispatch._wave.going_out  # most of the wave waits for later turns
    assert joined.task is not None  # started now, ahead of them
    # a station waiting for its turn that reconnects meanwhile does not wait on
    last = dispatch.stations[f"CP{STATIONS - 1}"]
    assert last.starting and last.task is None
    for event_of_life in (Event.DISCONNECTED, Event.CONNECTED, Event.REGISTERED):
        last.life.fire(event_of_life, T0)
    last.handling.foreign = frozenset()  # (what it holds of others' needs no reading here)
    last.wake.set()
    assert last.task is not None
    turns.start()
    try:
        async def confirmed() -> None:
            while joined.applied is None:
                await asyncio.sleep(0)

        await asyncio.wait_for(confirmed(), 10)
        # its answer was booked at once, not after the wave: the plan counts it steered
        assert dispatch._wave.going_out
        assert joined.life.phase is Phase.ACKNOWLEDGED
    finally:
        turns.stop()
    await dispatch.close()
    store.db.close()


async def test_wave_turns_start_in_order_and_answers_wait_for_the_last_start():
    wave = WaveTurns(3)
    turns = Turns()
    started: list[tuple[int, int]] = []
    went_on: list[tuple[int, int]] = []
    tasks: list[asyncio.Task[None]] = []

    async def worker(n: int) -> None:
        await wave.after_send()
        went_on.append((n, turns.count))

    def begin(n: int) -> None:
        started.append((n, turns.count))
        tasks.append(asyncio.create_task(worker(n)))

    turns.start()
    try:
        for n in range(10):
            wave.start(functools.partial(begin, n))
        assert [n for n, _ in started] == [0, 1, 2]  # room in this turn: at once
        assert wave.going_out and wave.waiting == 7
        urgent: list[int] = []
        wave.start(functools.partial(urgent.append, 1), at_once=True)
        assert urgent == [1] and wave.waiting == 7  # not behind the wave
        while len(tasks) < 10:
            await asyncio.sleep(0)
        tasks[5].cancel()  # waits for its answer's turn, and is cancelled meanwhile
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        turns.stop()
    assert [n for n, _ in started] == list(range(10))  # first come, first served
    assert max(Counter(turn for _, turn in started).values()) <= 3
    assert max(Counter(turn for _, turn in went_on).values()) <= 3
    # no worker went on past its answer before the last one was started
    assert max(turn for _, turn in started) <= min(turn for _, turn in went_on)
    assert sorted(n for n, _ in went_on) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert wave.waiting == 0 and not wave.going_out
    for _ in range(3):
        await asyncio.sleep(0)  # a turn with room again
    lone: list[int] = []
    wave.start(functools.partial(lone.append, 1))
    assert lone == [1]  # nothing queued and room: not a turn later
    with pytest.raises(ValueError):
        WaveTurns(0)


async def test_follow_up_calls_due_together_start_a_few_dozen_per_turn(tmp_path: Path):
    turns, asked_in = Turns(), Counter[int]()
    dispatch, store, _ = fleet(tmp_path, turns, asked_in, meter_interval_s=60)
    for state in dispatch.stations.values():
        state.follow_ups.meter_setup = True
        state.sampling = NOT_READ  # read with its capabilities: nothing readable
    turns.start()
    try:
        await asyncio.wait_for(asyncio.gather(
            *(dispatch._follow_up(state) for state in dispatch.stations.values())), 10)
    finally:
        turns.stop()
    assert sum(asked_in.values()) == STATIONS  # every station was asked
    # before: all 200 in one turn, and no request of a station read until the last
    assert max(asked_in.values()) <= FOLLOW_UPS_PER_TURN
    assert len(asked_in) >= math.ceil(STATIONS / FOLLOW_UPS_PER_TURN)
    store.db.close()


async def test_the_gate_lets_per_turn_through_in_order_and_forgets_a_cancelled_waiter():
    gate = TurnGate(2)
    turns = Turns()
    passed: list[tuple[int, int]] = []

    async def through(n: int) -> None:
        await gate.enter()
        passed.append((n, turns.count))

    turns.start()
    try:
        tasks = [asyncio.create_task(through(n)) for n in range(7)]
        await asyncio.sleep(0)  # every task has tried once: two went through at once
        assert [n for n, _ in passed] == [0, 1] and gate.waiting == 5
        tasks[3].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        turns.stop()
    assert [n for n, _ in passed] == [0, 1, 2, 4, 5, 6]  # first come, first served
    per_turn = Counter(turn for _, turn in passed)
    assert max(per_turn.values()) <= 2
    assert gate.waiting == 0
    with pytest.raises(ValueError):
        TurnGate(0)


async def test_a_batch_writes_once_per_turn_and_each_waiter_sees_its_failure():
    writes: list[dict[str, int]] = []

    def write(items: Iterable[tuple[str, int]]) -> None:
        batch = dict(items)
        writes.append(batch)
        if "bad" in batch:
            raise sqlite3.OperationalError("disk I/O error")

    batch: TurnBatch[str, int] = TurnBatch(write)
    await asyncio.gather(*(batch.add(f"CP{n}", n) for n in range(5)))
    assert writes == [{f"CP{n}": n for n in range(5)}]
    outcomes = await asyncio.gather(batch.add("CP9", 9), batch.add("bad", 0),
                                    return_exceptions=True)
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
    assert writes[-1] == {"CP9": 9, "bad": 0}


def test_accepted_schedules_in_one_commit_clear_what_was_sent(tmp_path: Path):
    store = Store(tmp_path / "bridge.db")
    low, high = (Step(T0, 5520.0, "event"),), (Step(T0, 11040.0, "before"),)
    store.save_sent_many([("CP1", low, T0), ("CP2", low, T0), ("CP3", low, T0)])
    store.save_applied_many([("CP1", low, T0), ("CP2", high, T0)])
    with contextlib.closing(Store(tmp_path / "bridge.db")) as after:
        assert after.applied() == {"CP1": low, "CP2": high}
        assert after.sent() == {"CP3": low}  # still unanswered
    store.db.close()


async def test_a_batch_waiter_cancelled_leaves_the_others_and_the_write_alone():
    writes: list[dict[str, int]] = []
    batch: TurnBatch[str, int] = TurnBatch(lambda items: writes.append(dict(items)))
    tasks = [asyncio.ensure_future(batch.add(f"CP{n}", n)) for n in range(3)]
    await asyncio.sleep(0)  # each has added its record and waits for the write
    tasks[1].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert writes == [{"CP0": 0, "CP1": 1, "CP2": 2}]  # added before it was cancelled


async def test_a_failed_write_reaches_each_waiter_still_waiting_not_a_cancelled_one():
    def write(items: Iterable[tuple[str, int]]) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    batch: TurnBatch[str, int] = TurnBatch(write)
    tasks = [asyncio.ensure_future(batch.add(f"CP{n}", n)) for n in range(3)]
    await asyncio.sleep(0)
    tasks[0].cancel()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes[1:])
