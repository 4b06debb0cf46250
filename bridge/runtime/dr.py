"""DR events in, and the site's opts out: the VEN's side of the runtime.

Each event the VEN hands on is decided (the policy's opt, unless the operator opted out
of it or declared the site unavailable), persisted before the VTN hears the answer, and
planned at once. The operator's opts, whether asked here or written by the CLI into the
store, are applied to the events they concern and sent to the VTN until it acknowledges
them (:meth:`DrEvents.run_operator_opts`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bridge.clock import Clock
from bridge.config import Config
from bridge.runtime.stations import StationEvents
from bridge.store import OperatorOpt, Store, StoredEvent
from policies.events import DrEvent, OptType
from policies.plan import decide_opt
from ven.interface import OptReason, Registration, VenDriver, Window

log = logging.getLogger(__name__)

# Operator opts written by another process (the CLI) are picked up this often; opts the VTN
# has not acknowledged yet are sent again this often.
OPERATOR_POLL_S = 1.0
OPT_RETRY_S = 5.0
OPERATOR_OPT_OUT = "operator opted out"
OPT_REASONS: frozenset[str] = frozenset(OptReason.__args__)  # type: ignore[attr-defined]


class DrEvents:
    def __init__(self, config: Config, store: Store, clock: Clock, ven: VenDriver,
                 fleet: StationEvents, baselines: dict[str, float],
                 replan_now: Callable[[], Awaitable[None]]) -> None:
        self.config = config
        self._store = store
        self._clock = clock
        self.ven = ven
        self._fleet = fleet  # the load an event's LOAD_DISPATCH delta counts from
        self._replan_now = replan_now
        self.events: dict[str, StoredEvent] = {e.event.event_id: e for e in store.events()}
        # per event: the measured load when the event arrived (LOAD_DISPATCH deltas); with
        # the allocation state, kept across restarts
        self.baselines = baselines
        self._opt_send_lock = asyncio.Lock()

    # the VEN's listener -----------------------------------------------------------------------
    async def on_event(self, event: DrEvent) -> OptType:
        # What a LOAD_DISPATCH delta counts from: the load of the stations the event is
        # for, measured when it first arrives.
        targeted = self.event_stations(event)
        baseline = self.baselines.setdefault(
            event.event_id,
            self._fleet.load_w() if targeted is None else self._fleet.stations_load_w(targeted))
        opt, reason = self._decide_opt(event, baseline)
        known = self.events.get(event.event_id)
        if known and known.event.modification_number > event.modification_number:
            log.info("event %s: modification %d is older than %d; ignored", event.event_id,
                     event.modification_number, known.event.modification_number)
            return known.opt  # type: ignore[return-value]
        # Persist before the VTN hears our answer.
        self._store.save_event(event, opt, reason, self._clock())
        self.events[event.event_id] = StoredEvent(event, opt, reason)
        log.info("event %s (%s, modification %d) %s: %s", event.event_id, event.status.value,
                 event.modification_number, opt, reason)
        await self._replan_now()
        return opt

    def on_registration(self, registration: Registration) -> None:
        self._store.save_registration(self.config.model.ven.vtn_url, registration,
                                      self._clock())
        log.info("registered with the VTN as %s", registration.ven_id)

    def on_registration_cancelled(self) -> None:
        self._store.clear_registration(self.config.model.ven.vtn_url)

    # what the events ask ----------------------------------------------------------------------
    def event_stations(self, event: DrEvent) -> frozenset[str] | None:
        """The stations an event applies to: None for the whole site (no or site-wide
        targets); otherwise the stations of the configured resources and groups it named."""
        if event.whole_site:
            return None
        return self.config.target_stations(event.matched_resources, event.matched_groups)

    def active_events(self, now: datetime) -> list[DrEvent]:
        return [e.event for e in self.events.values()
                if e.opt == "optIn" and not e.event.is_over(now)]

    def planned_events(self, now: datetime) -> list[DrEvent]:
        """Events the plan follows: active ones, and those still in their recovery period."""
        def recovering(event: DrEvent) -> bool:
            end = event.end
            return event.status != "cancelled" and end is not None and \
                event.recovery is not None and end + event.recovery > now
        return [e.event for e in self.events.values()
                if e.opt == "optIn" and (not e.event.is_over(now) or recovering(e.event))]

    def overridden(self, now: datetime) -> bool:
        """Whether the operator opted out of an event in force (TELEMETRY_STATUS)."""
        return any(e.opt_reason.startswith(OPERATOR_OPT_OUT) and e.event.start <= now
                   and not e.event.is_over(now) for e in self.events.values())

    def prune_baselines(self) -> None:
        """Keep the baselines of known events only (they are stored with the plan's state)."""
        self.baselines = {k: v for k, v in self.baselines.items() if k in self.events}

    # the site's opts --------------------------------------------------------------------------
    def _decide_opt(self, event: DrEvent, baseline_w: float) -> tuple[OptType, str]:
        """The policy decides, unless the site operator opted out of the event or declared
        the site unavailable during it."""
        return self._operator_decision(event, *self._standing_opts()) or \
            decide_opt(event, self.config.policy, self.config.site, baseline_w)

    def _standing_opts(self) -> tuple[dict[str, OperatorOpt], list[OperatorOpt]]:
        """The operator's standing opt-outs by event id, and unavailability windows."""
        standing = self._store.operator_opts("cancelled_at IS NULL")
        return ({o.event_id: o for o in standing if o.event_id is not None},
                [o for o in standing if o.event_id is None])

    @staticmethod
    def _operator_decision(event: DrEvent, opt_outs: dict[str, OperatorOpt],
                           windows: list[OperatorOpt]) -> tuple[OptType, str] | None:
        operator = opt_outs.get(event.event_id)
        if operator is not None:
            return "optOut", _operator_reason(operator)
        end = event.end
        for window in windows:
            assert window.window_start is not None and window.window_end is not None
            if window.window_start < (end or datetime.max.replace(tzinfo=UTC)) \
                    and event.start < window.window_end:
                return "optOut", (f"{OPERATOR_OPT_OUT}: unavailable from "
                                  f"{window.window_start:%Y-%m-%d %H:%M} to "
                                  f"{window.window_end:%Y-%m-%d %H:%M} UTC ({window.reason})")
        return None

    async def apply_operator_opts(self) -> None:
        """Bring each pending or active event's opt in line with the operator's standing
        opt-outs and unavailability windows."""
        now = self._clock()
        opt_outs, windows = self._standing_opts()
        changed = False
        for event_id, known in list(self.events.items()):
            if known.event.is_over(now):
                continue  # what was decided for a past event stays on record
            decision = self._operator_decision(known.event, opt_outs, windows)
            if decision is not None:
                opt, reason = decision
            elif known.opt_reason.startswith(OPERATOR_OPT_OUT):
                opt, reason = decide_opt(known.event, self.config.policy, self.config.site,
                                         self.baselines.get(event_id, 0.0))
            else:
                continue
            if (opt, reason) != (known.opt, known.opt_reason):
                self._store.save_event(known.event, opt, reason, now)
                self.events[event_id] = StoredEvent(known.event, opt, reason)
                self.ven.opts[event_id] = opt  # what the VEN answers if the VTN sends it again
                log.info("event %s: %s (%s)", event_id, opt, reason)
                changed = True
        for pending in self._store.operator_opts("applied_at IS NULL"):
            self._store.mark_opt(pending.opt_id, "applied_at", now)
        if changed:
            await self._replan_now()

    async def send_operator_opts(self) -> None:
        """Send the VTN every operator opt (or withdrawal) it has not acknowledged yet."""
        if self.ven.registration is None:
            return  # sent once registered
        async with self._opt_send_lock:
            for opt in self._store.operator_opts(
                    "sent_at IS NULL AND cancelled_at IS NULL AND applied_at IS NOT NULL"):
                reason = _opt_reason(opt.reason)
                if opt.event_id is not None:
                    known = self.events.get(opt.event_id)
                    if known is None:
                        continue
                    sent = await self.ven.opt_out_of_event(
                        opt.opt_id, opt.event_id, known.event.modification_number, reason,
                        market_context=known.event.market_context or None)
                else:
                    assert opt.window_start is not None and opt.window_end is not None
                    sent = await self.ven.declare_unavailable(
                        opt.opt_id, [Window(opt.window_start, opt.window_end - opt.window_start)],
                        reason)
                if sent:
                    self._store.mark_opt(opt.opt_id, "sent_at", self._clock())
                    log.info("VTN acknowledged opt %s", opt.opt_id)
            for opt in self._store.operator_opts(
                    "cancelled_at IS NOT NULL AND cancel_sent_at IS NULL"):
                # an opt the VTN never acknowledged needs no withdrawal
                if opt.sent_at is None or await self.ven.cancel_opt(opt.opt_id):
                    self._store.mark_opt(opt.opt_id, "cancel_sent_at", self._clock())

    async def run_operator_opts(self) -> None:
        """Apply the opts the CLI writes into the store, and send the VTN what it has not
        acknowledged: new opts at once, failed ones again every OPT_RETRY_S."""
        loop = asyncio.get_running_loop()
        attempted: set[str] = set()
        last_send = loop.time()
        while True:
            try:
                await self.apply_operator_opts()
                unsent = {o.opt_id for o in self._store.operator_opts(
                    "(sent_at IS NULL AND cancelled_at IS NULL)"
                    " OR (cancelled_at IS NOT NULL AND cancel_sent_at IS NULL)")}
                if unsent - attempted or (unsent and loop.time() - last_send >= OPT_RETRY_S):
                    attempted |= unsent
                    last_send = loop.time()
                    await self.send_operator_opts()
            except Exception:  # a store or VTN hiccup must not end the loop; retried
                log.exception("applying operator opts failed; retrying")
            await asyncio.sleep(OPERATOR_POLL_S)


def _operator_reason(opt: OperatorOpt) -> str:
    return f"{OPERATOR_OPT_OUT}: {opt.reason}" if opt.reason else OPERATOR_OPT_OUT


def _opt_reason(text: str) -> OptReason:
    """The operator's reason as an ei:optReason when it is one; otherwise notParticipating."""
    return text if text in OPT_REASONS else "notParticipating"  # type: ignore[return-value]
