"""Intake for raw OpenADR 2.0b XML as a VEN receives it. Pure: no I/O, no clock.

:func:`read_message` takes the bytes of a whole ``oadrPayload`` and either returns
openleadr's ``(message type, payload dict)`` or raises :class:`RefusedMessage`, and
nothing else, whatever the bytes are. In order it:

1. refuses non-bytes, empty and oversize input (> :data:`MAX_MESSAGE_BYTES`);
2. refuses any DOCTYPE or entity declaration (XXE, entity expansion) before parsing;
3. parses with a locked-down lxml parser (no entities, no DTD, no network), in whatever
   encoding the document declares, and re-serialises it as UTF-8;
4. validates that against the 2.0b XSD (``openleadr.messaging.validate_xml_schema``);
5. parses it with ``openleadr.messaging.parse_message``;
6. applies the content checks the schema cannot express, for the messages a VTN sends to a
   VEN: blank IDs, IDs a message's role requires but the schema leaves optional, unusable
   response codes.

The events of an ``oadrDistributeEvent`` are judged one by one, not with the message: one
event that does not normalise to a :class:`~policies.events.DrEvent` must not sink the others.
:func:`sort_events` parts them into events to act on and :class:`BadEvent` s to answer
with an error.

XML signatures are *not* verified here: that needs the VTN's certificate and belongs to the
transport (:mod:`ven.oadr20b.signatures`, which hands on only the signed part). A signed payload is
read like an unsigned one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from lxml import etree
from openleadr.messaging import parse_message, validate_xml_schema

from policies.events import DrEvent, InvalidEvent
from ven.oadr20b.events import normalise_event

OADR_NS = "http://openadr.org/oadr-2.0b/2012/07"
MAX_MESSAGE_BYTES = 1024 * 1024

Stage = Literal["input", "xml", "schema", "parse", "content", "signature"]

#: Messages a VTN sends to a VEN (requests, or replies to the VEN's requests).
VTN_TO_VEN = frozenset(
    {
        "oadrDistributeEvent",
        "oadrCreatedPartyRegistration",
        "oadrCancelPartyRegistration",
        "oadrRequestReregistration",
        "oadrRegisterReport",
        "oadrRegisteredReport",
        "oadrCreateReport",
        "oadrCancelReport",
        "oadrCreatedOpt",
        "oadrCanceledOpt",
        "oadrResponse",
    }
)
# A VEN also receives some replies that are usually VEN -> VTN, when it is the one that asked:
# oadrCanceledPartyRegistration after its own cancel, and oadrUpdateReport / oadrCreatedReport /
# oadrUpdatedReport / oadrCanceledReport about reports it requested from the VTN. read_message
# holds those to the same content checks. Messages only a VEN sends get the schema, plus the
# responseCode check where they carry an eiResponse.


class RefusedMessage(ValueError):
    """A message the VEN will not act on. ``reason`` names the message type and the defect.

    ``stage`` says which step refused it: ``input`` (size, type, DOCTYPE), ``xml`` (not
    well-formed), ``schema`` (2.0b XSD), ``parse`` (openleadr could not digest it),
    ``content`` (the checks in this module) or ``signature`` (:mod:`ven.oadr20b.signatures`).
    """

    def __init__(
        self, reason: str, *, stage: Stage = "content", message_type: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage: Stage = stage
        self.message_type = message_type


# --------------------------------------------------------------------------- XML intake

# Any of these in the raw bytes, in any encoding XML allows without a declaration, is refused.
_DTD_MARKERS = tuple(
    marker.encode(encoding)
    for marker in ("<!DOCTYPE", "<!ENTITY")
    for encoding in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
)
_LXML_POSITION = re.compile(r"\s*\(<string>, line \d+\)\s*$")


def _safe_parser(*, strip_comments: bool = False) -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=strip_comments,
        remove_pis=strip_comments,
    )


def parse_untrusted(raw: bytes) -> etree._Element:
    """The first steps of :func:`read_message` (size, DTDs, well-formedness) alone, for a caller
    that must look at the tree before reading it (a signature check). Raises
    :class:`RefusedMessage` only."""
    return _parse_safely(raw)


def _parse_safely(raw: bytes, *, strip_comments: bool = False) -> etree._Element:
    """Well-formedness parse of untrusted bytes; refuses DTDs of any kind."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise RefusedMessage(f"message: expected bytes, got {type(raw).__name__}", stage="input")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise RefusedMessage(
            f"message: {len(raw)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit", stage="input"
        )
    raw = bytes(raw)
    if not raw.strip():
        raise RefusedMessage("message: empty input", stage="input")
    upper = raw.upper()
    if any(marker in upper for marker in _DTD_MARKERS):
        raise RefusedMessage(
            "message: DOCTYPE / entity declarations are not allowed", stage="input"
        )
    try:
        root = etree.fromstring(raw, _safe_parser(strip_comments=strip_comments))
    except (etree.LxmlError, ValueError) as error:
        raise RefusedMessage(
            f"message: not well-formed XML: {_lxml_text(error)}", stage="xml"
        ) from error
    if root is None:
        raise RefusedMessage("message: no root element", stage="xml")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        # Only reachable through an encoding the byte scan above does not read (UTF-7, EBCDIC).
        raise RefusedMessage(
            "message: DOCTYPE / entity declarations are not allowed", stage="input"
        )
    return root


