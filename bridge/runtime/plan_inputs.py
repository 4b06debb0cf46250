"""Everything one plan is made from, and the plan made from it (pure).

The bridge takes :class:`PlanInputs` on its event loop; the plan is made from them in a
planning thread or in the planning process (:mod:`bridge.runtime.plan_process`), which is
why this module imports no more than the plan needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.holds import HoldMode, plan_with_holds
from bridge.plan_json import EncodedPlan, encode_plan
from policies.events import DrEvent
from policies.fleet import Fleet, Plan, PlanState, Site, Step, value_at
from policies.model import Policy
from policies.plan import Conditions


@dataclass(frozen=True)
class PlanInputs:
    """Everything one plan is made from, taken on the event loop.

    The planning thread (or process) reads these while the loop goes on changing the runtime's own
    state, so each is a snapshot nothing else mutates meanwhile: containers made for this
    plan alone (dicts, tuples, the :class:`Fleet`, the :class:`Conditions`) holding frozen
    values (sessions, station infos, steps, readings, limits, the events, the policy, the
    previous plan's state), never a dict the runtime keeps (``baselines`` is copied).
    """

    events: Sequence[DrEvent]
    policy: Policy
    site: Site
    fleet: Fleet
    now: datetime
    holds: Mapping[str, HoldMode]
    state: PlanState | None
    conditions: Conditions
    previous: Plan | None  # the plan this one replaces (immutable once made)

    def plan(self) -> tuple[Plan, EncodedPlan | None]:
        """The plan, and where it differs from the previous one, the plan as the store
        keeps it (pure; in the planning thread or process)."""
        plan = plan_with_holds(self.events, self.policy, self.site, self.fleet, self.now,
                               self.holds, self.state, self.conditions)
        if self.previous is not None and not _changed(self.previous, plan, self.now):
            return plan, None
        # encoded here rather than where it is stored: at 10,000 stations the encoding
        # is about a tenth of a second the event loop would stall for
        return plan, encode_plan(plan.made_at, plan.site, plan.stations, plan.state)


def _changed(old: Plan, new: Plan, now: datetime) -> bool:
    def future(steps: tuple[Step, ...]) -> list[tuple[float, float]]:
        current = value_at(steps, now)
        return [(max(s.start, now).timestamp(), round(s.limit_w)) for s in steps
                if s.start >= now or s is current]
    if future(old.site) != future(new.site) or old.stations.keys() != new.stations.keys():
        return True
    return any(future(old.stations[k]) != future(new.stations[k]) for k in new.stations)
