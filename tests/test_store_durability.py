"""What a crash (kill -9, power cut) leaves in the store: what was acknowledged is there."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

from bridge.store import Store
from policies.fleet import Step

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_a_session_on_record_has_its_stations_boot_on_record(tmp_path: Path):
    """Station details wait for the 1 s flush, but a transaction is committed before the
    station hears its id: the boot goes with it, so that a bridge killed in between does not
    take a real station for an id that never booted (and close its session) at restart."""
    path = tmp_path / "bridge.db"
    store = Store(path)
    store.save_station("CP1", {"vendor": "v", "model": "m", "last_boot": NOW.isoformat()})
    store.save_station("CP2", {"vendor": "v", "model": "m", "last_boot": NOW.isoformat()})
    store.start_transaction("CP1", 1, "TAG", 0, NOW)
    # killed here: no flush, no close
    with contextlib.closing(Store(path)) as after:
        assert after.booted("CP1")
        assert not after.booted("CP2")  # no session acknowledged: nothing promised
        assert [row["station_id"] for row in after.open_transactions()] == ["CP1"]
    store.db.close()


def test_a_schedule_sent_is_on_record_until_its_answer_is(tmp_path: Path):
    """Written before it goes: a bridge killed before the station's answer is stored knows
    the station may hold it; once an answer is stored, nothing is pending."""
    path = tmp_path / "bridge.db"
    store = Store(path)
    before = (Step(NOW, 22_000.0, "site capacity"),)
    event = (Step(NOW, 5_500.0, "event"),)
    store.save_applied("CP1", before, NOW)
    store.save_sent("CP1", event, NOW)
    # killed here: no flush, no close
    with contextlib.closing(Store(path)) as after:
        assert after.applied() == {"CP1": before}
        assert after.sent() == {"CP1": event}
        after.save_applied("CP1", event, NOW)
    with contextlib.closing(Store(path)) as again:
        assert again.applied() == {"CP1": event}
        assert again.sent() == {}
    store.db.close()
