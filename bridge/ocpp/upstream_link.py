"""A station's link in local-controller mode: forwarded to the operator's CSMS, read on the way.

The same framing and handlers as a central system's link (:mod:`bridge.ocpp.framing`,
``v16``, ``v201``), with its two seams replaced: what happens to a station's CALL, and to
a station's reply. Each station has one websocket upstream
(:class:`~bridge.upstream.connection.UpstreamConnection`), opened when it connects.

A station's CALL is *read* at once by the usual handlers (sessions, meter values,
statuses, boots reach the dispatcher and telemetry as they always do; their answers are
not used) and then *answered* in order, by one worker per station:

- link open, nothing waiting in the outage queue: sent upstream under an id of drbridge's
  (1.6 transaction ids of sessions begun offline mapped to the operator's), and the
  operator's answer goes back to the station unchanged. Its authorization answers are
  learnt; a 1.6 StartTransaction is read with the transaction id the operator gave. (One
  exception: a 1.6 StartTransaction answer without the transaction id 1.6 requires gets
  a local id, and the station's messages about that transaction are answered here.)
- link down, or messages waiting: a transaction message is written to the outage queue
  (committed) and only then answered in the operator's place
  (:func:`~bridge.upstream.offline.local_answer`, authorizations from the cache); others
  are answered in its place. An Authorize waits for a link that is not open yet up to
  ``ocpp.upstream.call_timeout_s``: drbridge does not decide alone while the operator
  may still answer.
- the operator does not answer in time: the link counts as down (it is dropped and
  opened again), the station is answered in its place, the message is queued.

When the link opens: a BootNotification drbridge answered meanwhile goes upstream first
(the queue waits while the operator answers Pending or Rejected), then the queue is
replayed in order (:func:`~bridge.upstream.outage.replay`); a replayed start the operator
refuses ends its session (RemoteStopTransaction / RequestStopTransaction), as a station
does with StopTransactionOnInvalidId.

The operator's CALLs reach the station under ids of drbridge's, sharing the station's one
call at a time with drbridge's own calls, through the rules that keep the site's limit
(:mod:`bridge.upstream.composition`); the station's answer goes back under the operator's
id. Answers to drbridge's own calls are never forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from websockets.exceptions import ConnectionClosed

from bridge.ocpp.framing import (
    CALL,
    CALLERROR,
    CALLRESULT,
    CallRefused,
    OcppJLink,
    call_frame,
    result_frame,
)
from bridge.ocpp.link import BeforeAnswer, CallFailed, StationListener, reply_status
from bridge.ocpp.profiles import BuiltProfile
from bridge.ocpp.v16 import StationLink16
from bridge.ocpp.v201 import StationLink201
from bridge.ocpp.wire import Payload, parse_time
from bridge.upstream.authcache import Decision, token_key
from bridge.upstream.composition import (
    AnswerLocally,
    Forward,
    Split,
    UpstreamProfiles,
    VariablesPlan,
    combined_clear_answer,
    guard_configuration,
    guard_variables,
    remote_start,
)
from bridge.upstream.connection import UpstreamConnection, UpstreamUnavailable
from bridge.upstream.message_ids import Forwarded, LegIds, Own
from bridge.upstream.offline import kept_for_replay, local_answer
from bridge.upstream.outage import LOCAL_TX_BASE, QueuedMessage, UpstreamRefused, replay

if TYPE_CHECKING:
    from bridge.ocpp.link import CapabilitiesRead
    from bridge.upstream.controller import LocalController

log = logging.getLogger(__name__)

ACCEPTED = "Accepted"
# drbridge's own report requests (2.0.1 GetReport, GetChargingProfiles) number from here in
# this mode, so that the station's report parts tell them from the operator's
OWN_REQUEST_ID_BASE = 1_000_000_000
# A station sends one request at a time (OCPP-J); one that does not is held to this many
# waiting for their answers, so that it cannot grow drbridge's memory
MAX_WAITING = 64


class StationLeft(Exception):
    """The station's link closed before it answered one of the operator's calls."""


@dataclass(frozen=True)
class _StationCall:
    unique_id: str
    action: str
    payload: Any  # as the station sent it: what goes upstream (and into the queue)
    read: Payload | None  # as drbridge read it (repaired where needed); None: unreadable
    refusal: CallRefused | None  # why it could not be read
    received: float  # perf_counter() on arrival
    raw: str | None = None  # its text, forwarded as it is when nothing in it changes


class Forwarding(OcppJLink):
    """The forwarding half of a station's link; mixed before a version's link class."""

    VERSION: ClassVar[str]
    # read once the answer is known (the 1.6 StartTransaction: the transaction id)
    DEFERRED: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, station_id: str, connection: Any, listener: StationListener,
                 call_timeout_s: float, site: LocalController, authorization: str | None,
                 subprotocol: str) -> None:
        super().__init__(station_id, connection, listener, call_timeout_s)
        self._site = site
        self._station_ids = LegIds()
        self._inbox: asyncio.Queue[_StationCall] = asyncio.Queue()
        self._replaying = False
        # a BootNotification drbridge answered in the operator's place, to send it first
        self._boot_pending: Payload | None = None
        # the link is open and the station's boot, if one waited, is accepted upstream
        self._ready = asyncio.Event()
        self._top_level: int | None = None  # read here when the dispatcher has not yet
        self._raw_frame: str | None = None  # the text of the frame being read
        self._tasks: set[asyncio.Task[Any]] = set()
        self._left = False  # the station's link closed
        low, high = site.reconnect_s
        self.upstream = UpstreamConnection(
            site.url, station_id, subprotocol, authorization, site.ssl_for(station_id),
            site.call_timeout_s, low, high, on_call=self._operator_call,
            on_open=self._opened, on_close=self._ready.clear)

    if TYPE_CHECKING:  # the version's link, mixed after this one, has it
        async def read_capabilities(self) -> CapabilitiesRead: ...

    @property
    def upstream_state(self) -> str:
        """up, replaying, down, or connecting (its first attempt under way)."""
        if self.upstream.connected.is_set():
            return "replaying" if self._replaying or not self._ready.is_set() else "up"
        return "down" if self.upstream.first_attempt_done.is_set() else "connecting"

    async def start(self) -> None:
        self._site.attach(self)
        tasks = [asyncio.create_task(self.upstream.run(), name=f"upstream {self.id}"),
                 asyncio.create_task(self._answer_in_order(), name=f"forward {self.id}")]
        try:
            await super().start()
        finally:
            self._station_left()
            await self.upstream.close()  # after the answers the station already gave
            for task in [*tasks, *self._tasks]:
                task.cancel()
            await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)
            self._site.detach(self)

    def _station_left(self) -> None:
        """The operator's calls still waiting for the station's answer end now, unanswered
        (the operator's own timeout tells it so); those it answered go on up."""
        self._left = True
        for entry in self._station_ids.drop_pending():
            if isinstance(entry, Forwarded) and isinstance(entry.tag, asyncio.Future) \
                    and not entry.tag.done():
                entry.tag.set_exception(StationLeft())
        # drbridge's own call under way ends too: an operator's call may wait for its lock
        self._end_call_under_way(StationLeft())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the station leg: ids ----------------------------------------------------------------
    def _new_call_id(self, action: str) -> str:
        return self._station_ids.own(action)

    async def _on_reply(self, frame: list[Any]) -> None:
        entry = self._station_ids.resolve(frame[1] if len(frame) > 1 else None)
        if isinstance(entry, Own):
            await super()._on_reply(frame)
        elif isinstance(entry, Forwarded) and isinstance(entry.tag, asyncio.Future) \
                and not entry.tag.done():
            entry.tag.set_result(frame)
        else:  # a late answer (its call timed out), or to no call at all: never forwarded
            log.debug("%s: dropped reply %.200r", self.id, frame)

    async def route_message(self, raw_msg: str | bytes) -> None:
        self._raw_frame = raw_msg if isinstance(raw_msg, str) else None
        await super().route_message(raw_msg)

    # ---- the station's CALLs: read at once, answered in order --------------------------------
    async def _on_call(self, unique_id: str, action: str, payload: Any) -> None:
        received = time.perf_counter()
        read, refusal, own = self._read(action, payload)
        if own:  # part of a report drbridge asked for: answered here, not the operator's
            await self._send(result_frame(unique_id, {}))
            return
        if self._inbox.qsize() >= MAX_WAITING:  # OCPP-J: it should wait for each answer
            await self._send_call_error(unique_id, "GenericError",
                                        f"{MAX_WAITING} requests wait for their answers")
            return
        self._inbox.put_nowait(_StationCall(unique_id, action, payload, read, refusal, received,
                                            self._raw_frame))

    def _read(self, action: str, payload: Any) -> tuple[Payload | None, CallRefused | None, bool]:
        """The request as drbridge reads it, handed to the usual handlers (whose answers are
        not used); why it cannot be read; whether it is one of drbridge's own reports."""
        if not isinstance(payload, dict):
            return None, CallRefused(self.DIALECT.format_violation,
                                     "the payload must be an object"), False
        if action not in self.DIALECT.actions:
            return None, CallRefused("NotSupported", f"{action} is not an OCPP "
                                     f"{self.DIALECT.version} action"), False
        try:
            read, repairs = self.DIALECT.validate_request(action, payload)
        except CallRefused as refusal:
            log.info("%s: %s not read (%s); forwarded as it is", self.id, action,
                     refusal.description)
            return None, refusal, False
        if repairs:
            self._listener.request_repaired(self.id, action, repairs)
        own = self._own_report(action, read)
        try:
            self._read_now(action, read)
        except Exception:  # reading must never cost the station its answer
            log.exception("%s: failed to read %s", self.id, action)
        return read, None, own

    def _read_now(self, action: str, read: Payload) -> None:
        if action in self.DEFERRED:
            return
        handler = self._handlers.get(action)
        if handler is not None:
            handler(read)

    def _own_report(self, action: str, read: Payload) -> bool:
        return False

    async def _answer_in_order(self) -> None:
        while True:
            call = await self._inbox.get()
            try:
                await self._relay(call)
            except ConnectionClosed:
                return  # the station left; it sends again what was not answered
            except Exception:
                log.exception("%s: failed to relay %s", self.id, call.action)
                with contextlib.suppress(Exception):
                    await self._send_call_error(call.unique_id, "InternalError", "")

    async def _relay(self, call: _StationCall) -> None:
        action, payload = call.action, call.payload
        if call.read is not None and self._about_refused_start(action, call.read):
            await self._answer_here(call, kept=False)  # the operator has no such transaction
            return
        kept = call.read is not None and kept_for_replay(self.VERSION, action, call.read)
        if kept and self._site.backlog(self.id):
            await self._answer_here(call, kept)  # behind the messages waiting to go up
            return
        started = call.received
        if not self._ready.is_set():
            await self._wait_for_link(action)
            started = time.perf_counter()  # a link opening is not the message's forwarding
        if not self._ready.is_set():
            await self._answer_here(call, kept)
            return
        outgoing = self._to_upstream(action, payload) if call.read is not None else payload
        if outgoing is None:  # about a session the operator has no id for yet: it waits
            await self._answer_here(call, True)
            return
        sent = time.perf_counter()
        try:
            frame, reply = await self.upstream.forward(call.unique_id,
                                                       [CALL, call.unique_id, action, outgoing],
                                                       call.raw if outgoing is payload else None)
        except UpstreamUnavailable:
            await self._answer_here(call, kept, maybe_delivered=True)
            return
        answered = time.perf_counter()
        answer = frame[2] if frame[0] == CALLRESULT and len(frame) > 2 else None
        completed = self._completed(action, answer) if isinstance(answer, dict) else None
        if completed is not None:
            answer = completed
        if isinstance(answer, dict) and call.read is not None:
            try:
                self._learn(action, call.read, answer)
                self._read_answer(action, call.read, answer)
            except Exception:
                log.exception("%s: failed to read the operator's answer to %s", self.id, action)
        # the operator's own text goes back, unless drbridge had to complete its answer
        await self._send(result_frame(call.unique_id, completed)
                         if completed is not None else reply)
        self._answered(action, answer)
        self._site.stats.forwarded(sent - started + time.perf_counter() - answered)

    async def _wait_for_link(self, action: str) -> None:
        """Wait for the first attempt to open the link, and for an Authorize also for a link
        that is down (trying again at once): the operator decides while it can."""
        upstream = self.upstream
        if upstream.first_attempt_done.is_set() and action != "Authorize":
            return
        if upstream.first_attempt_done.is_set():
            upstream.kick()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._site.call_timeout_s):
                if not upstream.first_attempt_done.is_set():
                    await upstream.first_attempt_done.wait()
                if upstream.connected.is_set() or action == "Authorize":
                    await self._ready.wait()

    async def _answer_here(self, call: _StationCall, kept: bool,
                           maybe_delivered: bool = False) -> None:
        """Answer in the operator's place (a transaction message queued first)."""
        if call.read is None:
            assert call.refusal is not None
            await self._send_call_error(call.unique_id, call.refusal.code,
                                        call.refusal.description)
            return
        now = self._site.now()
        local_tx = None
        if kept:
            local_tx = self._site.enqueue(self.id, self.VERSION, call.action, call.payload,
                                          now, maybe_delivered).local_tx
        elif call.action == "BootNotification":
            self._boot_pending = call.payload
        answer = local_answer(self.VERSION, call.action, call.read, now, self._offline_decision,
                              local_tx)
        if answer is None:
            await self._send_call_error(call.unique_id, "GenericError",
                                        f"{call.action}: the operator's central system is "
                                        "unreachable")
            return
        self._read_answer(call.action, call.read, answer)
        await self._send(result_frame(call.unique_id, answer))
        self._answered(call.action, answer)
        self._site.stats.messages["to_operator", "answered_locally"] += 1

    def _offline_decision(self, token: str) -> Decision:
        decision = self._site.cache.decide(token, self._site.policy, self._site.now())
        log.info("%s: id %s %s while the operator is unreachable (%s)", self.id, token,
                 decision.status, decision.reason)
        return decision

    def _answered(self, action: str, answer: Payload | None) -> None:
        """The station may be sent calls once its boot is accepted, or once it sends another
        request (it holds itself accepted from before)."""
        if action != "BootNotification" or \
                (answer is not None and answer.get("status") == ACCEPTED):
            self.registered.set()

    # ---- version specifics (overridden) ------------------------------------------------------
    def _to_upstream(self, action: str, payload: Payload) -> Payload | None:
        """The station's request as the operator must see it; None when it must wait."""
        return payload

    def _from_operator(self, action: str, payload: Payload) -> Payload:
        """The operator's request as the station must see it."""
        return payload

    def _completed(self, action: str, answer: Payload) -> Payload | None:
        """The operator's answer made whole where the station cannot take it as it is; None
        to pass it on unchanged (as nearly always)."""
        return None

    def _about_refused_start(self, action: str, read: Payload) -> bool:
        """Whether the station's message is about a start :meth:`_completed` answered."""
        return False

    def _learn(self, action: str, read: Payload, answer: Payload) -> None:
        """Keep the operator's authorization answers (refusals too) for an outage."""

    def _read_answer(self, action: str, read: Payload, answer: Payload) -> None:
        """Read what needs the answer (1.6: a transaction's id)."""

    def _learn_token(self, token: Any, info: Any) -> None:
        if token is not None and isinstance(info, dict):
            self._site.cache.learn(token_key(token), info, self._site.now())

    async def _stop_refused(self, message: QueuedMessage, answer: Payload) -> None:
        """A replayed start the operator refuses: end its session if it still runs."""

    # ---- when the link opens: the boot, then the queue ---------------------------------------
    async def _opened(self) -> None:
        self._ready.clear()
        try:
            if self._boot_pending is not None and not await self._boot_again():
                return
            self._ready.set()
            await self._replay()
        except UpstreamUnavailable as error:
            log.info("%s: upstream link dropped while catching up (%s)", self.id, error)
        finally:
            if not self.upstream.connected.is_set():
                self._ready.clear()

    async def _boot_again(self) -> bool:
        """The boot drbridge answered while the operator was away, sent upstream first; the
        queue waits while the operator answers Pending or Rejected."""
        low, high = self._site.reconnect_s
        while self._boot_pending is not None:
            frame = await self.upstream.call("BootNotification", self._boot_pending)
            answer = frame[2] if frame[0] == CALLRESULT and isinstance(frame[2], dict) else {}
            if answer.get("status") == ACCEPTED:
                log.info("%s: the operator accepted the boot answered in its place",
                         self.id)
                self._boot_pending = None
                return True
            interval = answer.get("interval")
            wait = min(max(float(interval), low), high) \
                if isinstance(interval, int | float) and interval > 0 else low
            log.warning("%s: the operator answers the station's boot %s; its queue waits "
                        "(%.0f s)", self.id, answer.get("status") or frame[2:], wait)
            await asyncio.sleep(wait)
            if not self.upstream.connected.is_set():
                return False
        return True

    async def _replay(self) -> None:
        if not self._site.backlog(self.id):
            return
        self._replaying = True
        log.info("%s: replaying %d messages to the operator", self.id,
                 self._site.backlog(self.id))
        try:
            while True:
                result = await replay(self._site.queue, self.id, self._replay_send,
                                      now=self._site.now)
                self._site.refresh_backlog(self.id)  # no await since its last read
                self._site.stats.messages["to_operator", "replayed"] += result.delivered
                for message, answer in result.answers or ():
                    self._learn(message.action, message.payload, dict(answer))
                    await self._stop_refused(message, dict(answer))
                if result.done:
                    log.info("%s: replay done", self.id)
                    return
                await asyncio.sleep(self._site.reconnect_s[0])
        finally:
            self._replaying = False
            self._site.refresh_backlog(self.id)

    async def _replay_send(self, action: str, payload: Payload) -> Payload:
        frame = await self.upstream.call(action, payload)
        if frame[0] == CALLERROR:
            raise UpstreamRefused(str(frame[2]), str(frame[3]) if len(frame) > 3 else "")
        return frame[2] if isinstance(frame[2], dict) else {}

    # ---- the operator's CALLs ----------------------------------------------------------------
    async def _operator_call(self, unique_id: str, action: str, payload: Payload) -> None:
        try:
            frame = await self._operator_request(unique_id, action, payload)
        except CallFailed as error:  # a call of drbridge's it needed first
            log.warning("%s: the operator's %s not forwarded: %s", self.id, action, error)
            frame = [CALLERROR, unique_id, "InternalError", str(error)[:200], {}]
        if frame is None:
            return  # the station did not answer: neither does drbridge, the operator times out
        self._site.stats.messages["to_station", "forwarded"] += 1
        with contextlib.suppress(UpstreamUnavailable):
            await self.upstream.answer([frame[0], unique_id, *frame[2:]])

    async def _to_station(self, origin_id: str, action: str,
                          payload: Payload) -> list[Any] | None:
        """One of the operator's CALLs to the station under an id of drbridge's; the
        station's answer frame, or None when none came in time."""
        async with self._call_lock:
            if self._left:
                return None
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            wire_id = self._station_ids.forward(origin_id, future)
            try:
                await self._send(call_frame(wire_id, action, payload))
                async with asyncio.timeout(self._call_timeout_s):
                    return await future
            except TimeoutError:
                self._station_ids.forget(wire_id)
                log.warning("%s: no answer to the operator's %s in time", self.id, action)
                return None
            except (ConnectionClosed, StationLeft):
                return None

    async def _reserved_profiles(self) -> UpstreamProfiles:
        level = self._site.top_level(self.id)
        if level is None and self._top_level is None:
            # the operator asks before the dispatcher has read the station: read it now
            self._top_level = (await self.read_capabilities()).capabilities.max_stack_level
        return self._site.profiles_of(self.id, self.VERSION,
                                      level if level is not None else self._top_level or 0)

    async def _operator_request(self, unique_id: str, action: str,
                                payload: Payload) -> list[Any] | None:
        """The answer frame for the operator (its id is set by the caller)."""
        payload = self._from_operator(action, payload)
        now = self._site.now()
        decision: Forward | AnswerLocally | Split | VariablesPlan
        profiles: UpstreamProfiles | None = None
        if action in ("SetChargingProfile", "ClearChargingProfile", "RemoteStartTransaction",
                      "RequestStartTransaction"):
            profiles = await self._reserved_profiles()
        if action == "SetChargingProfile" and profiles is not None:
            decision = profiles.on_set(payload, now)
        elif action == "ClearChargingProfile" and profiles is not None:
            decision = profiles.on_clear(payload)
        elif action in ("RemoteStartTransaction", "RequestStartTransaction") \
                and profiles is not None:
            decision = remote_start(profiles, payload, now, self._site.paused(self.id))
        elif action == "ChangeConfiguration":
            decision = guard_configuration(payload, self._site.needs)
        elif action == "SetVariables":
            decision = guard_variables(payload, self._site.needs)
        else:
            decision = Forward(dict(payload))
        if decision.note:
            level = logging.WARNING if isinstance(decision, AnswerLocally) else logging.INFO
            log.log(level, "%s: the operator's %s %s: %s", self.id, action,
                    "answered by drbridge" if isinstance(decision, AnswerLocally)
                    else "changed", decision.note)
        if isinstance(decision, AnswerLocally):
            return [CALLRESULT, unique_id, decision.answer]
        if isinstance(decision, VariablesPlan):
            if decision.request is None:
                return [CALLRESULT, unique_id, decision.answer(None)]
            frame = await self._to_station(unique_id, action, decision.request)
            if frame is None or frame[0] != CALLRESULT:
                return frame
            return [CALLRESULT, unique_id, decision.answer(frame[2])]
        if isinstance(decision, Split):
            answers = []
            for request in decision.requests:
                frame = await self._to_station(unique_id, action, request)
                if frame is not None and frame[0] == CALLRESULT and isinstance(frame[2], dict):
                    answers.append(frame[2])
            if profiles is not None and decision.forget:
                profiles.forgotten(decision.forget)
                self._site.profiles_changed(self.id)
            return [CALLRESULT, unique_id, combined_clear_answer(answers)]
        frame = await self._to_station(unique_id, action, decision.request)
        if frame is not None and frame[0] == CALLRESULT and profiles is not None \
                and isinstance(frame[2], dict):
            changed = False
            if decision.remember is not None and reply_status(frame[2]) == ACCEPTED:
                profiles.accepted(decision.remember)
                changed = True
            if decision.forget and action == "ClearChargingProfile":
                profiles.forgotten(decision.forget)
                changed = True
            if changed:
                self._site.profiles_changed(self.id)
        return frame


