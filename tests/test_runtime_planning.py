"""The planning loop on its own, in virtual time: when changes make plans.

A scripted timer stands in for the event loop's clock: it fires each scripted change at
its second (as a station event would ask for a plan) while the loop sleeps or waits, so
every plan's time is exact and no test depends on the machine's speed.
"""

from __future__ import annotations

import asyncio

import pytest

from bridge.runtime.planning import (
    REPLAN_COALESCE_S,
    REPLAN_PERIOD_S,
    REPLAN_QUIET_S,
    REPLAN_SETTLE_MAX_S,
    STORM_CHANGES_PER_S,
    URGENT_GAP_S,
    ReplanLoop,
)


class Over(Exception):
    """The script's time is up."""


class ScriptedTimer:
    def __init__(self, changes_at: list[float], until: float,
                 urgent_at: list[float] | None = None) -> None:
        self.now = 0.0
        self.until = until
        self._pending = sorted([(at, False) for at in changes_at]
                               + [(at, True) for at in urgent_at or []])
        self.loop: ReplanLoop | None = None

    def monotonic(self) -> float:
        return self.now

    def _fire_until(self, moment: float) -> None:
        assert self.loop is not None
        while self._pending and self._pending[0][0] <= moment:
            self.now, urgent = self._pending.pop(0)
            self.loop.request(urgent=True) if urgent else self.loop.request()
        if moment > self.until:
            raise Over
        self.now = moment

    async def sleep(self, seconds: float) -> None:
        self._fire_until(self.now + seconds)

    async def wait(self, wake: asyncio.Event, timeout: float) -> bool:
        deadline = self.now + timeout
        while not wake.is_set() and self._pending and self._pending[0][0] <= deadline:
            self._fire_until(self._pending[0][0])
        if wake.is_set():
            return True
        self._fire_until(deadline)
        return False


async def plans_made(changes_at: list[float], until: float,
                     plan_fails: bool = False, urgent_at: list[float] | None = None,
                     plan_s: float = 0.0) -> list[float]:
    """When the loop plans, for changes at these seconds (``urgent_at``: changes that
    cannot wait for the coalescing); each plan takes ``plan_s`` (in its thread)."""
    timer = ScriptedTimer(changes_at, until, urgent_at)
    loop = timer.loop = ReplanLoop(timer)
    made: list[float] = []

    async def plan() -> None:
        made.append(round(timer.now, 3))
        if plan_s:
            await timer.sleep(plan_s)
        if plan_fails:
            raise RuntimeError("a planning bug")

    with pytest.raises(Over):
        await loop.run(plan)
    return made


async def test_changes_within_a_second_share_one_plan():
    # ten changes a second for three seconds: a plan at the first, then one a second
    changes = [i / 10 for i in range(31)]
    assert await plans_made(changes, until=10) == [0.0, 1.0, 2.0, 3.0]


async def test_without_changes_a_plan_is_made_every_period():
    made = await plans_made([0.0], until=2.5 * REPLAN_PERIOD_S)
    assert made == [0.0, REPLAN_COALESCE_S + REPLAN_PERIOD_S,
                    2 * (REPLAN_COALESCE_S + REPLAN_PERIOD_S)]


async def test_a_boot_storm_makes_one_plan_once_it_pauses():
    # 200 stations join within the first second, then nothing
    storm = [i * 0.005 for i in range(200)]
    assert len(storm) > STORM_CHANGES_PER_S
    made = await plans_made(storm, until=20)
    # the first change is planned at once (no storm yet); the rest of the storm waits for
    # the changes to pause, then makes one plan
    assert made == [0.0, REPLAN_COALESCE_S + REPLAN_QUIET_S]


async def test_a_storm_that_goes_on_is_planned_after_the_settle_limit():
    # a hundred changes a second for ten seconds
    storm = [i / 100 for i in range(1000)]
    made = await plans_made(storm, until=20)
    first_settled = REPLAN_COALESCE_S + REPLAN_SETTLE_MAX_S
    assert made[0] == 0.0
    assert made[1] == pytest.approx(first_settled, abs=0.011)
    # the next storm-wait begins a second later and ends once the changes stop at 10 s
    assert made[2] == pytest.approx(min(made[1] + REPLAN_COALESCE_S + REPLAN_SETTLE_MAX_S,
                                        storm[-1] + REPLAN_QUIET_S), abs=0.011)
    assert len(made) == 3


async def test_fewer_changes_than_a_storm_are_not_held_back():
    # just under the storm rate: each second's plan comes on time
    per_second = STORM_CHANGES_PER_S - 2
    changes = [i / per_second for i in range(3 * per_second)]
    made = await plans_made(changes, until=5)
    assert made == [0.0, 1.0, 2.0, 3.0]


async def test_a_change_that_cannot_wait_is_planned_at_once():
    """A voltage monitor's sag is planned at once, not at the end of the coalescing second
    that followed the plan before; a burst of them (a whole feeder's monitors) makes a few
    plans, not one each."""
    assert await plans_made([0.0], until=3, urgent_at=[0.3]) == [0.0, 0.3]
    assert await plans_made([0.0], until=3, urgent_at=[0.05]) == [0.0, URGENT_GAP_S]
    burst = [0.4 + i / 1000 for i in range(20)]  # 20 stations' monitors within 20 ms
    assert await plans_made([0.0], until=3, urgent_at=burst) == [0.0, 0.4, 0.5]
    # the ordinary changes around them keep their coalescing
    assert await plans_made([0.0, 0.2, 0.6], until=3) == [0.0, 1.0]


async def test_a_failing_plan_does_not_end_the_loop():
    assert await plans_made([0.0, 1.5, 3.5], until=6, plan_fails=True) == [0.0, 1.5, 3.5]


async def test_a_change_while_a_plan_is_made_gets_the_next_plan():
    """A plan takes a while (in its own thread); what changes meanwhile is not lost."""
    made = await plans_made([0.0, 0.5], until=5, plan_s=1.5)
    assert made == [0.0, 1.5 + REPLAN_COALESCE_S]
    # one that cannot wait is planned as soon as the plan under way is done
    made = await plans_made([0.0], until=5, urgent_at=[0.5], plan_s=1.5)
    assert made == [0.0, 1.5 + URGENT_GAP_S]