def _lxml_text(error: Exception) -> str:
    return _LXML_POSITION.sub("", str(error)) or type(error).__name__


def _local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _declared_type(root: etree._Element) -> str:
    """The message element's name, as far as the tree shows it (for refusal reasons)."""
    if _local(root.tag) != "oadrPayload":
        return _local(root.tag) or "message"
    for signed in root:
        if _local(signed.tag) == "oadrSignedObject":
            for child in signed:
                if isinstance(child.tag, str):
                    return _local(child.tag)
    return "oadrPayload"


def wrap(element_xml: bytes) -> bytes:
    """Wrap a bare message element (``oadrDistributeEvent``, ...) in ``oadrPayload`` /
    ``oadrSignedObject``, dropping its XML declaration, comments and processing instructions.

    Returns UTF-8 bytes. Input that already is an ``oadrPayload`` comes back unchanged. Raises
    :class:`RefusedMessage` when the input is not well-formed XML (or carries a DOCTYPE).
    """
    element = _parse_safely(element_xml, strip_comments=True)
    if _local(element.tag) == "oadrPayload":
        return bytes(element_xml)
    payload = etree.Element(f"{{{OADR_NS}}}oadrPayload", nsmap={"oadr": OADR_NS})
    signed = etree.SubElement(payload, f"{{{OADR_NS}}}oadrSignedObject")
    signed.append(element)
    return etree.tostring(payload, encoding="UTF-8", xml_declaration=True)


def read_message(raw: bytes) -> tuple[str, dict[str, Any]]:
    """Validate, parse and check one ``oadrPayload``; see the module docstring.

    Returns openleadr's ``(message_type, payload)``. Raises :class:`RefusedMessage` only.
    """
    root = _parse_safely(raw)
    declared = _declared_type(root)
    if root.tag != f"{{{OADR_NS}}}oadrPayload":
        # The XSD declares every message element globally, so a bare one would pass it.
        raise RefusedMessage(
            f"{declared}: not an OpenADR 2.0b oadrPayload (root element is {root.tag})",
            stage="schema",
            message_type=declared,
        )
    normalised = etree.tostring(root.getroottree(), encoding="UTF-8", xml_declaration=True)
    try:
        validate_xml_schema(normalised)
    except (etree.LxmlError, ValueError) as error:
        raise RefusedMessage(
            f"{declared}: fails the OpenADR 2.0b schema: {_lxml_text(error)}",
            stage="schema",
            message_type=declared,
        ) from error
    try:
        message_type, payload = parse_message(normalised)
    except Exception as error:  # openleadr raises whatever its converters raise
        raise RefusedMessage(
            f"{declared}: could not be parsed: {type(error).__name__}: {error}",
            stage="parse",
            message_type=declared,
        ) from error
    if not isinstance(payload, dict):
        raise RefusedMessage(
            f"{message_type}: parsed to {type(payload).__name__}, not a mapping",
            stage="parse",
            message_type=message_type,
        )
    try:
        _CHECKS.get(message_type, _check_nothing)(message_type, payload)
    except RefusedMessage as refusal:
        refusal.message_type = message_type
        raise
    except Exception as error:  # a check tripping over an odd shape is still a refusal
        raise RefusedMessage(
            f"{message_type}: malformed content: {type(error).__name__}: {error}",
            message_type=message_type,
        ) from error
    return message_type, payload


