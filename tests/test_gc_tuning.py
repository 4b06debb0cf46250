import asyncio
import gc

from bridge.gc_tuning import (
    OLDER_EVERY,
    YOUNG_THRESHOLD,
    CollectorPause,
    tune_for_many_connections,
)


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


async def test_a_pause_holds_collections_until_released_and_never_past_its_longest(
        monkeypatch):
    assert gc.isenabled()
    pause = CollectorPause()
    try:
        pause.hold()
        assert not gc.isenabled()
        pause.hold()  # a second plan while the first's wave goes out
        pause.release_after(0.05)
        await asyncio.sleep(0.01)
        assert not gc.isenabled()
        await asyncio.sleep(0.1)
        assert gc.isenabled()
        pause.release_after(0.01)  # not held: nothing to release
        assert gc.isenabled()

        pause.hold()
        pause.release()  # the bridge stops
        assert gc.isenabled()

        monkeypatch.setattr(CollectorPause, "LONGEST_S", 0.05)
        pause.hold()  # and never released: collections come back anyway
        await asyncio.sleep(0.1)
        assert gc.isenabled()
    finally:
        gc.enable()
