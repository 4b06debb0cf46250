"""A plan and its state as the store keeps them: JSON text (pure).

Apart from the store so that the planning process encodes the plan it made without
importing the store's database library.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from policies.fleet import PlanState, StationState, Step


def iso(value: datetime) -> str:
    # most times are UTC already (the clock's, and stations' "Z" times as read)
    return (value if value.tzinfo is UTC else value.astimezone(UTC)).isoformat()


def steps_to_json(steps: Iterable[Step]) -> str:
    return json.dumps([step_item(s) for s in steps])


class ScheduleText:
    """:func:`steps_to_json` for schedules a plan shares among stations (one tuple of steps
    for every station given the same share): each tuple is encoded once while it is among
    the last :data:`KEPT` seen. Keyed by identity; each tuple is kept with its text, so its
    id cannot be another's meanwhile."""

    KEPT = 256

    __slots__ = ("_texts",)

    def __init__(self) -> None:
        self._texts: dict[int, tuple[tuple[Step, ...], str]] = {}

    def __call__(self, steps: Iterable[Step]) -> str:
        if not isinstance(steps, tuple):
            return steps_to_json(steps)
        kept = self._texts.get(id(steps))
        if kept is not None and kept[0] is steps:
            return kept[1]
        text = steps_to_json(steps)
        if len(self._texts) >= self.KEPT:
            self._texts.clear()  # a new plan's schedules replace the last one's
        self._texts[id(steps)] = (steps, text)
        return text


def step_item(s: Step) -> list[Any]:
    # a step's reason chain, when it has one, as a fourth item: [[kind, text], ...]
    return [iso(s.start), s.limit_w, s.reason,
            *([[[w.kind, w.text] for w in s.chain]] if s.chain else [])]


def _optiso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def encode_plan_state(state: PlanState) -> str:
    """The state as :func:`plan_state_to_json` stores it, but for the event baselines
    (:func:`with_baselines` adds them). Pure: the planner may call it where it plans, while the
    baselines, which the event loop keeps, are added there."""
    return json.dumps({
        "at": iso(state.at), "site_limit_w": state.site_limit_w,
        "ramp_from": None if state.ramp_from is None
        else [iso(state.ramp_from[0]), state.ramp_from[1]],
        "rises": [iso(at) for at in state.rises],
        "restore_began": _optiso(state.restore_began),
        "stations": {sid: station_to_json(s) for sid, s in state.stations.items()},
        "voltage": {key: [h.share, iso(h.since), h.reason, h.step, h.eased_from]
                    for key, h in state.voltage.items()},
        "absorb": None if state.absorb is None else [
            state.absorb.share, iso(state.absorb.since), state.absorb.reason,
            state.absorb.step, state.absorb.fell_from],
    })


def with_baselines(encoded_state: str, baselines: Mapping[str, float]) -> str:
    """An encoded state (a JSON object, see :func:`encode_plan_state`) with the baselines."""
    return f'{encoded_state[:-1]}, "baselines": {json.dumps(dict(baselines))}}}'


@dataclass(frozen=True)
class EncodedPlan:
    """A plan as the store keeps it, encoded ahead of the write (see :func:`encode_plan`)."""

    made_at: str
    site: str
    stations: str  # a JSON object: each station's schedule as its index in ``schedules``
    schedules: str  # a JSON array of the plan's distinct schedules, each as steps_to_json
    state: str | None  # without the baselines (see :func:`encode_plan_state`)


def encode_plan(made_at: datetime, site: Iterable[Step],
                stations: Mapping[str, Iterable[Step]], state: PlanState | None = None
                ) -> EncodedPlan:
    """Pure, so that the planner encodes a large plan where it made it and the event loop
    only writes it.

    Each distinct schedule is written once, and each station names its schedule by
    index: a plan gives every station with the same share the same steps, so a DR
    event's plan for 10,000 stations has a handful of schedules, and written out per
    station (each step with its reasons) it took 9.2 MB of JSON rather than 0.15 MB.
    """
    index_of_text: dict[str, int] = {}
    # schedules by the identity of their steps (a plan shares step objects among the
    # stations given the same share), each kept with its steps so that no id is reused
    # while this runs; equal schedules of distinct objects still meet in index_of_text
    known: dict[tuple[int, ...], tuple[int, tuple[Step, ...]]] = {}
    indexes: dict[str, int] = {}
    for station_id, schedule in stations.items():
        steps = schedule if isinstance(schedule, tuple) else tuple(schedule)
        key = tuple(map(id, steps))
        found = known.get(key)
        if found is None:
            text = steps_to_json(steps)
            found = known[key] = (index_of_text.setdefault(text, len(index_of_text)), steps)
        indexes[station_id] = found[0]
    return EncodedPlan(
        iso(made_at), steps_to_json(site), json.dumps(indexes),
        f"[{', '.join(index_of_text)}]",
        None if state is None else encode_plan_state(state))


def decode_schedules(stations: str, schedules: str | None) -> dict[str, list[Any]]:
    """Each station's schedule as JSON items, from a stored plan's two columns (a plan
    stored before ``schedules`` existed has each station's items in ``stations``)."""
    placed = json.loads(stations)
    if schedules is None:
        return placed
    distinct = json.loads(schedules)
    return {station_id: distinct[index] for station_id, index in placed.items()}


def station_to_json(s: StationState) -> list[Any]:
    return [s.limit_w, s.charging, iso(s.since), _optiso(s.restore_at), s.switched,
            s.paused_at_limit_w, _optiso(s.resume_until), s.hard_pause,
            None if s.then is None else station_to_json(s.then)]
