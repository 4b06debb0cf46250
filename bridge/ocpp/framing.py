"""OCPP-J, whatever the OCPP version: the central system's end of one station's websocket.

OCPP-J (the JSON-over-websocket binding of OCPP 1.6, 2.0.1 and 2.1) carries three frames:
a CALL ``[2, id, action, payload]``, its CALLRESULT ``[3, id, payload]`` or its CALLERROR
``[4, id, code, description, details]``. :class:`OcppJLink` does the framing; a version's
link (``v16``, ``v201``) subclasses it with a :class:`Dialect` and its actions: a table of
handlers for the CALLs a station makes, and methods that make calls to the station.

Calls from the station take a lean path: one JSON decode, validation against the
version's JSON schemas (:mod:`bridge.ocpp.wire`), a handler over the wire dict, one JSON
encode. A request the schema refuses is repaired where its meaning is unambiguous
(:mod:`bridge.ocpp.leniency`) before it is refused; valid ones never pay for that. The
``ocpp`` library's generic routing costs ten times more per message (schema validation
with ``jsonschema``, key-case conversion, dataclass round trips), and MeterValues from
thousands of stations are the bridge's hot path. Calls *to* the station take the same
lean path, one at a time per station (OCPP-J allows one call in flight per direction),
and their answers are validated against the response schemas; a profile wave to
thousands of stations is the other hot path.

Handlers answer at once and hand what they learnt to a :class:`StationListener` in domain
terms; they never await a call to the station (that would stall the station's message
loop); the dispatcher makes those from its own tasks.

What happens to a CALL the station makes (:meth:`OcppJLink._on_call`) and to a reply it
sends (:meth:`OcppJLink._on_reply`) are one method each, and the id of each call we make
comes from :meth:`OcppJLink._new_call_id`: a link that also relays frames to another
central system (:mod:`bridge.ocpp.upstream_link`) replaces those three, and keeps the rest.

A station's routine reports (:meth:`OcppJLink._routine`) and its replies to our calls are
usually routed in the station socket's own callback, as they are read
(:meth:`OcppJLink.route_now`, synchronous), not a turn of the event loop later in the
link's task (:meth:`OcppJLink.route_message`); both take the same steps. A link class that
replaces one of them is routed in its task only (:attr:`OcppJLink.ANSWERS_AT_ONCE`).
"""

from __future__ import annotations

import asyncio
import json
import json.scanner
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import fastjsonschema
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from bridge.aio import Wake
from bridge.ocpp.leniency import Repair, validate_leniently
from bridge.ocpp.link import BeforeAnswer, CallFailed, StationListener
from bridge.ocpp.wire import Payload, SchemaSet, schema, validator

log = logging.getLogger(__name__)

CALL, CALLRESULT, CALLERROR = 2, 3, 4
Handler = Callable[[Payload], Payload]  # a request's payload -> the answer's payload
# a link class's handler, the link first: its method as the class holds it
LinkHandler = Callable[[Any, Payload], Payload]


_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[attr-defined]


def decode_frame(raw: str | bytes) -> Any:
    """``json.loads(raw)``, raising what it raises. A text that starts with ``[`` and ends
    where its value does (every frame a station sends) goes to the decoder's scanner at
    once, past ``loads``' checks and whitespace matching (a sixth of decoding a
    MeterValues); anything else, or anything the scanner refuses, goes through ``loads``.
    (The scanner starts two Python calls shallower than under ``loads``, so the depth at
    which a frame is "nested too deep" moves by two levels, near a thousand.)"""
    if isinstance(raw, str) and raw[:1] == "[":
        try:
            value, end = _scan_json(raw, 0)
        except Exception:  # noqa: BLE001 - loads, below, raises its own error for it
            return json.loads(raw)
        if end == len(raw):
            return value
    return json.loads(raw)


