"""What an OpenADR 3 VTN sends, as thin typed models: lenient in what they read.

Only the fields the VEN uses are modelled; unknown fields are ignored. Both 3.0.1 and
3.1.0 shapes are read: targets as strings (3.1.0) or as ``{type, values}`` maps (3.0.1),
camelCase keys and the snake_case ones some VTNs send. Real VTNs differ from the OpenAPI
document, so time stamps are read without ``T`` or zone (a missing zone is UTC, as in
OpenADR 2.0b), and ``0001-01-01`` / ``0000-00-00`` mean "now". Everything that makes no
sense (wrong types, arrays beyond the bounds below) fails validation: the caller logs it and
drops that object, never the others.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field

# Bounds against a hostile or broken VTN (a real event has some hundreds of intervals at most).
MAX_INTERVALS = 2000
MAX_PAYLOADS = 32
MAX_VALUES = 1000
MAX_DESCRIPTORS = 64
MAX_TARGETS = 256

# 'the beginning of time': an interval or event that starts now (User Guide 7.3)
BEGINNING = datetime(1, 1, 1, tzinfo=UTC)
# P9999Y: 'infinity' (User Guide 7.3); any duration this long is open-ended
FOREVER = timedelta(days=9999 * 365)
_OPEN_ENDED = timedelta(days=9000 * 365)

# Near-misses read anyway, by kind (the VEN logs each kind once and shows the counts).
LENIENT_READS: Counter[str] = Counter()

_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$")
_DURATION = re.compile(
    r"^(-)?P(?=\d|T\d)(?:(\d+(?:\.\d+)?)Y)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)W)?"
    r"(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?"
    r"(?:(\d+(?:\.\d+)?)S)?)?$")
# calendar units as fixed lengths: the User Guide advises against months and years except
# for P9999Y, which is read as 'forever' anyway
_UNIT_SECONDS = (365 * 86400, 30 * 86400, 7 * 86400, 86400, 3600, 60, 1)


def parse_timestamp(value: Any) -> datetime:
    """An RFC 3339 date-time, read leniently: ``T`` or a space, zone optional (UTC), a date
    alone is its midnight; the 'beginning of time' (and ``0000-00-00``) is :data:`BEGINNING`."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not isinstance(value, str):
        raise ValueError(f"expected a date-time string, got {type(value).__name__}")
    text = value.strip()
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"not a date-time: {text[:40]!r}")
    year, month, day = (int(match.group(i)) for i in (1, 2, 3))
    if year <= 1:
        return BEGINNING  # 0000-00-00 (3.0.1), 0001-01-01 (3.1.0): now
    hour, minute, second = (int(match.group(i) or 0) for i in (4, 5, 6))
    fraction = match.group(7) or ""
    micro = int((fraction + "000000")[:6])
    zone = match.group(8)
    if zone is None:
        LENIENT_READS["date-time without a zone (read as UTC)"] += 1
    if match.group(4) is not None and "T" not in text and "t" not in text:
        LENIENT_READS["date-time with a space for T"] += 1
    offset = timedelta(0)
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
    try:
        moment = datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=UTC)
    except ValueError as error:
        raise ValueError(f"not a date-time: {text[:40]!r} ({error})") from None
    return moment - offset