@dataclass(frozen=True)
class BadEvent:
    """An event of an ``oadrDistributeEvent`` that the VEN will not act on, and why.

    ``event_id`` is "" when the event names none; ``modification_number`` and
    ``response_required`` are read as far as the event allows (0 and True otherwise), so
    that it can still be answered.
    """

    event_id: str
    modification_number: int
    response_required: bool
    reason: str


def events_of(payload: Mapping[str, Any]) -> list[DrEvent]:
    """The events of an ``oadrDistributeEvent`` payload, normalised, with its vtnID.

    An oadrDistributeEvent without events is valid (the VTN has none for this VEN): ``[]``.
    Raises :class:`RefusedMessage` if any event is bad (see :func:`sort_events`).
    """
    events, bad = sort_events(payload)
    if bad:
        raise RefusedMessage(f"oadrDistributeEvent: {bad[0].reason}",
                             message_type="oadrDistributeEvent")
    return events


def sort_events(payload: Mapping[str, Any]) -> tuple[list[DrEvent], list[BadEvent]]:
    """The events of an ``oadrDistributeEvent`` payload, each normalised on its own: those to
    act on, and those that are bad (do not normalise, or share their eventID with another
    event of the message, which leaves both ambiguous). In the order of the message.

    Raises :class:`RefusedMessage` only when the list itself is malformed.
    """
    where = "oadrDistributeEvent"
    if not isinstance(payload, Mapping):
        raise RefusedMessage(f"{where}: payload is not a mapping", message_type=where)
    vtn_id = _id(payload.get("vtn_id")) or ""
    raw_events = payload.get("events")
    if raw_events is None:
        return [], []
    if not isinstance(raw_events, list):
        raise RefusedMessage(f"{where}: malformed oadrEvent list", message_type=where)
    sorted_events: list[DrEvent | BadEvent] = []
    for index, raw in enumerate(raw_events):
        try:
            sorted_events.append(normalise_event(raw, vtn_id))
        except InvalidEvent as error:
            sorted_events.append(_bad_event(raw, str(error)))
        except Exception as error:  # an odd shape normalise_event did not foresee
            sorted_events.append(_bad_event(
                raw, f"event [{index}] is malformed: {type(error).__name__}: {error}"))
    times = Counter(e.event_id for e in sorted_events if e.event_id)
    events: list[DrEvent] = []
    bad: list[BadEvent] = []
    for event in sorted_events:
        if times[event.event_id] > 1:
            if all(b.event_id != event.event_id for b in bad):  # one answer per eventID
                bad.append(BadEvent(event.event_id, event.modification_number,
                                    event.response_required,
                                    f"eventID {event.event_id} appears {times[event.event_id]} "
                                    "times in one message"))
        elif isinstance(event, BadEvent):
            bad.append(event)
        else:
            events.append(event)
    return events, bad


def _bad_event(raw: Any, reason: str) -> BadEvent:
    """What can be read of an event that does not normalise, to answer it by its ID."""
    raw = raw if isinstance(raw, Mapping) else {}
    descriptor = raw.get("event_descriptor")
    descriptor = descriptor if isinstance(descriptor, Mapping) else {}
    modification = descriptor.get("modification_number")
    if isinstance(modification, bool) or not isinstance(modification, int) or modification < 0:
        modification = 0
    return BadEvent(event_id=_id(descriptor.get("event_id")) or "",
                    modification_number=modification,
                    response_required=raw.get("response_required", "always") != "never",
                    reason=reason)


# ------------------------------------------------------------------------ content checks

_XML_NAMES = {
    "request_id": "requestID",
    "vtn_id": "vtnID",
    "ven_id": "venID",
    "registration_id": "registrationID",
    "opt_id": "optID",
    "event_id": "eventID",
    "report_request_id": "reportRequestID",
    "report_specifier_id": "reportSpecifierID",
    "report_id": "eiReportID",
    "r_id": "rID",
}


def _id(value: Any) -> str | None:
    """An identifier as text, or None when absent or blank.

    openleadr turns digit-only IDs into numbers and ``true``/``false`` into booleans.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _need(where: str, mapping: Any, key: str, why: str = "") -> str:
    value = _id(mapping.get(key)) if isinstance(mapping, Mapping) else None
    if value is None:
        raise RefusedMessage(f"{where}: missing or empty {_XML_NAMES.get(key, key)}{why}")
    return value


def _items(where: str, value: Any, what: str) -> list[Any]:
    """openleadr gives one child as a dict and several as a list; absent as None."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        return [value]
    raise RefusedMessage(f"{where}: malformed {what}")


