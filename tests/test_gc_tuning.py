import gc

from bridge.gc_tuning import OLDER_EVERY, YOUNG_THRESHOLD, tune_for_many_connections


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