def parse_duration(value: Any) -> timedelta:
    """An ISO 8601 duration (``PT1H``, ``P1DT2H``, ``PT0.5S``); ``P9999Y`` and anything as
    long is :data:`FOREVER`. Negative durations make no sense for an interval: refused."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 duration string, got {type(value).__name__}")
    match = _DURATION.match(value.strip())
    if match is None:
        raise ValueError(f"not an ISO 8601 duration: {value[:40]!r}")
    if match.group(1):
        raise ValueError(f"negative duration: {value[:40]!r}")
    seconds = sum(float(part) * unit for part, unit in zip(match.groups()[1:], _UNIT_SECONDS,
                                                           strict=True) if part)
    if not math.isfinite(seconds) or seconds >= _OPEN_ENDED.total_seconds():
        return FOREVER
    return timedelta(seconds=seconds)


Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _alias(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class ValuesMap(_Wire):
    """``{type, values}``: a payload, an attribute, or a 3.0.1 target."""

    type: str = Field(min_length=1, max_length=128)
    values: list[Any] = Field(max_length=MAX_VALUES)


# 3.1.0: a target is a string; 3.0.1: a valuesMap such as {type: VEN_NAME, values: [...]}
Target = Annotated[str, Field(min_length=1, max_length=128)] | ValuesMap
Targets = Annotated[list[Target], Field(max_length=MAX_TARGETS)]


class IntervalPeriod(_Wire):
    start: Timestamp | None = None
    duration: Duration | None = None
    randomize_start: Duration | None = _alias("randomizeStart", "randomize_start")


class Interval(_Wire):
    id: int
    interval_period: IntervalPeriod | None = _alias("intervalPeriod", "interval_period")
    payloads: Annotated[list[ValuesMap], Field(max_length=MAX_PAYLOADS)] = []


class PayloadDescriptor(_Wire):
    """An event's or a program's payload descriptor (units, currency, reading type)."""

    object_type: str | None = _alias("objectType", "object_type")
    payload_type: str = Field(min_length=1, max_length=128,
                              validation_alias=AliasChoices("payloadType", "payload_type"))
    units: str | None = None
    currency: str | None = None
    reading_type: str | None = _alias("readingType", "reading_type")


class ReportDescriptor(_Wire):
    """A request for reports, carried by an event."""

    payload_type: str = Field(min_length=1, max_length=128,
                              validation_alias=AliasChoices("payloadType", "payload_type"))
    reading_type: str | None = _alias("readingType", "reading_type")
    units: str | None = None
    targets: Targets | None = None
    aggregate: bool | None = None
    start_interval: int | None = _alias("startInterval", "start_interval")
    num_intervals: int | None = _alias("numIntervals", "num_intervals")
    historical: bool | None = None
    frequency: int | None = None
    repeat: int | None = None


ObjectId = Annotated[str, Field(min_length=1, max_length=128)]
Descriptors = Annotated[list[PayloadDescriptor], Field(max_length=MAX_DESCRIPTORS)]


class Event(_Wire):
    id: ObjectId
    program_id: ObjectId = Field(validation_alias=AliasChoices("programID", "program_id",
                                                               "programId"))
    event_name: str | None = _alias("eventName", "event_name")
    modification_date_time: Timestamp | None = _alias("modificationDateTime",
                                                      "modification_date_time")
    priority: Annotated[int, Field(ge=0)] | None = None
    duration: Duration | None = None
    targets: Targets | None = None
    payload_descriptors: Descriptors | None = _alias("payloadDescriptors", "payload_descriptors")
    report_descriptors: Annotated[list[ReportDescriptor], Field(max_length=MAX_DESCRIPTORS)] \
        | None = _alias("reportDescriptors", "report_descriptors")
    interval_period: IntervalPeriod | None = _alias("intervalPeriod", "interval_period")
    intervals: Annotated[list[Interval], Field(max_length=MAX_INTERVALS)] | None = None


class Program(_Wire):
    id: ObjectId
    program_name: str = Field(validation_alias=AliasChoices("programName", "program_name"))
    payload_descriptors: Descriptors | None = _alias("payloadDescriptors", "payload_descriptors")
    targets: Targets | None = None


class VenObject(_Wire):
    id: ObjectId
    ven_name: str = Field(validation_alias=AliasChoices("venName", "ven_name"))
    targets: Targets | None = None


class ResourceObject(_Wire):
    id: ObjectId
    resource_name: str = Field(validation_alias=AliasChoices("resourceName", "resource_name"))
    ven_id: str | None = _alias("venID", "ven_id", "venId")
    targets: Targets | None = None


class Subscription(_Wire):
    id: ObjectId
    client_name: str | None = _alias("clientName", "client_name")
    object_operations: list[dict[str, Any]] = Field(
        default_factory=list, max_length=64,
        validation_alias=AliasChoices("objectOperations", "object_operations"))


class Notification(_Wire):
    """What a VTN posts to a subscription's callback URL."""

    object_type: str = Field(validation_alias=AliasChoices("objectType", "object_type"))
    operation: str
    object: dict[str, Any]


class TokenReply(_Wire):
    access_token: str = Field(min_length=1, max_length=4096)
    token_type: str | None = None
    expires_in: float | None = Field(default=None, gt=0)


def target_strings(targets: list[Target] | None) -> list[str]:
    """The targets that are plain strings (3.1.0), and the values of typed ones (3.0.1)."""
    found: list[str] = []
    for target in targets or ():
        if isinstance(target, str):
            found.append(target)
        else:
            found.extend(str(v) for v in target.values if isinstance(v, str | int)
                         and not isinstance(v, bool))
    return found
