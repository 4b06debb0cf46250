"""Plans are made beside the OCPP edge, not in front of it.

A plan for a large fleet is a second or more of CPU. It runs in the planner's own thread
on inputs taken on the event loop, so the stations keep being answered meanwhile; one
plan is made at a time, and what changes during a plan is in the next one.

A plan is made slow on purpose through one seam: ``bridge.runtime.plan_inputs``'s
``plan_with_holds``, wrapped so that it spins (pure Python, holding the interpreter as a
real plan's arithmetic does) until the test lets it go. Nothing waits a fixed time: each
step waits for the state it asserts.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import SiteHarness, wait_steered, wait_until
from ocpp.v16 import call
from test_runtime_dr import DrParts, simple
from test_runtime_stations import Parts, site_config

from bridge.runtime import plan_inputs, planning
from bridge.runtime.planning import Planner
from policies.plan import Conditions

SPIN_MAX_S = 30.0  # a held plan lets go by itself after this, whatever the test does


class HeldPlans:
    """Wraps the real planning function: each call is recorded and, while ``held``, spins
    until :meth:`release`."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self._real = real
        self.held = True
        self.started = threading.Event()
        self.finished = threading.Event()
        self._released = threading.Event()
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        if self.held:
            self.started.set()
            deadline = time.monotonic() + SPIN_MAX_S
            while not self._released.is_set() and time.monotonic() < deadline:
                pass
        try:
            return self._real(*args)
        finally:
            self.finished.set()

    def release(self) -> None:
        self.held = False
        self._released.set()


@pytest.fixture
def held_plans(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldPlans]:
    held = HeldPlans(plan_inputs.plan_with_holds)
    monkeypatch.setattr(plan_inputs, "plan_with_holds", held)
    yield held
    held.release()  # never leave the planning thread spinning


def meter_values(power_w: float) -> call.MeterValues:
    now = datetime.now(UTC).isoformat()
    return call.MeterValues(connector_id=1, meter_value=[{"timestamp": now, "sampledValue": [
        {"value": f"{power_w:.1f}", "measurand": "Power.Active.Import", "unit": "W"}]}])


async def test_a_station_is_answered_while_a_plan_is_made(site: SiteHarness,
                                                          monkeypatch: pytest.MonkeyPatch):
    bridge = await site.start_bridge()
    station = site.add_station("CP0")
    await wait_steered(bridge, "CP0")
    held = HeldPlans(plan_inputs.plan_with_holds)
    monkeypatch.setattr(plan_inputs, "plan_with_holds", held)
    try:
        bridge.replans.request()  # a change: the planning loop makes a plan soon
        await wait_until(held.started.is_set, timeout=30, what="a plan under way")
        # the station's MeterValues is answered while that plan still runs
        reply = await asyncio.wait_for(station.call(meter_values(1234.0)), 20)
        assert reply is not None
        assert not held.finished.is_set(), "answered only after the plan"
        meter = bridge.station_events.meters[("CP0", 1)]
        assert meter.latest is not None and meter.latest[1] == 1234.0
    finally:
        held.release()
    await wait_until(held.finished.is_set, timeout=30, what="the plan done")


def planner_over(dr_parts: DrParts) -> tuple[Planner, list[str]]:
    """A planner over the runtime's real parts (store, dispatcher, station events, DR
    events); its requests for a later plan are recorded."""
    parts: Parts = dr_parts.parts
    asked: list[str] = []
    planner = Planner(parts.config, parts.store, parts.clock, parts.dispatcher, parts.fleet,
                      dr_parts.dr, {}, dr_parts.ven, None, parts.now,
                      request_replan=lambda: asked.append("plan"))
    return planner, asked


@pytest.fixture
def dr_parts(tmp_path: Path) -> Iterator[DrParts]:
    parts = Parts(site_config(tmp_path))
    yield DrParts(parts)
    parts.store.close()


async def test_plans_are_made_one_at_a_time_and_calls_meanwhile_share_the_next(
        dr_parts: DrParts, held_plans: HeldPlans):
    planner, _ = planner_over(dr_parts)
    try:
        first = asyncio.create_task(planner.replan())
        await wait_until(held_plans.started.is_set, timeout=30, what="a plan under way")
        # meanwhile: a DR event arrives (its baseline taken, the event stored), and three
        # parts ask for a plan
        assert await dr_parts.dr.on_event(simple("ev-1", 1)) == "optIn"
        later = [asyncio.create_task(planner.replan()) for _ in range(3)]
        await asyncio.sleep(0)  # they are waiting for the plan under way
        assert len(held_plans.calls) == 1 and not first.done()
        held_plans.release()
        await asyncio.wait_for(asyncio.gather(first, *later), 30)
        # one plan for the three calls made meanwhile, from inputs taken after them
        assert len(held_plans.calls) == 2
        events = [[e.event_id for e in args[0]] for args in held_plans.calls]
        conditions = [args[7] for args in held_plans.calls]
        assert all(isinstance(c, Conditions) for c in conditions)
        # the first plan read a snapshot: what arrived during it is not in its inputs
        assert events == [[], ["ev-1"]]
        assert dict(conditions[0].baselines_w) == {}
        assert dict(conditions[1].baselines_w) == {"ev-1": 0.0}
        assert planner.plan is not None
    finally:
        await planner.close()


async def test_a_plan_given_up_on_is_asked_for_again(dr_parts: DrParts,
                                                     held_plans: HeldPlans):
    planner, asked = planner_over(dr_parts)
    try:
        waiting = asyncio.create_task(planner.replan())
        await wait_until(held_plans.started.is_set, timeout=30, what="a plan under way")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert asked == ["plan"]  # what it was asked for is planned by the loop
        assert planner.plan is None  # nothing applied from the plan given up on
        held_plans.release()
        await asyncio.wait_for(planner.replan(), 30)  # the next plan is not held up
        assert planner.plan is not None
    finally:
        await planner.close()


async def test_the_interpreter_switches_threads_often_while_a_plan_runs(
        dr_parts: DrParts, monkeypatch: pytest.MonkeyPatch):
    """The loop's thread gives the interpreter up at each frame it sends; with the default
    5 ms switch interval it then waited up to that long per frame while a plan ran."""
    seen: list[float] = []
    real = plan_inputs.plan_with_holds

    def recording(*args: Any) -> Any:
        seen.append(sys.getswitchinterval())
        return real(*args)

    monkeypatch.setattr(plan_inputs, "plan_with_holds", recording)
    planner, _ = planner_over(dr_parts)
    before = sys.getswitchinterval()
    try:
        await asyncio.wait_for(planner.replan(), 30)
    finally:
        await planner.close()
    assert seen == [planning.PLANNING_SWITCH_INTERVAL_S] and seen[0] < before
    assert sys.getswitchinterval() == before  # the default again between plans