class ForwardingLink16(Forwarding, StationLink16):
    """An OCPP 1.6 station's link in local-controller mode."""

    VERSION = "1.6"
    DEFERRED = frozenset({"StartTransaction"})

    def _read_now(self, action: str, read: Payload) -> None:
        if action == "StopTransaction":
            # the station names the transaction by the id the operator (or, offline, drbridge)
            # gave it; drbridge's own id is found by that
            found = self._listener.transaction_of(self.id, str(read["transactionId"]), None)
            if found is not None:
                self._listener.transaction_stopped(
                    self.id, found[0], read["meterStop"],
                    parse_time(read["timestamp"]) or self._site.now())
            self._site.transaction_ended(self.id, read["transactionId"],
                                         found[1] if found is not None else None)
            return
        super()._read_now(action, read)

    def _read_answer(self, action: str, read: Payload, answer: Payload) -> None:
        if action != "StartTransaction" or not isinstance(answer.get("transactionId"), int):
            return
        self._listener.transaction_started(
            self.id, read["connectorId"], read["idTag"], read["meterStart"],
            parse_time(read["timestamp"]) or self._site.now(), str(answer["transactionId"]))

    def _completed(self, action: str, answer: Payload) -> Payload | None:
        if action != "StartTransaction" or isinstance(answer.get("transactionId"), int):
            return None
        # Some central systems leave the id out of a refusal, which 1.6 requires in every
        # answer: a strict station takes such an answer for none and sends the start again,
        # for ever. It gets an id of drbridge's, which the operator never sees.
        local_tx = self._site.queue.refused_start(self.id)
        log.warning("%s: the operator answered StartTransaction without a transaction id "
                    "(%s); the station gets drbridge's id %d, and its messages about that "
                    "transaction are answered by drbridge", self.id,
                    (answer.get("idTagInfo") or {}).get("status"), local_tx)
        return {**answer, "transactionId": local_tx}

    def _about_refused_start(self, action: str, read: Payload) -> bool:
        transaction = read.get("transactionId")
        return action in ("StopTransaction", "MeterValues") and isinstance(transaction, int) \
            and transaction >= LOCAL_TX_BASE and self._site.queue.refused(self.id, transaction)

    def _learn(self, action: str, read: Payload, answer: Payload) -> None:
        if action in ("Authorize", "StartTransaction", "StopTransaction"):
            self._learn_token(read.get("idTag"), answer.get("idTagInfo"))

    def _to_upstream(self, action: str, payload: Payload) -> Payload | None:
        transaction = payload.get("transactionId")
        if action not in ("StopTransaction", "MeterValues") or not isinstance(transaction, int) \
                or transaction < LOCAL_TX_BASE:
            return payload  # the hot path: an id of the operator's, as it is
        mapped = self._site.queue.upstream_tx(self.id, transaction)
        return None if mapped is None else {**payload, "transactionId": mapped}

    def _from_operator(self, action: str, payload: Payload) -> Payload:
        if action == "RemoteStopTransaction" and isinstance(payload.get("transactionId"), int):
            return {**payload, "transactionId": self._site.queue.station_tx(
                self.id, payload["transactionId"])}
        profile = payload.get("csChargingProfiles")
        if action == "SetChargingProfile" and isinstance(profile, dict) \
                and isinstance(profile.get("transactionId"), int):
            station_tx = self._site.queue.station_tx(self.id, profile["transactionId"])
            return {**payload, "csChargingProfiles": {**profile, "transactionId": station_tx}}
        return payload

    async def _stop_refused(self, message: QueuedMessage, answer: Payload) -> None:
        status = (answer.get("idTagInfo") or {}).get("status")
        if message.action != "StartTransaction" or status in (None, ACCEPTED) \
                or message.local_tx is None:
            return
        running = self._listener.transaction_of(self.id, str(message.local_tx), None)
        log.warning("%s: the operator refused the id of transaction %d started offline (%s)%s",
                    self.id, message.local_tx, status,
                    "; ending it" if running else "; it has ended already")
        if running is not None:
            self._spawn(self._stop(message.local_tx))

    async def _stop(self, transaction_id: int) -> None:
        try:
            reply = await self._request("RemoteStopTransaction",
                                        {"transactionId": transaction_id}, lenient=True)
            log.info("%s: RemoteStopTransaction %d: %s", self.id, transaction_id,
                     reply_status(reply))
        except CallFailed as error:
            log.warning("%s: RemoteStopTransaction %d failed: %s", self.id, transaction_id, error)

    async def set_profile(self, profile: BuiltProfile,
                          before_answer: BeforeAnswer | None = None) -> str:
        if profile.transaction_id is None:
            return await super().set_profile(profile, before_answer)
        # the station knows its transaction by the operator's id (or drbridge's offline one)
        named = self._listener.station_transaction(self.id, profile.transaction_id)
        try:
            transaction_id = int(named) if named is not None else None
        except ValueError:
            transaction_id = None
        if transaction_id is None:
            return "UnknownTransaction"
        reply = await self._request("SetChargingProfile", {
            "connectorId": profile.connector_id,
            "csChargingProfiles": {**profile.payload, "transactionId": transaction_id},
        }, lenient=True, before_answer=before_answer)
        return reply_status(reply)


