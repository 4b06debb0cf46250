import asyncio
import gc

from bridge.gc_tuning import OLDER_EVERY, YOUNG_THRESHOLD, tune_for_many_connections
from bridge.runtime.collector_pause import CollectorPause


def test_start_up_objects_are_frozen_and_collections_are_rarer():
    before = gc.get_threshold()
    try:
        tune_for_many_connections()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_EVERY, OLDER_EVERY)
        assert gc.isenabled()  # tuned, not switched off: cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def _until_collecting(limit_s: float) -> float:
    """Seconds until collections run again (fails past ``limit_s``)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while not gc.isenabled():
        assert loop.time() - began < limit_s, "collections still paused"
        await asyncio.sleep(0.01)
    return loop.time() - began


async def test_a_pause_lasts_until_released(monkeypatch):
    monkeypatch.setattr(CollectorPause, "ON_S", 0.0)
    pause = CollectorPause()
    try:
        pause.hold()
        assert not gc.isenabled() and pause.holding
        pause.release_after(0.3)
        await asyncio.sleep(0.05)
        assert not gc.isenabled()  # released later, not now
        await _until_collecting(5)
        pause.release_after(0.01)  # not paused: nothing to release
        assert gc.isenabled() and not pause.holding
    finally:
        gc.enable()


async def test_plans_without_rest_still_let_the_collector_run(monkeypatch):
    monkeypatch.setattr(CollectorPause, "LONGEST_S", 0.3)
    monkeypatch.setattr(CollectorPause, "ON_S", 0.3)
    pause = CollectorPause()
    loop = asyncio.get_running_loop()
    on_for = 0.0
    try:
        began = loop.time()
        while loop.time() - began < 1.5:  # a plan every 50 ms, each releasing 3 s later
            pause.hold()
            pause.release_after(3.0)
            await asyncio.sleep(0.05)
            on_for += 0.05 if gc.isenabled() else 0.0
        assert pause.held >= 2  # paused, resumed after LONGEST_S, paused again after ON_S
        assert on_for >= 0.2
    finally:
        pause.release()
        gc.enable()


async def test_an_urgent_plan_may_pause_once_inside_the_rest(monkeypatch):
    monkeypatch.setattr(CollectorPause, "ON_S", 600.0)  # nothing below waits for it
    pause = CollectorPause()
    try:
        pause.hold()  # a periodic plan
        pause.release_after(0.0)
        await asyncio.sleep(0.02)  # (its release is due first)
        assert gc.isenabled() and not pause.holding
        pause.hold()  # another periodic plan: the collector runs first
        assert gc.isenabled() and not pause.holding
        pause.hold(urgent=True)  # a DR event's plan: paused all the same
        assert not gc.isenabled() and pause.holding and pause.held == 2
        pause.release_after(0.0)
        await asyncio.sleep(0.02)
        pause.hold(urgent=True)  # a second one in a row: the collector runs first
        assert gc.isenabled() and not pause.holding and pause.held == 2
    finally:
        pause.release()
        gc.enable()


async def test_once_released_for_good_no_pause_follows():
    pause = CollectorPause()
    try:
        pause.hold()
        pause.release()  # the bridge stops
        assert gc.isenabled()
        pause.hold()
        assert gc.isenabled() and not pause.holding
    finally:
        gc.enable()


async def test_a_pause_leaves_a_collector_someone_else_turned_off_alone():
    pause = CollectorPause()
    gc.disable()
    try:
        pause.hold()
        assert not pause.holding
    finally:
        gc.enable()
