"""The DR-events part on its own: events decided, stored before the answer, planned at
once; the operator's opts applied to them. Over a real store and a real VEN that is not
run (nothing here reaches a VTN); the clock is the test's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_runtime_stations import T0, Parts, meter_value, site_config

from bridge.runtime.dr import OPERATOR_OPT_OUT, DrEvents
from policies.events import DrEvent, EventSignal, EventStatus, OptType, SignalInterval
from ven.interface import SiteStatus
from ven.oadr20b.client import Ven, VenSettings


class Listener:
    """What the VEN would call: events to the part under test, no report values."""

    def __init__(self) -> None:
        self.dr: DrEvents | None = None

    async def on_event(self, event: DrEvent) -> OptType:
        assert self.dr is not None
        return await self.dr.on_event(event)

    def on_registration(self, registration: object) -> None: ...

    def on_registration_cancelled(self) -> None: ...

    def measured_load_w(self) -> float:
        return 0.0

    def measured_energy_wh(self) -> float:
        return 0.0

    def group_load_w(self, group_id: str) -> float:
        return 0.0

    def site_status(self) -> SiteStatus:
        return SiteStatus(online=True, manual_override=False, current_w=0, min_w=0, max_w=0)

    def load_history(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        return []


class DrParts:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.plans = 0
        listener = Listener()
        config = parts.config
        self.ven = Ven(VenSettings(vtn_url=config.model.ven.vtn_url, ven_name="test-site",
                                   resource_id=config.resource_id), listener,  # type: ignore[arg-type]
                       state=parts.store)
        self.dr = listener.dr = DrEvents(config, parts.store, parts.clock, self.ven, parts.fleet,
                                         baselines={}, replan_now=self.plan)

    async def plan(self) -> None:
        self.plans += 1


@pytest.fixture
def dr_parts(tmp_path: Path) -> Iterator[DrParts]:
    parts = Parts(site_config(tmp_path))
    yield DrParts(parts)
    parts.store.close()


def simple(event_id: str, level: int, modification: int = 0,
           start: datetime = T0 + timedelta(minutes=5)) -> DrEvent:
    duration = timedelta(hours=1)
    interval = SignalInterval(start=start, duration=duration, value=level)
    return DrEvent(event_id=event_id, modification_number=modification,
                   status=EventStatus.FAR, start=start, duration=duration,
                   signals=(EventSignal(name="SIMPLE", type="level", intervals=(interval,)),))


async def test_an_event_is_stored_before_the_answer_and_planned_at_once(dr_parts: DrParts):
    dr, store = dr_parts.dr, dr_parts.parts.store
    # what a LOAD_DISPATCH delta would count from: the fleet's load when the event arrives
    dr_parts.parts.fleet.meter_values("CP1", 1, [meter_value(T0, power_w=7_000)])
    assert await dr.on_event(simple("ev-1", 1)) == "optIn"
    [stored] = store.events()
    assert (stored.event.event_id, stored.opt) == ("ev-1", "optIn")
    assert dr.events["ev-1"].opt == "optIn"
    assert dr.baselines == {"ev-1": 7_000}
    assert dr_parts.plans == 1


async def test_an_older_modification_changes_nothing(dr_parts: DrParts):
    dr = dr_parts.dr
    await dr.on_event(simple("ev-1", 2, modification=3))
    assert await dr.on_event(simple("ev-1", 1, modification=2)) == "optIn"
    assert dr.events["ev-1"].event.modification_number == 3
    assert [e.event.modification_number for e in dr_parts.parts.store.events()] == [3]
    assert dr_parts.plans == 1


async def test_an_operator_opt_out_in_the_store_is_applied_and_withdrawn(dr_parts: DrParts):
    dr, store = dr_parts.dr, dr_parts.parts.store
    await dr.on_event(simple("ev-1", 1))
    # as the CLI writes it, from another process
    opt = store.request_opt_out("ev-1", "the car park is closed", T0)
    await dr.apply_operator_opts()
    assert dr.events["ev-1"].opt == "optOut"
    assert dr.events["ev-1"].opt_reason == f"{OPERATOR_OPT_OUT}: the car park is closed"
    assert dr_parts.ven.opts["ev-1"] == "optOut"  # what the VEN answers if it comes again
    assert store.operator_opts("applied_at IS NULL") == []
    assert dr_parts.plans == 2
    await dr.apply_operator_opts()  # nothing new: no plan
    assert dr_parts.plans == 2

    assert store.request_opt_cancel(opt.opt_id, T0)
    await dr.apply_operator_opts()
    assert dr.events["ev-1"].opt == "optIn"  # the policy's decision again
    assert dr_parts.ven.opts["ev-1"] == "optIn"
    assert dr_parts.plans == 3
