"""ven.oadr20b.messages against OpenADR 2.0b payloads written by another implementation.

The fixtures live beside the clone, in ../shared/fixtures/openadr20b (see its README.md): sample
messages from the Java stack avob/OpenADR, valid ones and ``unvalidation*`` ones. Every file there
is run: valid messages a VTN sends must be read, with their values as written; invalid ones must
be refused with a reason; nothing may raise anything but RefusedMessage.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lxml import etree

from policies.events import DrEvent, EventStatus
from ven.oadr20b.messages import (
    MAX_MESSAGE_BYTES,
    RefusedMessage,
    events_of,
    read_message,
    sort_events,
    wrap,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "openadr20b"
MISSING = (f"OpenADR 2.0b fixtures not found: expected the folder {FIXTURES}, i.e. "
           "../shared/fixtures/openadr20b beside the clone (CI checks it out there)")


_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def requires_fixtures(test: _Fn) -> _Fn:
    """The VEN's tests run every fixture: without the folder, a test that needs it fails
    (it is never skipped) and says where the folder belongs."""
    if FIXTURES.is_dir():
        return test

    @functools.wraps(test)
    def missing(*args: Any, **kwargs: Any) -> None:
        pytest.fail(MISSING, pytrace=False)

    return missing  # type: ignore[return-value]

# What a VTN sends to a VEN, per the fixture README; whole payloads in xmlsignature/ count too.
VTN_TO_VEN = {
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

OADR = "http://openadr.org/oadr-2.0b/2012/07"
START = datetime(2001, 12, 17, 9, 40, 47, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


# ----------------------------------------------------------------------------- fixture set


def _readme_verdicts() -> dict[str, str]:
    """The README table: file -> what the 2.0b XSD says of it ("valid" / "invalid: ...")."""
    readme = FIXTURES / "README.md"
    verdicts: dict[str, str] = {}
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8").splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[0].endswith(".xml"):
                verdicts[cells[0]] = cells[2]
    return verdicts


VERDICTS = _readme_verdicts()


@dataclass(frozen=True)
class Fixture:
    path: Path
    rel: str
    message_type: str | None  # None when a whole payload holds no message
    whole_payload: bool  # already an oadrPayload; otherwise a bare element to wrap
    meant_valid: bool  # neither named unvalidation* nor marked invalid in the README
    xsd_valid: bool | None  # the README's measurement; None if the file has no row

    @property
    def from_vtn(self) -> bool:
        return self.whole_payload or self.message_type in VTN_TO_VEN

    def payload_bytes(self) -> bytes:
        raw = self.path.read_bytes()
        return raw if self.whole_payload else wrap(raw)


def _local(tag: str) -> str:
    return etree.QName(tag).localname


def describe(path: Path) -> Fixture:
    rel = path.relative_to(FIXTURES).as_posix()
    root = etree.fromstring(path.read_bytes())  # our own fixture, not hostile input
    whole = _local(root.tag) == "oadrPayload"
    message_type: str | None = _local(root.tag)
    if whole:
        signed = [el for el in root if _local(el.tag) == "oadrSignedObject"]
        inner = [el for el in signed[0] if isinstance(el.tag, str)] if signed else []
        message_type = _local(inner[0].tag) if inner else None
    verdict = VERDICTS.get(rel)
    xsd_valid = None if verdict is None else verdict.startswith("valid")
    named_invalid = path.name.startswith(("unvalidation", "unvalidating"))
    return Fixture(
        path=path,
        rel=rel,
        message_type=message_type,
        whole_payload=whole,
        meant_valid=not named_invalid and xsd_valid is not False,
        xsd_valid=xsd_valid,
    )


def _all_files() -> list[Any]:
    if not FIXTURES.is_dir():
        return [pytest.param(None, id="fixtures-missing")]  # fails: see requires_fixtures
    files = sorted(p for p in FIXTURES.rglob("*") if p.is_file())
    return [pytest.param(p, id=p.relative_to(FIXTURES).as_posix()) for p in files]


def fixture_bytes(rel: str) -> bytes:
    return describe(FIXTURES / rel).payload_bytes()


def dig(data: Any, *keys: str | int) -> Any:
    for key in keys:
        data = data[key]
    return data


# Concrete values, as written in each valid VTN -> VEN file, that the parsed payload must carry.
EXPECTED: dict[str, list[tuple[tuple[str | int, ...], Any]]] = {
    "eiregisterparty/oadrCreatedPartyRegistration.xml": [
        (("vtn_id",), "VTN"),
        (("response", "response_code"), 200),
        (("response", "request_id"), "REQ_123"),
        (("profiles", 1, "profile_name"), "2.0b"),
        (("profiles", 1, "transports", 1, "transport_name"), "xmpp"),
    ],
    "eiregisterparty/oadrCancelPartyRegistration.xml": [
        (("request_id",), "REQ_12345"),
        (("registration_id",), "REG_54321"),
    ],
    "eiregisterparty/oadrRequestReregistration.xml": [(("ven_id",), "VEN_123")],
    "eireport/oadrRegisterReport.xml": [
        (("request_id",), "REQ_12345"),
        (("ven_id",), "VEN_123"),
        (("reports", 0, "report_specifier_id"), "RS_12345"),
        (("reports", 0, "report_name"), "METADATA_HISTORY_USAGE"),
        (("reports", 0, "duration"), timedelta(minutes=60)),
        (("reports", 0, "report_descriptions", 0, "r_id"), 123),
        (("reports", 0, "report_descriptions", 0, "measurement", "unit"), "W"),
        (("reports", 0, "report_descriptions", 0, "measurement", "scale"), "k"),
        (("reports", 0, "report_descriptions", 0, "sampling_rate", "min_period"), 15 * MINUTE),
    ],
    "eireport/oadrRegisteredReport.xml": [
        (("response", "response_code"), 200),
        (("response", "request_id"), "REQ_12345"),
    ],
    "eireport/oadrCreateReport.xml": [
        (("request_id",), "REQ_12345"),
        (("ven_id",), "VEN_123"),
        (("report_requests", 0, "report_request_id"), "RR_54321"),
        (("report_requests", 0, "report_specifier", "report_specifier_id"), "RS_12345"),
        (("report_requests", 0, "report_specifier", "granularity"), timedelta(0)),
        (
            ("report_requests", 0, "report_specifier", "report_interval", "duration"),
            timedelta(hours=2),
        ),
        (("report_requests", 0, "report_specifier", "specifier_payloads", 1, "r_id"), 124),
    ],
    "eireport/oadrCancelReport.xml": [
        (("request_id",), "REQ_12345"),
        (("report_request_id",), "REP_54321"),
        (("report_to_follow",), True),
        (("ven_id",), "VEN_123"),
    ],
    "eiopt/oadrCreatedOpt.xml": [
        (("opt_id",), "OPT_12345"),
        (("response", "response_code"), 200),
    ],
    "eiopt/oadrCanceledOpt.xml": [
        (("opt_id",), "OPT_54321"),
        (("response", "request_id"), "Req_12345"),
    ],
    "response/oadrResponse.xml": [
        (("response", "response_code"), 200),
        (("response", "request_id"), "REQ_12345"),
    ],
    "xmlsignature/noSignatureOadrPayload.xml": [
        (("response", "response_code"), 200),
        (("response", "request_id"), "REQ_12345"),
    ],
    "xmlsignature/oadrPayload.xml": [  # UTF-16 with a byte-order mark, and signed
        (("response", "response_code"), 200),
        (("response", "request_id"), "REQ_12345"),
    ],
    "eievent/oadrDistributeEvent.xml": [
        (("request_id",), "REQ_12345"),
        (("vtn_id",), "VTN_543"),
    ],
}


@requires_fixtures
@pytest.mark.parametrize("path", _all_files())
def test_every_fixture_file(path: Path) -> None:
    if path.suffix != ".xml":  # README.md, LICENSE: not messages, and must not crash the VEN
        with pytest.raises(RefusedMessage) as refused:
            read_message(path.read_bytes())
        assert refused.value.reason.strip()
        return

    fixture = describe(path)
    if not fixture.from_vtn:
        # A message only a VEN sends: read or refused, nothing else.
        try:
            read_message(fixture.payload_bytes())
        except RefusedMessage as refusal:
            assert refusal.reason.strip()
        return

    if fixture.meant_valid:
        message_type, payload = read_message(fixture.payload_bytes())
        assert message_type == fixture.message_type
        assert isinstance(payload, dict)
        for keys, expected in EXPECTED.get(fixture.rel, []):
            assert dig(payload, *keys) == expected, keys
        if message_type == "oadrDistributeEvent":
            assert events_of(payload)
        return

    with pytest.raises(RefusedMessage) as refused:
        read_message(fixture.payload_bytes())
    reason = refused.value.reason
    assert reason.strip()
    assert (fixture.message_type or "oadrPayload") in reason  # names the message type
    if fixture.xsd_valid is True:
        # The schema lets it through; only the content checks can catch it.
        assert refused.value.stage == "content", reason
    elif fixture.xsd_valid is False:
        assert refused.value.stage == "schema", reason


@requires_fixtures
def test_readme_table_covers_every_message_file() -> None:
    files = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.xml")}
    assert files == set(VERDICTS), "fixture README table is out of step with the files"


# Replies a VEN also receives (to its own cancel, or about reports it asked the VTN for): the
# fixture README files them as VEN-sent, but read_message holds them to the same checks.
@requires_fixtures
@pytest.mark.parametrize(
    ("rel", "accepted"),
    [
        ("eiregisterparty/oadrCanceledPartyRegistration.xml", True),
        ("eiregisterparty/unvalidationOadrCanceledPartyRegistration.xml", False),
        ("eireport/oadrUpdateReport.xml", True),
        ("eireport/unvalidationOadrUpdateReport.xml", False),
        ("eireport/oadrCreatedReport.xml", True),
        ("eireport/oadrUpdatedReport.xml", True),
        ("eireport/oadrCanceledReport.xml", True),
    ],
)
def test_replies_a_ven_also_receives(rel: str, accepted: bool) -> None:
    if accepted:
        message_type, _ = read_message(fixture_bytes(rel))
        assert message_type == describe(FIXTURES / rel).message_type
    else:
        with pytest.raises(RefusedMessage) as refused:
            read_message(fixture_bytes(rel))
        assert refused.value.stage == "content"


# --------------------------------------------------------------------- the event, as written


def distribute_event_text() -> str:
    return (FIXTURES / "eievent/oadrDistributeEvent.xml").read_text(encoding="utf-8")


def events_from(text: str) -> list[DrEvent]:
    message_type, payload = read_message(wrap(text.encode("utf-8")))
    assert message_type == "oadrDistributeEvent"
    return events_of(payload)


@requires_fixtures
def test_distribute_event_fixture_as_written() -> None:
    [event] = events_from(distribute_event_text())

    assert event.event_id == "Event_939393"
    assert event.modification_number == 1
    assert event.status is EventStatus.FAR
    assert event.priority == 1
    assert event.market_context == "http://www.myprogram.com"
    assert event.test_event is False
    assert event.response_required is True
    assert event.vtn_id == "VTN_543"
    assert event.targets == {"group_id": ("Group_123",), "resource_id": ("RES_123", "RES_123")}

    assert event.start == START
    assert event.duration == 30 * MINUTE
    assert event.end == START + 30 * MINUTE
    assert event.start_after == 3 * MINUTE  # tolerance/tolerate/startafter PT3M
    assert event.ramp_up == 5 * MINUTE
    assert event.recovery == 5 * MINUTE

    simple, price = event.signals
    assert (simple.name, simple.type, simple.signal_id) == ("SIMPLE", "level", "SIG_01")
    assert simple.unit is None and simple.scale is None
    assert simple.current_value == 0.0
    assert [(i.start, i.duration, i.value, i.uid) for i in simple.intervals] == [
        (START, 15 * MINUTE, 3.0, "0"),
        (START + 15 * MINUTE, 15 * MINUTE, 2.0, "1"),
    ]

    assert (price.name, price.type, price.signal_id) == ("ELECTRICITY_PRICE", "price", "SIG_02")
    assert price.unit == "USD"  # itemUnits of the currencyPerKWh itemBase
    assert price.scale == "none"
    assert [(i.start, i.duration, i.uid) for i in price.intervals] == [
        (START, 15 * MINUTE, "0"),
        (START + 15 * MINUTE, 15 * MINUTE, "1"),
    ]
    assert [i.value for i in price.intervals] == pytest.approx([1.20, 1.30])

    assert simple.value_at(START + 20 * MINUTE) == 2.0
    assert price.value_at(START + 30 * MINUTE) is None
    assert event.is_over(datetime(2026, 1, 1, tzinfo=UTC))  # dates from 2001


@requires_fixtures
def test_drevent_round_trips_through_json() -> None:
    [event] = events_from(distribute_event_text())
    again = DrEvent.model_validate_json(event.model_dump_json())
    assert again == event
    assert again.model_dump() == event.model_dump()


@requires_fixtures
def test_price_units_survive_when_the_price_signal_comes_first() -> None:
    # openleadr moves an itemBase to "measurement" only up to the first signal without one,
    # so with the price signal first its units sit elsewhere than in the fixture's order.
    text = distribute_event_text()
    simple_signal, price_signal = re.findall(
        r"<ei:eiEventSignal>.*?</ei:eiEventSignal>", text, flags=re.S
    )
    swapped = text.replace(simple_signal, "@@").replace(price_signal, simple_signal)
    swapped = swapped.replace("@@", price_signal)
    [event] = events_from(swapped)
    assert [s.name for s in event.signals] == ["ELECTRICITY_PRICE", "SIMPLE"]
    assert (event.signals[0].unit, event.signals[0].scale) == ("USD", "none")
    assert event.signals[1].unit is None


# -------------------------------------------------------------- content the schema lets by


def _variant(old: str, new: str) -> str:
    text = distribute_event_text()
    assert old in text
    return text.replace(old, new, 1)


@requires_fixtures
@pytest.mark.parametrize(
    ("label", "old", "new", "needle"),
    [
        ("blank vtnID", "<ei:vtnID>VTN_543</ei:vtnID>", "<ei:vtnID> </ei:vtnID>", "vtnID"),
        (
            "blank requestID",
            "<pyld:requestID>REQ_12345</pyld:requestID>",
            "<pyld:requestID/>",
            "requestID",
        ),
    ],
)
def test_message_content_defects_are_refused(label, old, new, needle) -> None:
    with pytest.raises(RefusedMessage) as refused:
        read_message(wrap(_variant(old, new).encode("utf-8")))
    assert refused.value.stage == "content", label
    assert refused.value.reason.startswith("oadrDistributeEvent: ")
    assert needle in refused.value.reason


@requires_fixtures
@pytest.mark.parametrize(
    ("label", "old", "new", "needle"),
    [
        ("NaN payload", "<ei:value>3</ei:value>", "<ei:value>NaN</ei:value>", "finite"),
        ("INF payload", "<ei:value>1.30</ei:value>", "<ei:value>INF</ei:value>", "finite"),
        (
            "interval without duration",
            "<xcal:duration>\n\t\t\t\t\t\t\t\t<xcal:duration>PT15M</xcal:duration>\n"
            "\t\t\t\t\t\t\t</xcal:duration>",
            "",
            "duration",
        ),
        (
            "negative event duration",
            "<xcal:duration>PT30M</xcal:duration>",
            "<xcal:duration>-PT30M</xcal:duration>",
            "negative",
        ),
    ],
)
def test_event_content_defects_make_a_bad_event_not_a_refused_message(
        label, old, new, needle) -> None:
    message_type, payload = read_message(wrap(_variant(old, new).encode("utf-8")))
    assert message_type == "oadrDistributeEvent", label
    events, [bad] = sort_events(payload)
    assert events == []
    assert (bad.event_id, bad.modification_number, bad.response_required) == (
        "Event_939393", 1, True)
    assert needle in bad.reason
    with pytest.raises(RefusedMessage, match=needle):  # events_of stays all-or-nothing
        events_of(payload)


def _fixture_event() -> str:
    found = re.search(r"<oadr:oadrEvent>.*</oadr:oadrEvent>", distribute_event_text(), re.S)
    assert found is not None
    return found.group(0)


@requires_fixtures
def test_one_bad_event_leaves_the_others_to_be_read() -> None:
    good = _fixture_event()
    bad = good.replace("Event_939393", "Event_bad").replace(
        "<ei:value>3</ei:value>", "<ei:value>NaN</ei:value>")
    other = good.replace("Event_939393", "Event_other").replace(
        "<ei:modificationNumber>1</ei:modificationNumber>",
        "<ei:modificationNumber>4</ei:modificationNumber>")
    text = distribute_event_text().replace(good, good + bad + other)
    _, payload = read_message(wrap(text.encode("utf-8")))
    events, [refused] = sort_events(payload)
    assert [(e.event_id, e.modification_number) for e in events] == [
        ("Event_939393", 1), ("Event_other", 4)]
    assert (refused.event_id, refused.modification_number) == ("Event_bad", 1)
    assert "finite" in refused.reason


@requires_fixtures
def test_the_same_event_twice_is_one_bad_event() -> None:
    event = _fixture_event()
    other = event.replace("Event_939393", "Event_other")
    doubled = distribute_event_text().replace(event, event * 2 + other)
    _, payload = read_message(wrap(doubled.encode("utf-8")))
    events, [bad] = sort_events(payload)  # ambiguous: neither copy is acted on
    assert [e.event_id for e in events] == ["Event_other"]
    assert bad.event_id == "Event_939393"
    assert "appears 2 times" in bad.reason


@requires_fixtures
def test_distribute_event_without_events_is_read_as_none() -> None:
    text = re.sub(r"<oadr:oadrEvent>.*</oadr:oadrEvent>", "", distribute_event_text(), flags=re.S)
    assert events_from(text) == []


def _created_registration(ids: str) -> bytes:
    return wrap(
        f"""<oadr:oadrCreatedPartyRegistration xmlns:oadr="{OADR}"
              xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110"
              xmlns:pyld="http://docs.oasis-open.org/ns/energyinterop/201110/payloads">
          <ei:eiResponse><ei:responseCode>200</ei:responseCode>
            <pyld:requestID>R1</pyld:requestID></ei:eiResponse>
          {ids}
          <ei:vtnID>VTN_1</ei:vtnID>
          <oadr:oadrProfiles><oadr:oadrProfile><oadr:oadrProfileName>2.0b</oadr:oadrProfileName>
            <oadr:oadrTransports><oadr:oadrTransport>
              <oadr:oadrTransportName>simpleHttp</oadr:oadrTransportName>
            </oadr:oadrTransport></oadr:oadrTransports></oadr:oadrProfile></oadr:oadrProfiles>
        </oadr:oadrCreatedPartyRegistration>""".encode()
    )


def test_created_registration_needs_both_ids_or_neither() -> None:
    _, registered = read_message(
        _created_registration("<ei:registrationID>REG_1</ei:registrationID><ei:venID>V1</ei:venID>")
    )
    assert (registered["registration_id"], registered["ven_id"]) == ("REG_1", "V1")
    # A query reply, as openleadr's VTN writes it: both present but empty.
    read_message(_created_registration("<ei:registrationID/><ei:venID/>"))
    with pytest.raises(RefusedMessage, match="registrationID without a venID") as refused:
        read_message(_created_registration("<ei:registrationID>REG_1</ei:registrationID>"))
    assert refused.value.stage == "content"
    with pytest.raises(RefusedMessage, match="venID without a registrationID"):
        read_message(_created_registration("<ei:registrationID/><ei:venID>V1</ei:venID>"))


# ------------------------------------------------------------------------- hostile input

RESPONSE = f"""<?xml version="1.0" encoding="UTF-8"?>
<oadr:oadrPayload xmlns:oadr="{OADR}"
    xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110"
    xmlns:pyld="http://docs.oasis-open.org/ns/energyinterop/201110/payloads">
  <oadr:oadrSignedObject><oadr:oadrResponse><ei:eiResponse>
    <ei:responseCode>200</ei:responseCode><pyld:requestID>REQ_1</pyld:requestID>
  </ei:eiResponse></oadr:oadrResponse></oadr:oadrSignedObject>