def _response_code(where: str, payload: Mapping[str, Any], *, required: bool = True) -> int | None:
    response = payload.get("response")
    if response is None:
        if required:
            raise RefusedMessage(f"{where}: missing eiResponse")
        return None
    if not isinstance(response, Mapping):
        raise RefusedMessage(f"{where}: malformed eiResponse")
    code = response.get("response_code")
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 999:
        raise RefusedMessage(f"{where}: eiResponse without a usable responseCode ({code!r})")
    return code


def _is_success(code: int | None) -> bool:
    return code is not None and 200 <= code < 300


_TO_VEN = " (a VTN must name the VEN it addresses)"


def _check_nothing(message_type: str, payload: dict[str, Any]) -> None:
    """Messages only a VEN sends: the schema is all we hold them to."""


def _check_response_only(message_type: str, payload: dict[str, Any]) -> None:
    # oadrResponse answers a poll with an empty requestID, so only the code is required.
    _response_code(message_type, payload)


def _check_distribute_event(message_type: str, payload: dict[str, Any]) -> None:
    _response_code(message_type, payload, required=False)
    _need(message_type, payload, "request_id")
    _need(message_type, payload, "vtn_id")
    # Each event is judged on its own (sort_events), so that one bad event is answered with
    # an error while the others are acted on; here only the list itself must be readable.
    sort_events(payload)


def _check_created_event(message_type: str, payload: dict[str, Any]) -> None:
    _response_code(message_type, payload)
    for index, item in enumerate(
        _items(message_type, payload.get("event_responses"), "eventResponses")
    ):
        where = f"{message_type} eventResponse[{index}]"
        if not isinstance(item, Mapping):
            raise RefusedMessage(f"{where}: malformed")
        _response_code(where, {"response": item})
        _need(where, item, "event_id")


def _check_created_party_registration(message_type: str, payload: dict[str, Any]) -> None:
    _response_code(message_type, payload)
    _need(message_type, payload, "vtn_id")
    # A reply to oadrQueryRegistration (or a refusal) carries neither ID; a registration
    # carries both. One without the other leaves the VEN unable to act or to cancel.
    registration_id = _id(payload.get("registration_id"))
    ven_id = _id(payload.get("ven_id"))
    if registration_id is not None and ven_id is None:
        raise RefusedMessage(f"{message_type}: registrationID without a venID")
    if ven_id is not None and registration_id is None:
        raise RefusedMessage(f"{message_type}: venID without a registrationID")


def _check_cancel_party_registration(message_type: str, payload: dict[str, Any]) -> None:
    _need(message_type, payload, "request_id")
    _need(message_type, payload, "registration_id")


def _check_canceled_party_registration(message_type: str, payload: dict[str, Any]) -> None:
    if _is_success(_response_code(message_type, payload)):
        _need(message_type, payload, "registration_id", " in a successful reply")


def _check_request_reregistration(message_type: str, payload: dict[str, Any]) -> None:
    _need(message_type, payload, "ven_id")


def _check_created_opt(message_type: str, payload: dict[str, Any]) -> None:
    _response_code(message_type, payload)
    _need(message_type, payload, "opt_id")


def _check_canceled_opt(message_type: str, payload: dict[str, Any]) -> None:
    # The schema leaves optID optional; a successful cancel must still say what it cancelled.
    if _is_success(_response_code(message_type, payload)):
        _need(message_type, payload, "opt_id", " in a successful reply")


def _check_duration(where: str, value: Any, name: str) -> None:
    if value is not None and (not isinstance(value, timedelta) or value < timedelta(0)):
        raise RefusedMessage(f"{where}: {name} is not a valid duration ({value!r})")


def _check_report_requests(
    message_type: str, payload: Mapping[str, Any], *, required: bool
) -> None:
    requests = _items(message_type, payload.get("report_requests"), "oadrReportRequest")
    if required and not requests:
        raise RefusedMessage(f"{message_type}: no oadrReportRequest")
    for index, request in enumerate(requests):
        where = f"{message_type} oadrReportRequest[{index}]"
        _need(where, request, "report_request_id")
        specifier = request.get("report_specifier")
        if not isinstance(specifier, Mapping):
            raise RefusedMessage(f"{where}: missing reportSpecifier")
        _need(where, specifier, "report_specifier_id")
        _check_duration(where, specifier.get("granularity"), "granularity")
        _check_duration(where, specifier.get("report_back_duration"), "reportBackDuration")
        payloads = _items(where, specifier.get("specifier_payloads"), "specifierPayload")
        if not payloads:
            raise RefusedMessage(f"{where}: reportSpecifier without specifierPayload")
        for p_index, item in enumerate(payloads):
            _need(f"{where} specifierPayload[{p_index}]", item, "r_id")


