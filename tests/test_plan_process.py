"""Planning in a process of its own: the same plan as the thread makes, and the bridge
goes on planning when that process fails.

Every test runs the real process (``python -m bridge.runtime.plan_child``) on a socket
pair; nothing stands in for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import wait_until
from test_planning_thread import dr_parts, planner_over  # noqa: F401 (a fixture)
from test_runtime_dr import DrParts

from bridge.runtime import plan_process, planning
from bridge.runtime.plan_inputs import PlanInputs
from bridge.runtime.plan_process import PlanFailed, PlanningProcess, PlanningProcessLost
from bridge.runtime.plan_wire import request_for
from policies.events import DrEvent, EventSignal, EventStatus, SignalInterval
from policies.fleet import Fleet, Plan, Session, Site, StationInfo
from policies.model import parse_policy, preset_text
from policies.plan import Conditions

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
POLICY = parse_policy(preset_text("default"), "default")


def inputs(count: int = 30, now: datetime = NOW, previous: Plan | None = None,
           level: float | None = 1) -> PlanInputs:
    """A flat site of ``count`` 3-phase 32 A stations, each with a session; with a SIMPLE
    event of ``level`` in force (half the capacity at level 1: sessions take turns)."""
    stations = {f"CP{i:03d}": StationInfo(f"CP{i:03d}", 3, 230.0, 32.0) for i in range(count)}
    sessions = tuple(Session(sid, 1, NOW - timedelta(minutes=i))
                     for i, sid in enumerate(stations))
    events = []
    if level is not None:
        start = NOW - timedelta(minutes=5)
        events.append(DrEvent(
            event_id="ev", modification_number=0, status=EventStatus.ACTIVE, start=start,
            duration=timedelta(hours=1), signals=(EventSignal(
                name="SIMPLE", type="level", intervals=(SignalInterval(
                    start=start, duration=timedelta(hours=1), value=level),)),)))
    return PlanInputs(events, POLICY, Site(capacity_w=count * 7_000.0),
                      Fleet(stations, sessions), now, {},
                      previous.state if previous is not None else None, Conditions(), previous)


@pytest.fixture(autouse=True)
def importable_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process imports this module to read the inputs of the classes below."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, (str(Path(__file__).parent), os.environ.get("PYTHONPATH")))))


@pytest.fixture
async def process() -> AsyncIterator[PlanningProcess]:
    running = PlanningProcess()
    running.start_soon()
    await wait_until(lambda: running.ready, timeout=30, what="the planning process")
    yield running
    await running.close()


async def test_the_process_makes_the_plan_the_thread_makes(process: PlanningProcess):
    first = inputs()
    made, encoded = await process.plan(first)
    assert (made, encoded) == first.plan()
    assert encoded is not None and len(made.stations) == 30
    # the next plan follows the one the process made: named, not sent again
    second = inputs(now=NOW + timedelta(minutes=10), previous=made)
    request = request_for(second, made)
    assert request.previous_is_last and request.state_is_last
    assert request.inputs.previous is None and request.inputs.state is None
    assert await process.plan(second) == second.plan()
    # the event over: a changed plan, from the state the process holds
    third = inputs(now=NOW + timedelta(minutes=20), level=None,
                   previous=(await process.plan(second))[0])
    assert await process.plan(third) == third.plan()
    assert process.plans == 4 and process.starts == 1


async def test_a_plan_following_one_the_process_did_not_make_carries_it_in_full(
        process: PlanningProcess):
    made_here, _ = inputs().plan()  # in the thread, as while the process was starting
    made_there, _ = await process.plan(inputs(level=None))
    following = inputs(now=NOW + timedelta(minutes=10), previous=made_here)
    request = request_for(following, made_there)
    assert not request.previous_is_last and request.inputs.previous is made_here
    assert await process.plan(following) == following.plan()


async def test_a_fleet_that_changes_between_plans_is_planned_as_the_thread_plans_it(
        process: PlanningProcess):
    # the same station and session objects from plan to plan, as the bridge's are: sent
    # once, then by reference; a session ends, another begins, a station leaves
    stations = {f"CP{i:03d}": StationInfo(f"CP{i:03d}", 3, 230.0, 32.0) for i in range(40)}
    sessions = {sid: Session(sid, 1, NOW - timedelta(minutes=i))
                for i, sid in enumerate(stations)}
    site = Site(capacity_w=150_000.0)
    previous: Plan | None = None
    for step in range(6):
        now = NOW + timedelta(minutes=step)
        if step == 2:
            del sessions["CP005"]
        if step == 3:
            sessions["CP005"] = Session("CP005", 1, now)
        if step == 4:
            del stations["CP010"], sessions["CP010"]
        taken = PlanInputs([], POLICY, site, Fleet(dict(stations), tuple(sessions.values())),
                           now, {}, previous.state if previous else None, Conditions(),
                           previous)
        made, encoded = await process.plan(taken)
        assert (made, encoded) == taken.plan(), f"plan {step}"
        previous = made
    assert previous is not None and "CP010" not in previous.stations
    assert process.plans == 6


async def test_a_plan_given_up_on_ends_the_process_which_starts_again_at_once(
        process: PlanningProcess):
    under_way = asyncio.create_task(process.plan(SlowInputs(*_fields(inputs()))))
    await wait_until(lambda: process.requests == 1, what="the request with the process")
    under_way.cancel()
    with pytest.raises(asyncio.CancelledError):
        await under_way
    assert not process.started and process.failures == 0  # not a failure of the process
    process.start_soon()
    await wait_until(lambda: process.ready, timeout=30, what="the process started again")
    assert await process.plan(inputs()) == inputs().plan()


async def test_a_plan_that_takes_too_long_stops_the_process(
        process: PlanningProcess, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(plan_process, "PLAN_TIMEOUT_S", 0.5)
    with pytest.raises(PlanningProcessLost):
        await process.plan(SlowInputs(*_fields(inputs())))
    assert not process.started and process.failures == 1
    process.start_soon()  # not before its wait
    assert process._starting is None or process._starting.done()


async def test_a_process_that_cannot_start_is_tried_again_after_a_growing_wait(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    monkeypatch.setattr(plan_process, "PYTHON", "/nonexistent/python")
    monkeypatch.setattr(plan_process, "RESTART_AFTER_S", 0.0)
    running = PlanningProcess()
    try:
        for attempt in range(1, 5):
            running.start_soon()
            starting = running._starting
            assert starting is not None
            await starting
            assert running.failures == attempt and not running.started
        # warnings, then one error, then quiet
        levels = [r.levelname for r in caplog.records
                  if r.name == plan_process.__name__ and r.levelno >= logging.WARNING]
        assert levels == ["WARNING", "WARNING", "ERROR"]
    finally:
        await running.close()
    monkeypatch.setattr(plan_process, "RESTART_AFTER_S", 30.0)
    waiting = PlanningProcess()
    waiting.start_soon()
    assert waiting._starting is not None
    await waiting._starting
    waiting.start_soon()  # within the wait: no new attempt
    assert waiting._starting.done() and waiting.failures == 1
    await waiting.close()


def _fields(taken: PlanInputs) -> list[object]:
    return [getattr(taken, name) for name in taken.__dataclass_fields__]


class SlowInputs(PlanInputs):
    """Inputs whose planning takes two seconds."""

    def plan(self):  # type: ignore[no-untyped-def]
        time.sleep(2.0)
        return super().plan()


class FailingInputs(PlanInputs):
    """Inputs whose planning raises (a bug in the policy, as far as the bridge can tell)."""

    def plan(self):  # type: ignore[no-untyped-def]
        raise ArithmeticError("a planning bug")


async def test_a_planning_error_is_raised_here_and_the_process_goes_on(
        process: PlanningProcess):
    good = inputs()
    with pytest.raises(PlanFailed, match="a planning bug"):
        await process.plan(FailingInputs(*_fields(good)))
    assert process.ready and await process.plan(good) == good.plan()
    assert process.starts == 1 and process.failures == 0


async def test_a_process_that_dies_is_started_again(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(plan_process, "RESTART_AFTER_S", 0.0)
    process = PlanningProcess()
    process.start_soon()
    try:
        await wait_until(lambda: process.ready, timeout=30, what="the planning process")
        await _dies_and_starts_again(process)
    finally:
        await process.close()


async def _dies_and_starts_again(process: PlanningProcess) -> None:
    first, _ = await process.plan(inputs())
    assert process._process is not None
    process._process.kill()
    with pytest.raises(PlanningProcessLost):
        await process.plan(inputs(now=NOW + timedelta(minutes=10), previous=first))
    assert not process.ready and process.failures == 1
    process.start_soon()
    await wait_until(lambda: process.ready, timeout=30, what="the process started again")
    # the new process holds nothing: the plan it follows is sent in full
    following = inputs(now=NOW + timedelta(minutes=10), previous=first)
    assert await process.plan(following) == following.plan()
    assert process.starts == 2


async def test_closing_ends_the_process():
    running = PlanningProcess()
    running.start_soon()
    await wait_until(lambda: running.ready, timeout=30, what="the planning process")
    child = running._process
    assert child is not None
    await running.close()
    assert child.returncode is not None and not running.ready
    running.start_soon()  # closed: never started again
    assert running._starting is not None and running._starting.done()


async def test_the_planner_plans_in_the_thread_while_the_process_is_away(
        dr_parts: DrParts, monkeypatch: pytest.MonkeyPatch):  # noqa: F811 (the fixture)
    monkeypatch.setattr(planning, "PROCESS_FROM_STATIONS", 0)
    monkeypatch.setattr(plan_process, "RESTART_AFTER_S", 60.0)
    planner, _ = planner_over(dr_parts)
    try:
        await planner.replan()  # in the thread, while the process starts
        assert planner.plan is not None and planner.process.plans == 0
        await wait_until(lambda: planner.process.ready, timeout=30,
                         what="the planning process")
        dr_parts.parts.now += timedelta(seconds=5)
        await planner.replan()
        assert planner.process.plans == 1
        made_there = planner.plan
        child = planner.process._process
        assert child is not None
        child.kill()
        await child.wait()
        dr_parts.parts.now += timedelta(seconds=5)
        await planner.replan()  # the process is gone: the thread makes it
        assert planner.plan is not made_there and planner.process.failures == 1
        assert not planner.process.ready and planner.process.plans == 1
    finally:
        await planner.close()


def test_the_planning_process_loads_no_event_loop_nor_yaml_parser():
    # what it imports is most of its memory: asyncio and the YAML parser are about 10 MB
    # it never uses, and the policy models' validators are built only where they validate
    probe = ("import sys, bridge.runtime.plan_child; from policies.model import Policy; "
             "print([m for m in ('asyncio', 'yaml') if m in sys.modules], "
             "Policy.__pydantic_complete__)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.split() == ["[]", "False"]