</oadr:oadrPayload>
"""


def test_a_plain_response_is_read() -> None:
    assert read_message(RESPONSE.encode()) == (
        "oadrResponse",
        {"response": {"response_code": 200, "request_id": "REQ_1"}},
    )


XXE = RESPONSE.replace(
    "?>\n", '?>\n<!DOCTYPE oadrPayload [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n', 1
).replace("REQ_1", "&xxe;")
LAUGHS = RESPONSE.replace(
    "?>\n",
    '?>\n<!DOCTYPE oadrPayload [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
    + "]>\n",
    1,
).replace("REQ_1", "&i;")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(XXE.encode(), id="xxe-utf8"),
        pytest.param(XXE.replace("UTF-8", "UTF-16").encode("utf-16"), id="xxe-utf16-bom"),
        pytest.param(XXE.replace("UTF-8", "UTF-16BE").encode("utf-16-be"), id="xxe-utf16be"),
        pytest.param(LAUGHS.encode(), id="billion-laughs"),
        pytest.param(
            RESPONSE.replace(
                "?>\n", '?>\n<!DOCTYPE oadrPayload SYSTEM "http://127.0.0.1/x">\n'
            ).encode(),
            id="external-dtd",
        ),
    ],
)
def test_doctype_and_entities_are_refused_before_parsing(raw: bytes) -> None:
    with pytest.raises(RefusedMessage) as refused:
        read_message(raw)
    assert refused.value.stage == "input"
    assert "DOCTYPE" in refused.value.reason


def test_oversize_payload_is_refused() -> None:
    raw = RESPONSE.encode() + b" " * (2 * 1024 * 1024)
    with pytest.raises(RefusedMessage, match="limit") as refused:
        read_message(raw)
    assert refused.value.stage == "input"


def test_payload_of_exactly_the_limit_is_read() -> None:
    raw = RESPONSE.encode()
    raw += b" " * (MAX_MESSAGE_BYTES - len(raw))
    assert len(raw) == MAX_MESSAGE_BYTES
    assert read_message(raw)[0] == "oadrResponse"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"  \r\n\t", id="whitespace"),
        pytest.param(b"\x00\xff\xfe\x01 not xml", id="binary"),
        pytest.param(b'{"oadrPayload": {}}', id="json"),
        pytest.param(b"<oadr:oadrPayload", id="truncated"),
        pytest.param(RESPONSE.replace("REQ_1", "&undefined;").encode(), id="undefined-entity"),
        pytest.param(RESPONSE.encode("utf-16-le")[: len(RESPONSE)], id="half-utf16"),
    ],
)
def test_non_xml_is_refused(raw: bytes) -> None:
    with pytest.raises(RefusedMessage) as refused:
        read_message(raw)
    assert refused.value.reason.strip()


def test_text_instead_of_bytes_is_refused() -> None:
    with pytest.raises(RefusedMessage, match="expected bytes"):
        read_message(RESPONSE)  # type: ignore[arg-type]


def test_bare_element_passes_the_xsd_but_is_refused() -> None:
    bare = RESPONSE.replace("<oadr:oadrSignedObject>", "").replace("</oadr:oadrSignedObject>", "")
    bare = re.sub(r"</?oadr:oadrPayload[^>]*>", "", bare)
    bare = bare.replace(
        "<oadr:oadrResponse>",
        f'<oadr:oadrResponse xmlns:oadr="{OADR}" '
        'xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110" '
        'xmlns:pyld="http://docs.oasis-open.org/ns/energyinterop/201110/payloads">',
    )
    with pytest.raises(RefusedMessage, match="not an OpenADR 2.0b oadrPayload"):
        read_message(bare.encode())
    assert read_message(wrap(bare.encode()))[0] == "oadrResponse"


def test_wrap_drops_declaration_and_comments() -> None:
    bare = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- generated -->\n'
        b'<oadr:oadrPoll xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07" '
        b'xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110">'
        b"<!-- inside --><ei:venID>VEN_9</ei:venID></oadr:oadrPoll>"
    )
    wrapped = wrap(bare)
    assert b"<!--" not in wrapped
    assert wrapped.count(b"<?xml") == 1
    assert read_message(wrapped) == ("oadrPoll", {"ven_id": "VEN_9"})
    assert wrap(wrapped) == wrapped  # already a payload


@requires_fixtures
def test_mangled_fixtures_raise_nothing_but_refusals() -> None:
    """Truncations and byte flips of a real event: read or refused, never another exception."""
    raw = fixture_bytes("eievent/oadrDistributeEvent.xml")
    rng = random.Random(20011217)
    variants = [raw[:cut] for cut in range(0, len(raw), max(1, len(raw) // 60))]
    for _ in range(150):
        mangled = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        variants.append(bytes(mangled))
    read = 0
    for variant in variants:
        try:
            read_message(variant)
            read += 1
        except RefusedMessage as refusal:
            assert refusal.reason.strip()
    assert read < len(variants)
