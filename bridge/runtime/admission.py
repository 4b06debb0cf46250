"""Boot shares: a limit for each station that joins, as soon as its boot is accepted.

A station that holds no profile of ours draws what it can (its own rating). The plan that
gives it its share may be seconds away: in a boot storm the plan waits for the joins to
pause (:class:`~bridge.runtime.planning.ReplanLoop`). So each station that registers with
nothing of ours is given a *boot share* at once, through the dispatcher's usual path (the
same profile, id and stack level as the plan's, which then replaces it).

The stations that registered in the same turn of the event loop (during a storm: within
:data:`BATCH_GAP_S` of the last batch) form one batch, for which the boot share is
computed once (:func:`~policies.boot_shares.split_room`): the room under the site limit
the plan holds now (an event's, while one is in force), less what every other station may
draw (the highest of what it accepted, was last sent and is about to be sent; a station
that cannot be steered at what the planner counts it), split among the batch and the
stations still booting, who keep their part for a later batch. The sum of what every
station may draw so never exceeds the site limit, whatever the order in which they boot.
Where the room is gone the boot share is 0 W: the station waits for the plan, which lowers
the others before it raises it (the dispatcher sends raises once no station is above its
limit).

A plan made from inputs taken before a station joined gives it nothing: its boot share is
fitted again into the room that plan leaves (lowered where it no longer fits).

A station that joined early in a storm may have had a plan already: 0 W, for it had no
session then. When its session starts while the next plan waits for the storm, it is
admitted with the next batch like a joiner (a *session share*), rather than waiting at
0 W for that plan and then for the others to lower.

Only where one share fits every station: not on a site with circuits or a rated
connection, nor while an event aimed at some stations applies, nor for a station under
an operator's hold; those wait for the plan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from bridge.dispatch import Dispatcher, StationRecord
from bridge.station_life import Phase
from policies.boot_shares import Joiner, highest_within, lowest_within, split_room
from policies.fleet import Plan, Site, Step

log = logging.getLogger(__name__)

BOOT_SHARE_REASON = "boot share: the room under the site limit split among the stations joining"
# Each batch reads every station: while stations join in numbers (the last batch had
# STORM_BATCH or more), the next waits BATCH_GAP_S, so that the shares are computed a few
# times in a storm rather than once per station; otherwise a station is admitted at once.
BATCH_GAP_S = 0.1
STORM_BATCH = 10
# A boot share holds until the next plan (at most REPLAN_PERIOD_S away, with the storm's
# wait): the site limit and the others' schedules are judged over this long from now.
HORIZON = timedelta(seconds=60)
# phases of a station whose boot is accepted and whose smart charging is not ruled out
READY = frozenset({Phase.REGISTERED, Phase.READING})
BOOTING = READY | {Phase.CONNECTED}


def _never_limited(record: StationRecord) -> bool:
    """On a link, given and holding nothing of ours: it is joining."""
    life = record.life
    return record.link is not None and record.desired is None and record.applied is None \
        and record.last_sent is None and record.in_flight is None \
        and record.uncertain is None and not record.installed \
        and life.phase in BOOTING \
        and not (life.unmanageable or life.non_compliant or life.refuses)


def _session_after_plan(record: StationRecord, plan: Plan | None, began: datetime | None,
                        now: datetime) -> bool:
    """Its session began (at ``began``) after the inputs of the plan in force were taken,
    that plan gave it 0 W for want of one, and nothing else holds it down: a share of the
    room is due now."""
    station_id = record.info.station_id
    if plan is None or plan.state is None or began is None or began < plan.made_at:
        return False
    if station_id in plan.state.stations or station_id in plan.paused \
            or station_id in plan.state.voltage:  # planned with a session, or held down
        return False
    life = record.life
    if record.link is None or not life.allows.calls or record.reserved \
            or life.unmanageable or life.non_compliant or life.refuses:
        return False
    steps = plan.stations.get(station_id)
    return steps is not None and record.desired == steps \
        and highest_within(steps, now, HORIZON) == 0.0


def _is_boot_share(steps: tuple[Step, ...] | None) -> bool:
    return steps is not None and len(steps) == 1 and steps[0].reason == BOOT_SHARE_REASON


class Admission:
    """Gives each station that joins its boot share, a batch at a time."""

    def __init__(self, site: Site, min_current_a: float, dispatcher: Dispatcher,
                 plan: Callable[[], Plan | None], holds: Mapping[str, object],
                 sessions: Callable[[], Mapping[str, Mapping[int, int]]],
                 aimed_events: Callable[[datetime], bool],
                 clock: Callable[[], datetime]) -> None:
        self._site = site
        self._min_current_a = min_current_a
        self._dispatcher = dispatcher
        self._plan = plan  # the plan in force
        self._holds = holds  # the operator's
        self._sessions = sessions  # station -> connector -> transaction, as they are now
        self._aimed_events = aimed_events  # whether an event aimed at some stations applies
        self._clock = clock
        # registered, or began a session at 0 W (see _session_after_plan), since the last batch
        self._ready: set[str] = set()
        # sessions begun since the inputs of the plan in force were taken: station -> when
        self._began: dict[str, datetime] = {}
        self._due: asyncio.Handle | asyncio.TimerHandle | None = None
        self._last_batch = float("-inf")  # monotonic
        self._gap_s = 0.0  # between batches: see STORM_BATCH
        self.admitted = 0  # boot and session shares given so far

    def registered(self, station_id: str) -> None:
        """The station's boot is accepted (the dispatcher tells): admit it with its batch."""
        record = self._dispatcher.stations.get(station_id)
        if record is not None and _never_limited(record):
            self._queue(station_id)

    def session_started(self, station_id: str) -> None:
        """A session began at the station: admitted with the next batch where the plan in
        force gave it nothing for want of one."""
        try:
            now = self._clock()
            self._began[station_id] = now
            record = self._dispatcher.stations.get(station_id)
            if record is not None and station_id not in self._holds \
                    and _session_after_plan(record, self._plan(), now, now):
                self._queue(station_id)
        except Exception:  # a bug here must not cost the station its StartTransaction
            log.exception("%s: no session share; the plan gives its limit", station_id)

    def _queue(self, station_id: str) -> None:
        self._ready.add(station_id)
        if self._due is None:
            loop = asyncio.get_running_loop()
            wait = self._last_batch + self._gap_s - time.monotonic()
            self._due = loop.call_later(wait, self._batch) if wait > 0 \
                else loop.call_soon(self._batch)

    def close(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None

    def _batch(self) -> None:
        self._due = None
        self._last_batch = time.monotonic()
        ready, self._ready = self._ready, set()
        self._gap_s = BATCH_GAP_S if len(ready) >= STORM_BATCH else 0.0
        try:
            self.admit(ready, self._clock())
        except Exception:  # a bug here must not stop the loop: the plan gives the limits
            log.exception("boot shares not given; the plan gives the limits")

    def _room(self, now: datetime, leave_out: set[str]) -> tuple[float, int] | None:
        """The site limit less what every station not in ``leave_out`` and not joining may
        draw, and how many stations are joining but not in ``leave_out``; None where no
        boot share is given."""
        plan = self._plan()
        site = self._site
        if plan is None or site.circuits or site.max_current_a is not None \
                or self._aimed_events(now):
            return None
        limit_w = lowest_within(plan.site, now, HORIZON)
        if limit_w is None:
            return None
        committed_w = 0.0
        booting = 0
        # most stations share their schedules' step tuples (a plan's share, a batch's)
        judged: dict[int, float] = {}

        def highest(steps: tuple[Step, ...] | None) -> float:
            if steps is None:
                return 0.0
            found = judged.get(id(steps))
            if found is None:
                found = judged[id(steps)] = highest_within(steps, now, HORIZON)
            return found

        for station_id, record in self._dispatcher.stations.items():
            if station_id in leave_out:
                continue
            if _never_limited(record):
                booting += 1
                continue
            life = record.life
            most = max(highest(record.desired), highest(record.applied),
                       highest(record.last_sent), highest(record.in_flight),
                       highest(record.uncertain))
            if life.unmanageable or (life.refuses and record.link is not None):
                counted = record.counted.watts if record.counted is not None \
                    else record.info.max_w
                most = max(most, counted)
            elif life.non_compliant:
                most = max(most, record.compliance.peak_w)
            committed_w += most
        return limit_w - committed_w, booting

    def admit(self, ready: set[str], now: datetime) -> int:
        """Give the stations in ``ready`` that still joined with nothing of ours, or began a
        session at 0 W after the plan, their share; how many were given one."""
        records = self._dispatcher.stations
        plan = self._plan()
        began = self._began
        ready = {sid for sid in ready if sid in records and sid not in self._holds
                 and ((_never_limited(records[sid]) and records[sid].life.phase in READY)
                      or _session_after_plan(records[sid], plan, began.get(sid), now))}
        if any(sid in began for sid in ready):  # a session may have ended meanwhile
            running = self._sessions()
            ready = {sid for sid in ready if sid not in began or sid in running}
        if not ready:
            return 0
        found = self._room(now, ready)
        if found is None:
            return 0
        room_w, booting = found
        joining = {sid: self._joiner(records[sid]) for sid in ready}
        shares = split_room(room_w, joining, waiting=booting)
        self._give(shares, now)
        self.admitted += len(shares)
        log.info("boot shares for %d stations: %.0f W of room, %d more booting",
                 len(shares), room_w, booting)
        return len(shares)

    def after_plan(self, plan: Plan) -> int:
        """Give the sessions the plan did not see (they began after its inputs were
        taken) their session share again, and fit the boot shares it did not cover (those
        stations joined after its inputs) into the room it leaves: lowered where they no
        longer fit. How many boot shares were lowered."""
        try:
            return self._fit(plan)
        except Exception:  # a bug here must not cost the plan its storing; the next covers them
            log.exception("boot shares not fitted to the plan")
            return 0

    def _fit(self, plan: Plan) -> int:
        records = self._dispatcher.stations
        now = self._clock()
        # sessions that began while the plan was made: it gave them 0 W, their share is due
        self._began = {sid: at for sid, at in self._began.items() if at >= plan.made_at}
        if self._began:
            self.admit(set(self._began), now)
        uncovered = {sid for sid, r in records.items()
                     if sid not in plan.stations and _is_boot_share(r.desired)}
        if not uncovered:
            return 0
        found = self._room(now, uncovered)
        if found is None:
            room_w, booting = 0.0, 0  # no longer given: nothing until the next plan
        else:
            room_w, booting = found
        fitted = split_room(room_w, {sid: self._joiner(records[sid]) for sid in uncovered},
                            waiting=booting)
        lowered = {sid: w for sid, w in fitted.items()
                   if w < records[sid].desired[0].limit_w}  # type: ignore[index]
        self._give(lowered, now)
        return len(lowered)

    def _joiner(self, record: StationRecord) -> Joiner:
        info = record.info
        return Joiner(info.max_w, info.watts(self._min_current_a))

    def _give(self, shares: Mapping[str, float], now: datetime) -> None:
        if not shares:
            return
        made: dict[float, tuple[Step, ...]] = {}
        schedules: dict[str, tuple[Step, ...]] = {}
        for station_id, watts in shares.items():
            steps = made.get(watts)
            if steps is None:
                steps = made[watts] = (Step(now, watts, BOOT_SHARE_REASON),)
            schedules[station_id] = steps
        self._dispatcher.set_desired(schedules, self._sessions())
