"""A station's life as the dispatcher follows it: its phases, the events that move it from
one to the next, what each phase allows, and how the planner counts the station (pure).

The phase says where the station is on its current connection::

    (any phase) --connected--> CONNECTED     no call before its boot is accepted;
                                   |         booted: stays, what was learnt is reset
                                   | registered / boot_wait_over
                                   v
       +---------------------> REGISTERED <------ booted (from every later phase)
       | read                   |   |   ^
       |            reading     |   |   | fallback
    READING <-------------------+   |   |
       |                       sent |   |
       | no_smart_charging          v   |
       |          REFUSING --sent--> LIMIT_IN_FLIGHT --accepted--> ACKNOWLEDGED <---+
       |             ^                 |     |                        |            |
       v             +----refused------+     |              verified  |   accepted |
    UNMANAGEABLE <---------------------------+                        v            |
         (no_smart_charging, also from REGISTERED,                VERIFIED --------+
          ACKNOWLEDGED and VERIFIED)

    (every phase on a link) --disconnected--> OFFLINE --forgotten--> FORGOTTEN

A steered station stays steered while a new limit is in flight, or refused, or tried with
another placement (``sent``, ``accepted_same``, ``refused``, ``fallback`` leave ACKNOWLEDGED
and VERIFIED as they are): it holds the limit it acknowledged on this connection, and the
dispatcher counts what may be in flight beside it. A new limit accepted (``accepted``) makes
a VERIFIED station ACKNOWLEDGED again until its composite schedule is asked anew.
``no_smart_charging`` leaves REGISTERED, READING, LIMIT_IN_FLIGHT, ACKNOWLEDGED and VERIFIED
for UNMANAGEABLE (its features lack SmartCharging, or it answered NotSupported).

Beside the phase, what outlives a connection (each cleared only by the event named):

- ``refuses``: its last profile was rejected or went unanswered (set by ``refused``,
  cleared by ``accepted`` / ``accepted_same``);
- ``unmanageable``: it has no smart charging (set by ``no_smart_charging``, cleared by
  ``read``: its capabilities read again after a boot);
- ``non_compliant``: the verdict on its meter or composite schedule (``flagged``,
  ``cleared``, and ``booted``). The evidence is weighed in :mod:`bridge.compliance`;
  ``flagged`` and ``cleared`` leave every phase as it is.

From these and two facts of the record (does it hold a schedule it acknowledged, has it a
session) follow whether the station is steered and how the planner counts it
(:meth:`StationLife.counting`). An event the table has no row for raises
:class:`IllegalTransition`: the dispatcher logs it and carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Phase(StrEnum):
    OFFLINE = "offline"  # no connection (not yet, or gone); it may hold a schedule of ours
    CONNECTED = "connected"  # its websocket is open, its boot not accepted yet: no calls
    REGISTERED = "registered"  # booted, or showed it was accepted before: calls may go
    READING = "reading"  # its capabilities and the profiles it holds are being read
    LIMIT_IN_FLIGHT = "limit_in_flight"  # its first limit on this connection sent, unanswered
    REFUSING = "refusing"  # that limit was rejected or unanswered: tried again later
    ACKNOWLEDGED = "acknowledged"  # it accepted our limit on this connection: steered
    VERIFIED = "verified"  # steered, and its composite schedule confirms the limit in force
    UNMANAGEABLE = "unmanageable"  # no smart charging: no profile is sent until it boots
    FORGOTTEN = "forgotten"  # dropped: it never booted and holds nothing of ours


class Event(StrEnum):
    CONNECTED = "connected"  # a connection opened under its id (replacing any other)
    BOOTED = "booted"  # BootNotification: its profiles may be gone, its firmware new
    REGISTERED = "registered"  # its boot answered, or another request first (accepted before)
    BOOT_WAIT_OVER = "boot_wait_over"  # silent since it connected: served all the same
    READING = "reading"  # its capabilities (and the profiles of others it holds) asked
    READ = "read"  # read; SmartCharging among its features, or not said
    NO_SMART_CHARGING = "no_smart_charging"  # its features lack it, or it said NotSupported
    SENT = "sent"  # a wave of profiles sent
    ACCEPTED = "accepted"  # the wave accepted: a new limit in force
    ACCEPTED_SAME = "accepted_same"  # accepted, the limit in force unchanged
    FALLBACK = "fallback"  # rejected for its place (stack level, connector 0): tried otherwise
    REFUSED = "refused"  # rejected, or no answer: tried again later
    VERIFIED = "verified"  # its composite schedule confirms the limit in force
    FLAGGED = "flagged"  # it draws, or computes, more than it accepted
    CLEARED = "cleared"  # it follows its limit again
    DISCONNECTED = "disconnected"  # its connection closed
    FORGOTTEN = "forgotten"  # dropped (never booted, holds nothing of ours)


class Counting(StrEnum):
    """How the planner counts a station."""

    SHARE = "share"  # what the plan gives it
    LAST_ACKNOWLEDGED = "last_acknowledged"  # the schedule it acknowledged, and any in flight
    HARDWARE_MAXIMUM = "hardware_maximum"  # the most it may draw (see bridge.worst_case)
    MEASURED_DRAW = "measured_draw"  # the highest draw measured since it was flagged


@dataclass(frozen=True)
class Allows:
    calls: bool  # any call may go to it (its boot is accepted)
    profiles: bool  # a charging profile may go to it
    steered: bool  # it holds a limit of ours acknowledged on this connection


ALLOWS: dict[Phase, Allows] = {
    Phase.OFFLINE: Allows(calls=False, profiles=False, steered=False),
    Phase.CONNECTED: Allows(calls=False, profiles=False, steered=False),
    Phase.REGISTERED: Allows(calls=True, profiles=True, steered=False),
    Phase.READING: Allows(calls=True, profiles=False, steered=False),
    Phase.LIMIT_IN_FLIGHT: Allows(calls=True, profiles=True, steered=False),
    Phase.REFUSING: Allows(calls=True, profiles=True, steered=False),
    Phase.ACKNOWLEDGED: Allows(calls=True, profiles=True, steered=True),
    Phase.VERIFIED: Allows(calls=True, profiles=True, steered=True),
    Phase.UNMANAGEABLE: Allows(calls=True, profiles=False, steered=False),
    Phase.FORGOTTEN: Allows(calls=False, profiles=False, steered=False),
}

LIVE = frozenset(Phase) - {Phase.FORGOTTEN}
ON_LINK = LIVE - {Phase.OFFLINE}
STEERED = frozenset({Phase.ACKNOWLEDGED, Phase.VERIFIED})

TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    **{(phase, Event.CONNECTED): Phase.CONNECTED for phase in LIVE},
    **{(phase, Event.DISCONNECTED): Phase.OFFLINE for phase in ON_LINK},
    **{(phase, Event.BOOTED): Phase.REGISTERED for phase in ON_LINK - {Phase.CONNECTED}},
    (Phase.CONNECTED, Event.BOOTED): Phase.CONNECTED,  # registered once its boot is answered
    **{(phase, event): phase for phase in LIVE for event in (Event.FLAGGED, Event.CLEARED)},
    (Phase.CONNECTED, Event.REGISTERED): Phase.REGISTERED,
    (Phase.CONNECTED, Event.BOOT_WAIT_OVER): Phase.REGISTERED,
    # its capabilities from an earlier connection say so: UNMANAGEABLE once registered
    (Phase.CONNECTED, Event.NO_SMART_CHARGING): Phase.CONNECTED,
    (Phase.REGISTERED, Event.NO_SMART_CHARGING): Phase.UNMANAGEABLE,
    (Phase.REGISTERED, Event.READING): Phase.READING,
    (Phase.READING, Event.READ): Phase.REGISTERED,
    (Phase.READING, Event.NO_SMART_CHARGING): Phase.UNMANAGEABLE,
    (Phase.REGISTERED, Event.SENT): Phase.LIMIT_IN_FLIGHT,
    (Phase.REFUSING, Event.SENT): Phase.LIMIT_IN_FLIGHT,
    (Phase.LIMIT_IN_FLIGHT, Event.ACCEPTED): Phase.ACKNOWLEDGED,
    (Phase.LIMIT_IN_FLIGHT, Event.FALLBACK): Phase.REGISTERED,
    (Phase.LIMIT_IN_FLIGHT, Event.REFUSED): Phase.REFUSING,
    (Phase.LIMIT_IN_FLIGHT, Event.NO_SMART_CHARGING): Phase.UNMANAGEABLE,
    **{(phase, event): phase for phase in STEERED
       for event in (Event.SENT, Event.ACCEPTED_SAME, Event.FALLBACK, Event.REFUSED)},
    **{(phase, Event.ACCEPTED): Phase.ACKNOWLEDGED for phase in STEERED},
    **{(phase, Event.NO_SMART_CHARGING): Phase.UNMANAGEABLE for phase in STEERED},
    (Phase.ACKNOWLEDGED, Event.VERIFIED): Phase.VERIFIED,
    (Phase.OFFLINE, Event.FORGOTTEN): Phase.FORGOTTEN,
}

# After these, an answer to a call made before is late: it speaks of an earlier connection,
# or of the station before it rebooted.
RESETS = frozenset({Event.CONNECTED, Event.BOOTED, Event.DISCONNECTED})


class IllegalTransition(Exception):
    def __init__(self, phase: Phase, event: Event) -> None:
        super().__init__(f"no transition from {phase} on {event}")
        self.phase, self.event = phase, event


@dataclass(slots=True)
class StationLife:
    """One station's phase, since when, and what outlives its connections."""

    phase: Phase = Phase.OFFLINE
    since: datetime | None = None  # None: since before the bridge started
    refuses: bool = False
    unmanageable: bool = False
    non_compliant: bool = False
    # Counts the resets (connections, boots, disconnections): an answer to a call made under
    # another count is late, and moves no phase.
    epoch: int = 0

    def fire(self, event: Event, at: datetime) -> Phase:
        """Move on ``event`` (at ``at``); raises :class:`IllegalTransition` when the table has
        no row for it in this phase, and then changes nothing."""
        target = TRANSITIONS.get((self.phase, event))
        if target is None:
            raise IllegalTransition(self.phase, event)
        if target is not self.phase:
            self.phase, self.since = target, at
        if event in RESETS:
            self.epoch += 1
        if event is Event.REFUSED:
            self.refuses = True
        elif event in (Event.ACCEPTED, Event.ACCEPTED_SAME):
            self.refuses = False
        elif event is Event.NO_SMART_CHARGING:
            self.unmanageable = True
        elif event is Event.READ:
            self.unmanageable = False
        elif event is Event.FLAGGED:
            self.non_compliant = True
        elif event in (Event.CLEARED, Event.BOOTED):
            self.non_compliant = False
        return target

    def late_answer(self, accepted: bool) -> None:
        """The answer to a profile sent under an earlier :attr:`epoch`: no phase of this
        connection moves, but whether the station refuses our profiles is what it said."""
        self.refuses = not accepted

    @property
    def allows(self) -> Allows:
        return ALLOWS[self.phase]

    @property
    def confirmed(self) -> bool:
        """It acknowledged a limit of ours on this connection."""
        return self.phase in STEERED

    @property
    def steerable(self) -> bool:
        """Given a share by the planner, and sent it."""
        return self.allows.steered and not self.unmanageable and not self.non_compliant

    def counting(self, acknowledged: bool, session: bool) -> Counting:
        """How the planner counts the station. ``acknowledged``: it holds a schedule it
        acknowledged (on any connection; kept in the store); ``session``: an EV charges.

        A station that is not steered is counted at what it may draw: its hardware
        maximum without smart charging, its measured draw when flagged, the schedule it
        acknowledged when it has one (stations keep their profiles offline), its hardware
        maximum when it refuses our profiles while an EV charges. The rest get their share:
        a new station (the share is what it is about to be sent) and one that refused,
        whose share without a session is nothing.
        """
        if self.steerable:
            return Counting.SHARE
        if self.unmanageable:
            return Counting.HARDWARE_MAXIMUM
        if self.non_compliant:
            return Counting.MEASURED_DRAW
        if acknowledged:
            return Counting.LAST_ACKNOWLEDGED
        if self.refuses and session:
            return Counting.HARDWARE_MAXIMUM
        return Counting.SHARE

    def reserved(self, acknowledged: bool) -> bool:
        """Not steered, and held to what it may draw rather than to what the plan gives it:
        no raise elsewhere waits for it to come down."""
        return not self.steerable and (acknowledged or self.refuses or self.unmanageable
                                       or self.non_compliant)

    @property
    def status(self) -> str:
        """One word for the operator: steered, connecting, offline, refusing, unmanageable
        or non-compliant."""
        if self.unmanageable:
            return "unmanageable"
        if self.non_compliant:
            return "non-compliant"
        if self.phase in (Phase.OFFLINE, Phase.FORGOTTEN):
            return "offline"
        if self.refuses:
            return "refusing"
        return "steered" if self.confirmed else "connecting"