class Handlers:
    """A link's handlers, each bound to it when looked up. The table is its class's, made
    once: a dict of bound methods per link cost each connection about 1 KB (a dict and ten
    method objects; 10 MB at 10,000 stations) to save a lookup per request."""

    __slots__ = ("_link", "_table")

    def __init__(self, link: Any, table: Mapping[str, LinkHandler]) -> None:
        self._link, self._table = link, table

    def get(self, action: str) -> Handler | None:
        function = self._table.get(action)
        return None if function is None else function.__get__(self._link)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)


_TABLES: dict[type, Mapping[str, LinkHandler]] = {}


def _table_of(link_class: type[OcppJLink]) -> Mapping[str, LinkHandler]:
    table = _TABLES.get(link_class)
    if table is None:
        table = _TABLES[link_class] = dict(link_class.handlers())
    return table


class CallRefused(Exception):
    """A call the station made that gets a CALLERROR with this code, instead of an answer."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code, self.description = code, description


@dataclass(frozen=True)
class Dialect:
    """What differs on the wire between OCPP versions, for the framing."""

    version: str  # as log lines and CALLERROR descriptions name it: "1.6"
    schemas: SchemaSet  # the ocpp package's folder of its JSON schemas
    request_suffix: str  # a request's schema is named action + this ("" in 1.6)
    actions: frozenset[str]  # every action of the version, handled or not
    # CALLERROR codes that the versions spell differently: 1.6 "FormationViolation" and
    # "OccurenceConstraintViolation", 2.0.1 "FormatViolation" and
    # "OccurrenceConstraintViolation"
    format_violation: str
    occurrence_violation: str
    # each action's request validator, once looked up (a request costs one dict lookup)
    _request_validators: dict[str, Callable[[Payload], Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def request_validator(self, action: str) -> Callable[[Payload], Any]:
        return validator(self.schemas, action + self.request_suffix)

    def response_validator(self, action: str) -> Callable[[Payload], Any]:
        return validator(self.schemas, f"{action}Response")

    def validate_request(self, action: str,
                         payload: Payload) -> tuple[Payload, tuple[Repair, ...]]:
        """The request as read (repaired where its meaning is unambiguous) and the repairs;
        :class:`CallRefused` with the version's code when it cannot be understood."""
        validate = self._request_validators.get(action)
        if validate is None:
            validate = self._request_validators[action] = self.request_validator(action)
        try:  # most requests are valid as they come: one call, before any leniency
            validate(payload)
            return payload, ()
        except fastjsonschema.JsonSchemaValueException:
            pass
        name = action + self.request_suffix
        try:
            return validate_leniently(validate, payload, lambda: schema(self.schemas, name))
        except fastjsonschema.JsonSchemaValueException as error:
            raise CallRefused(self.violation_code(error.rule),
                              f"{action}: {error.message}") from None

    def violation_code(self, rule: str | None) -> str:
        """The CALLERROR code of a request that breaks this schema rule."""
        if rule in ("required", "minItems", "maxItems"):
            return self.occurrence_violation
        if rule == "type":
            return "TypeConstraintViolation"
        if rule == "additionalProperties":
            return self.format_violation
        return "PropertyConstraintViolation"


# one encoder for every frame: json.dumps with any option set builds a new one per call
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _encoded(frame: list[Any]) -> str:
    return _ENCODER.encode(frame)


def result_frame(unique_id: str, reply: Any) -> str:
    """A CALLRESULT's text. The empty answer of most routine reports, under an id that
    JSON writes as it is, is written without the encoder (0.1 µs against 0.9 µs: a station
    reporting MeterValues gets it every time)."""
    if (type(reply) is dict and not reply and type(unique_id) is str and unique_id.isascii()
            and unique_id.isprintable() and '"' not in unique_id and "\\" not in unique_id):
        return f'[{CALLRESULT},"{unique_id}",{{}}]'
    return _encoded([CALLRESULT, unique_id, reply])