class ForwardingLink201(Forwarding, StationLink201):
    """An OCPP 2.0.1 station's link in local-controller mode."""

    VERSION = "2.0.1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._report_seq = OWN_REQUEST_ID_BASE

    def _own_report(self, action: str, read: Payload) -> bool:
        return action in ("NotifyReport", "ReportChargingProfiles") \
            and (action, read.get("requestId")) in self._reports

    def _read_now(self, action: str, read: Payload) -> None:
        super()._read_now(action, read)
        if action == "TransactionEvent" and read.get("eventType") == "Ended":
            self._site.transaction_ended(self.id, read["transactionInfo"]["transactionId"],
                                         (read.get("evse") or {}).get("id"))

    def _learn(self, action: str, read: Payload, answer: Payload) -> None:
        if action in ("Authorize", "TransactionEvent"):
            self._learn_token(read.get("idToken"), answer.get("idTokenInfo"))

    def _to_upstream(self, action: str, payload: Payload) -> Payload | None:
        if action == "ReportChargingProfiles":
            profiles = self._site.profiles_of(self.id, self.VERSION,
                                              self._site.top_level(self.id) or 0)
            return profiles.report_to_upstream(payload)
        return payload

    async def _stop_refused(self, message: QueuedMessage, answer: Payload) -> None:
        status = (answer.get("idTokenInfo") or {}).get("status")
        payload = message.payload
        if message.action != "TransactionEvent" or status in (None, ACCEPTED) \
                or payload.get("eventType") == "Ended":
            return
        station_tx = str((payload.get("transactionInfo") or {}).get("transactionId"))
        running = self._listener.transaction_of(self.id, station_tx, None)
        log.warning("%s: the operator refused the id of transaction %s started offline (%s)%s",
                    self.id, station_tx, status,
                    "; ending it" if running else "; it has ended already")
        if running is not None:
            self._spawn(self._stop(station_tx))

    async def _stop(self, transaction_id: str) -> None:
        try:
            reply = await self._request("RequestStopTransaction",
                                        {"transactionId": transaction_id}, lenient=True)
            log.info("%s: RequestStopTransaction %s: %s", self.id, transaction_id,
                     reply_status(reply))
        except CallFailed as error:
            log.warning("%s: RequestStopTransaction %s failed: %s", self.id, transaction_id,
                        error)


FORWARDING_LINKS: dict[str, type[ForwardingLink16] | type[ForwardingLink201]] = {
    "ocpp1.6": ForwardingLink16, "ocpp2.0.1": ForwardingLink201}