def _check_reports(message_type: str, payload: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for index, report in enumerate(_items(message_type, payload.get("reports"), "oadrReport")):
        where = f"{message_type} oadrReport[{index}]"
        for key in keys:
            _need(where, report, key)
        r_ids: set[str] = set()
        for d_index, description in enumerate(
            _items(where, report.get("report_descriptions"), "oadrReportDescription")
        ):
            r_id = _need(f"{where} oadrReportDescription[{d_index}]", description, "r_id")
            if r_id in r_ids:
                raise RefusedMessage(f"{where}: rID {r_id} described twice")
            r_ids.add(r_id)


def _check_register_report(message_type: str, payload: dict[str, Any]) -> None:
    _need(message_type, payload, "request_id")
    _need(message_type, payload, "ven_id", _TO_VEN)
    _check_reports(message_type, payload, ("report_specifier_id", "report_request_id"))


def _check_registered_report(message_type: str, payload: dict[str, Any]) -> None:
    _response_code(message_type, payload)
    _check_report_requests(message_type, payload, required=False)


def _check_create_report(message_type: str, payload: dict[str, Any]) -> None:
    _need(message_type, payload, "request_id")
    _need(message_type, payload, "ven_id", _TO_VEN)
    _check_report_requests(message_type, payload, required=True)


def _report_request_ids(where: str, value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    ids = [_id(v) for v in values]
    if not ids or any(i is None for i in ids):
        raise RefusedMessage(f"{where}: missing or empty reportRequestID")
    return [i for i in ids if i is not None]


def _check_cancel_report(
    message_type: str, payload: Mapping[str, Any], *, nested: bool = False
) -> None:
    _need(message_type, payload, "request_id")
    _report_request_ids(message_type, payload.get("report_request_id"))
    if not isinstance(payload.get("report_to_follow"), bool):
        raise RefusedMessage(f"{message_type}: reportToFollow must be true or false")
    if not nested:
        _need(message_type, payload, "ven_id", _TO_VEN)


def _check_update_report(message_type: str, payload: dict[str, Any]) -> None:
    _need(message_type, payload, "request_id")
    _need(message_type, payload, "ven_id", _TO_VEN)
    _check_reports(message_type, payload, ("report_id", "report_request_id", "report_specifier_id"))


def _check_pending_reports(message_type: str, payload: dict[str, Any]) -> None:
    _response_code(message_type, payload)
    for index, item in enumerate(
        _items(message_type, payload.get("pending_reports"), "oadrPendingReports")
    ):
        _need(f"{message_type} oadrPendingReports[{index}]", item, "report_request_id")


def _check_updated_report(message_type: str, payload: dict[str, Any]) -> None:
    _response_code(message_type, payload)
    cancel = payload.get("cancel_report")
    if cancel is not None:
        if not isinstance(cancel, Mapping):
            raise RefusedMessage(f"{message_type}: malformed oadrCancelReport")
        _check_cancel_report(f"{message_type} oadrCancelReport", cancel, nested=True)


_CHECKS: dict[str, Callable[[str, dict[str, Any]], None]] = {
    # VTN -> VEN
    "oadrDistributeEvent": _check_distribute_event,
    "oadrCreatedPartyRegistration": _check_created_party_registration,
    "oadrCancelPartyRegistration": _check_cancel_party_registration,
    "oadrRequestReregistration": _check_request_reregistration,
    "oadrRegisterReport": _check_register_report,
    "oadrRegisteredReport": _check_registered_report,
    "oadrCreateReport": _check_create_report,
    "oadrCancelReport": _check_cancel_report,
    "oadrCreatedOpt": _check_created_opt,
    "oadrCanceledOpt": _check_canceled_opt,
    "oadrResponse": _check_response_only,
    # Both ways: replies a VEN gets to what it asked of the VTN
    "oadrCanceledPartyRegistration": _check_canceled_party_registration,
    "oadrUpdateReport": _check_update_report,
    "oadrCreatedReport": _check_pending_reports,
    "oadrCanceledReport": _check_pending_reports,
    "oadrUpdatedReport": _check_updated_report,
    # VEN -> VTN only: a response code where there is one
    "oadrCreatedEvent": _check_created_event,
}