class EncodedPayload(str):
    """A request's payload as JSON text the caller encoded already (a profile that a DR
    wave sends to thousands of stations is encoded once): it goes into the frame as is."""

    __slots__ = ()


def call_frame(unique_id: str, action: str, payload: Payload | EncodedPayload) -> str:
    """An OCPP-J CALL, as sent."""
    if isinstance(payload, EncodedPayload):
        return f"[{CALL},{_ENCODER.encode(unique_id)},{_ENCODER.encode(action)},{payload}]"
    return _encoded([CALL, unique_id, action, payload])


# what route_message does with a frame, step by step (see OcppJLink.ANSWERS_AT_ONCE)
_ROUTING_STEPS = ("route_message", "_on_call", "_on_reply", "_send")
# The requests route_now answers. The others (a boot, a session's start or end, a status)
# change what the station may draw, and go through the link's task, in turn with the
# dispatcher's tasks that send the limits they lead to: answered ahead of those, in a
# 5,000-station storm, stations started charging sooner than their shares reached them,
# and stayed above their share two to four times longer (docs/benchmarks-notes.md).
ROUTINE_ACTIONS = frozenset({"MeterValues", "Heartbeat"})


class OcppJLink:
    """The central system's end of one station's websocket: frames in and out.

    A subclass names its :attr:`DIALECT` and its :meth:`handlers`, and makes its calls to
    the station with :meth:`_request`.
    """

    DIALECT: ClassVar[Dialect]
    # Whether a frame may be handled in the socket's own callback (:meth:`route_now`):
    # worked out for each subclass, False for one that replaces a step of
    # :meth:`route_message` (one that relays), which route_now would bypass.
    ANSWERS_AT_ONCE: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.ANSWERS_AT_ONCE = all(getattr(cls, step) is getattr(OcppJLink, step)
                                  for step in _ROUTING_STEPS)

    def __init__(self, station_id: str, connection: Any, listener: StationListener,
                 call_timeout_s: float) -> None:
        self.id = station_id
        self._connection = connection
        self._listener = listener
        self._call_timeout_s = call_timeout_s
        self._call_lock = asyncio.Lock()
        self._call_seq = 0
        self._pending: tuple[str, asyncio.Future[list[Any]]] | None = None
        # Set once the station may be sent calls: its BootNotification was answered, or it
        # sent another request first, so it holds itself accepted from an earlier
        # connection (OCPP forbids a station any other request before its boot is accepted).
        self.registered = Wake()
        self._handlers = Handlers(self, _table_of(type(self)))

    @property
    def connection(self) -> Any:
        """The station's websocket."""
        return self._connection

    @classmethod
    def handlers(cls) -> Mapping[str, LinkHandler]:
        """Action -> its handler (a method as the class holds it, called with the link
        first), for the CALLs the station may make (the others are refused: NotImplemented
        if the version has them, NotSupported if not). Read once per class, when its first
        link is made: a method replaced on the class afterwards is not what its links call."""
        raise NotImplementedError

    # frames in -----------------------------------------------------------------------------
    async def route_message(self, raw_msg: str | bytes) -> None:
        """Every frame gets an answer; a bad one a CALLERROR, and the link lives on."""
        frame, refusal = self._parse(raw_msg)
        if refusal is not None:
            await self._send(refusal)
        elif frame[0] != CALL:
            await self._on_reply(frame)
        else:
            await self._on_call(frame[1], frame[2], frame[3])

    def route_now(self, raw_msg: str | bytes) -> bool:
        """:meth:`route_message` within the current turn of the event loop, its answer
        written without waiting for the station to read it (only where
        :attr:`ANSWERS_AT_ONCE`: see :meth:`StationSocket.answer_at_once
        <bridge.ocpp.station_socket.StationSocket.answer_at_once>`); whether it took the
        frame: a request that is not :meth:`_routine` is left to :meth:`route_message`.
        Never raises: it runs in the socket's callback, where an exception would cost the
        station its connection."""
        try:
            frame, refusal = self._parse(raw_msg)
            if refusal is not None:
                self._connection.send_now(refusal)
            elif frame[0] != CALL:
                self._take_reply(frame)
            elif not self._routine(frame[2], frame[3]):
                return False
            else:
                answer, accepted = self._answer_frame(frame[1], frame[2], frame[3])
                if self._connection.send_now(answer) and accepted:
                    self.registered.set()  # (as in _on_call: once the answer is sent)
        except Exception:  # as start() does: whatever a frame does, the link lives on
            log.exception("%s: failed to handle a frame", self.id)
        return True

    def _routine(self, action: str, payload: Any) -> bool:
        """Whether a request is a routine report, answered in the socket's callback (see
        :data:`ROUTINE_ACTIONS`)."""
        return action in ROUTINE_ACTIONS

    def _parse(self, raw_msg: str | bytes) -> tuple[list[Any], str | None]:
        """The frame read, or the CALLERROR that answers it when it is not one."""
        try:
            frame = decode_frame(raw_msg)
        except RecursionError:  # nested deeper than the decoder goes (50,000 "[")
            return [], self._call_error("-1", self.DIALECT.format_violation,
                                        "JSON nested too deep")
        except (ValueError, TypeError):  # also bad UTF-8, and integers of 4,300+ digits
            return [], self._call_error("-1", self.DIALECT.format_violation, "not valid JSON")
        if not isinstance(frame, list) or not frame or frame[0] not in (2, 3, 4):
            return [], self._call_error("-1", "ProtocolError", "not an OCPP-J message")
        if frame[0] == CALL and (len(frame) != 4 or not isinstance(frame[1], str)
                                 or not isinstance(frame[2], str)):
            unique_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else "-1"
            return [], self._call_error(unique_id, "ProtocolError", "a CALL has four elements:"
                                        " 2, a message id, an action name, a payload")
        return frame, None

    async def _on_call(self, unique_id: str, action: str, payload: Any) -> None:
        """A CALL from the station: answered here, from the handlers."""
        answer, accepted = self._answer_frame(unique_id, action, payload)
        await self._send(answer)
        if accepted:
            self.registered.set()  # only after our answer: a boot is accepted once it is sent

    def _answer_frame(self, unique_id: str, action: str, payload: Any) -> tuple[str, bool]:
        """The frame that answers a CALL, and whether it is a CALLRESULT."""
        try:
            reply = self._answer(action, payload)
        except CallRefused as refusal:
            log.warning("%s: refused %s: %s", self.id, action, refusal.description)
            return self._call_error(unique_id, refusal.code, refusal.description), False
        except Exception:  # a bug of ours must not cost the station its connection
            log.exception("%s: failed to handle %s", self.id, action)
            return self._call_error(unique_id, "InternalError", ""), False
        return result_frame(unique_id, reply), True

    def _answer(self, action: str, payload: Any) -> Payload:
        """The answer to a request: its handler's, once the request is read; raises
        :class:`CallRefused`."""
        handler = self._handlers.get(action)
        if handler is None:
            known = action in self.DIALECT.actions
            raise CallRefused("NotImplemented" if known else "NotSupported",
                              f"{action} is not " + ("handled" if known else
                                                     f"an OCPP {self.DIALECT.version} action"))
        if not isinstance(payload, dict):
            raise CallRefused(self.DIALECT.format_violation, "the payload must be an object")
        payload, repairs = self.DIALECT.validate_request(action, payload)
        if repairs:
            self._listener.request_repaired(self.id, action, repairs)
        return handler(payload)

    async def _on_reply(self, frame: list[Any]) -> None:
        """A CALLRESULT or CALLERROR from the station: the answer to our call under way."""
        self._take_reply(frame)

    def _take_reply(self, frame: list[Any]) -> None:
        pending = self._pending
        if pending is not None and len(frame) >= 3 and frame[1] == pending[0] \
                and not pending[1].done():
            pending[1].set_result(frame)
        else:
            # late, unknown or malformed replies are dropped: the call times out and is retried
            log.debug("%s: dropped reply %.200r", self.id, frame)

    # frames out ----------------------------------------------------------------------------
    async def _send_call_error(self, unique_id: str, code: str, description: str) -> None:
        await self._send(self._call_error(unique_id, code, description))

    @staticmethod
    def _call_error(unique_id: str, code: str, description: str) -> str:
        return _encoded([CALLERROR, unique_id, code, description[:500], {}])

    async def _send(self, message: str) -> None:
        await self._connection.send(message)

    async def start(self) -> None:
        """Serve the station's frames until its connection closes."""
        # recv() rather than ``async for``: between frames nothing here holds the last one
        # (thousands of idle stations would each keep theirs).
        receive = self._connection.recv
        while True:
            try:
                await self.route_message(await receive())
            except ConnectionClosedOK:
                return
            except ConnectionClosed:
                raise
            except Exception:  # whatever a frame does, it must not cost the station its link
                log.exception("%s: failed to handle a frame", self.id)

    async def close(self, code: int, reason: str) -> None:
        await self._connection.close(code, reason)

    # calls to the station ----------------------------------------------------------------
    def _end_call_under_way(self, error: Exception) -> None:
        """Our call waiting for the station's answer ends now with ``error`` (the caller
        gets :class:`CallFailed`)."""
        pending = self._pending
        if pending is not None and not pending[1].done():
            pending[1].set_exception(error)

    def _new_call_id(self, action: str) -> str:
        """The message id of our next call to the station (a link that shares the station's
        websocket with another central system's calls issues ids that cannot collide)."""
        self._call_seq += 1
        return str(self._call_seq)

    async def _request(self, action: str, payload: Payload | EncodedPayload,
                       lenient: bool = False, before_answer: BeforeAnswer | None = None,
                       ) -> Payload:
        """One call to the station and its validated answer; raises CallFailed.

        ``lenient``: an answer that breaks the version's schema is still read
        (defensively, by the caller) instead of failing the call. Only for answers whose
        every field is checked where it is used; requests from the station are always
        validated.

        ``before_answer``: awaited once the call is sent, before its answer is taken up
        (one that arrives meanwhile is kept, and costs no wake-up of the caller). The
        call's timeout starts after it.
        """
        async with self._call_lock:  # OCPP-J: one call at a time in each direction
            unique_id = self._new_call_id(action)
            answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._pending = (unique_id, answer)
            try:
                await self._send(call_frame(unique_id, action, payload))
                self._listener.call_sent(self.id, action)
                if before_answer is not None:
                    # a wave holds thousands of calls here: what was sent is not kept
                    del payload
                    await before_answer()
                async with asyncio.timeout(self._call_timeout_s):
                    frame = await answer
            except TimeoutError as error:
                raise CallFailed("no answer in time") from error
            except Exception as error:  # the connection closed under us
                raise CallFailed(f"{type(error).__name__}: {error}") from error
            finally:
                self._pending = None
                if answer.done() and not answer.cancelled():
                    answer.exception()  # (one that ended the call while we waited: read)
        if frame[0] == CALLERROR:
            raise CallFailed(f"CALLERROR {frame[2]}: {frame[3] if len(frame) > 3 else ''}",
                             str(frame[2]) if len(frame) > 2 else None)
        reply = frame[2]
        try:
            self.DIALECT.response_validator(action)(reply)
        except fastjsonschema.JsonSchemaValueException as error:
            if not lenient or not isinstance(reply, dict):
                raise CallFailed(f"{action} answer does not follow OCPP "
                                 f"{self.DIALECT.version}: {error.message}") from None
            log.debug("%s: %s answer does not follow OCPP %s (%s); read leniently",
                      self.id, action, self.DIALECT.version, error.message)
        return reply
