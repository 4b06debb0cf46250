"""A new plan wakes a station's worker only when the station's limits or sessions changed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.dispatch import Dispatcher, StationRecord
from bridge.ocpp.capabilities import Capabilities
from bridge.station_life import Event
from bridge.store import Store
from policies.fleet import StationInfo, Step, value_at

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def dispatcher(tmp_path: Path, clock: list[datetime]) -> Dispatcher:
    result = Dispatcher(Store(tmp_path / "bridge.db"), min_current_a=6, retry_s=1,
                        on_change=lambda: None, clock=lambda: clock[0])
    result.stations["CP1"] = StationRecord(info=StationInfo("CP1", 3, 230.0, 32.0))
    return result


def steered(state: StationRecord, link: object) -> None:
    """As the dispatcher leaves a station whose limit it acknowledged on this connection."""
    state.link = link  # type: ignore[assignment]
    for event in (Event.CONNECTED, Event.REGISTERED, Event.SENT, Event.ACCEPTED):
        state.life.fire(event, T0)


def test_a_replan_with_the_same_limits_books_the_new_reason_without_waking(tmp_path):
    clock = [T0]
    dispatch = dispatcher(tmp_path, clock)
    state = dispatch.stations["CP1"]
    end = T0 + timedelta(minutes=30)
    first = (Step(T0, 7000.0, "fair share, 10 of 10 charging"), Step(end, 11000.0, "after"))
    dispatch.set_desired({"CP1": first}, {"CP1": {1: 5}})
    assert state.wake.is_set() and state.desired == first
    state.wake.clear()

    clock[0] = T0 + timedelta(seconds=5)
    later = (Step(clock[0], 7000.0, "fair share, 11 of 11 charging"), Step(end, 11000.0, "after"))
    dispatch.set_desired({"CP1": later}, {"CP1": {1: 5}})
    assert state.desired == later  # the dashboard explains the newest plan
    assert not state.wake.is_set()

    lower = (Step(clock[0], 6500.0, "fair share, 12 of 12 charging"), Step(end, 11000.0, "after"))
    dispatch.set_desired({"CP1": lower}, {"CP1": {1: 5}})
    assert state.wake.is_set() and state.desired == lower
    state.wake.clear()

    later_raise = (Step(clock[0], 6500.0, "x"), Step(end - timedelta(minutes=1), 11000.0, "x"))
    dispatch.set_desired({"CP1": later_raise}, {"CP1": {1: 5}})
    assert state.wake.is_set()  # the same limit now, but a raise moved: sent again
    state.wake.clear()

    dispatch.set_desired({"CP1": later_raise}, {"CP1": {1: 5, 2: 6}})
    assert state.wake.is_set()  # a second session: per-connector profiles change


async def test_a_raise_waits_until_every_other_station_is_down(tmp_path):
    clock = [T0]
    dispatch = dispatcher(tmp_path, clock)
    for sid in ("CP2", "CP3"):
        dispatch.stations[sid] = StationRecord(info=StationInfo(sid, 3, 230.0, 32.0))
    high = (Step(T0, 11000.0, "before"),)
    low = (Step(T0, 4000.0, "after"),)
    for sid in ("CP2", "CP3"):  # each holds more than its new share
        state = dispatch.stations[sid]
        state.applied = high
        steered(state, object())
        dispatch.set_desired({sid: low})
    raising = dispatch.stations["CP1"]
    waiter = asyncio.create_task(dispatch._wait_for_decreases(raising))
    await asyncio.sleep(0)
    dispatch.stations["CP2"].applied = low
    dispatch._refresh(dispatch.stations["CP2"])
    await asyncio.sleep(0.01)
    assert not waiter.done()  # CP3 may still draw its old limit
    dispatch.stations["CP3"].applied = low
    dispatch._refresh(dispatch.stations["CP3"])
    assert await asyncio.wait_for(waiter, 1) is True


async def test_a_drop_then_a_later_rise_goes_out_without_waiting_for_the_others(tmp_path):
    """Two stations each hold more than an event allows, and each new schedule also rises
    later (a ramp back after the event, each with its own random delay). Each decrease must
    go out at once: waiting for the other before sending the whole schedule would leave both
    waiting for ever, holding their old limits through the event."""
    clock = [T0]
    dispatch = dispatcher(tmp_path, clock)
    dispatch.stations["CP2"] = StationRecord(info=StationInfo("CP2", 3, 230.0, 32.0))
    start, end = T0 + timedelta(seconds=8), T0 + timedelta(minutes=10)

    class Link:  # a station that accepts whatever it is sent
        def __init__(self, station_id: str) -> None:
            self.id = station_id

        async def set_profile(self, profile, before_answer=None):
            return "Accepted"

        async def clear_charging_profile(self, profile_id):
            return "Accepted"

    for number, sid in enumerate(("CP1", "CP2")):
        state = dispatch.stations[sid]
        state.applied = (Step(T0, 11000.0, "before"),)
        steered(state, Link(sid))
        state.caps = Capabilities(known=True)
        rise = end + timedelta(seconds=30 * (number + 1))  # its own random restore delay
        state.desired = (Step(T0, 11000.0, "before"), Step(start, 5000.0, "event"),
                         Step(rise, 11500.0 + 500 * number, "restored"))
        dispatch._refresh(state)
    assert dispatch._above == {"CP1", "CP2"}
    workers = [asyncio.create_task(dispatch._dispatch(dispatch.stations[sid],
                                                      dispatch.stations[sid].link))
               for sid in ("CP1", "CP2")]
    await asyncio.wait_for(asyncio.gather(*workers), 2)  # before: neither ever returned
    for sid in ("CP1", "CP2"):
        held = dispatch.stations[sid].applied
        assert held is not None and value_at(held, start).limit_w <= 5000.0
    assert not dispatch._above
