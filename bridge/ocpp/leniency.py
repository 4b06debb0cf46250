"""Near-misses in what stations send: the repairs with one meaning, tried only after the
schema refused a request (pure: no I/O).

Real chargers send requests that miss the OCPP JSON schema in ways that leave no doubt
about what they mean: a local timestamp without offset, ``0.0`` for an integer, ``"12"``
for a number, ``"charging"`` for ``Charging``, a vendor's extra field. Refusing those
would lose a session over a spelling, so :func:`validate_leniently` validates first (a
valid request pays nothing more), and only when the schema refuses walks the request
along its schema, applies the repairs below, and validates again. What is still wrong
after that (a missing field, ``"abc"`` for a number, ``1.5`` for a connector id) is
refused as before.

The repairs, by the ``kind`` a :class:`Repair` records:

- ``unknown_property``: a property the schema does not allow is dropped;
- ``naive_timestamp``: a date-time without offset is read as UTC (OCPP times are UTC);
- ``timestamp_form``: another ISO 8601 spelling of a full date and time (a space for
  the ``T``, basic format) is rewritten in RFC 3339;
- ``integral_float``: a number with no fractional part where an integer is wanted;
- ``rounded_register``: an energy register (``meterStart``, ``meterStop``, in Wh) with a
  fractional part is rounded to the nearest Wh, below the field's resolution; any other
  integer field with a fraction (a connector id of 1.5) is refused;
- ``numeric_string``: a number written as a string where a number is wanted;
- ``number_as_string``: a number where a string is wanted (a 1.6 sampled value);
- ``enum_case``: an enumerated value in another case, or with spaces around it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fastjsonschema
from fastjsonschema.draft04 import CodeGeneratorDraft04

Schema = Mapping[str, Any]

UNKNOWN_PROPERTY = "unknown_property"
NAIVE_TIMESTAMP = "naive_timestamp"
TIMESTAMP_FORM = "timestamp_form"
INTEGRAL_FLOAT = "integral_float"
ROUNDED_REGISTER = "rounded_register"
NUMERIC_STRING = "numeric_string"
NUMBER_AS_STRING = "number_as_string"
ENUM_CASE = "enum_case"
KINDS = (UNKNOWN_PROPERTY, NAIVE_TIMESTAMP, TIMESTAMP_FORM, INTEGRAL_FLOAT, ROUNDED_REGISTER,
         NUMERIC_STRING, NUMBER_AS_STRING, ENUM_CASE)

# Integer fields whose fraction is below their meaning: energy registers in Wh.
_REGISTERS = frozenset({"meterStart", "meterStop"})
# What the store and the planner can hold; beyond it an integer is refused, never rounded.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INTEGER_TEXT = re.compile(r"[+-]?\d{1,19}")
# a JSON number in a string (with a sign allowed), nothing Python reads beyond: "1_000"
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# what a meter says when it has no value: read, for telemetry to leave out
_NON_FINITE_TEXT = frozenset({"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity",
                              "+infinity", "-infinity"})
_NUMBER_TEXT_MAX = 64  # longer "numbers" are not one
_PATH_KEY_MAX = 40  # how much of an unknown key a log line shows
# what the validator takes as a date-time (RFC 3339), so that only others are rewritten
_DATE_TIME = re.compile(CodeGeneratorDraft04.FORMAT_REGEXS["date-time"])


@dataclass(frozen=True)
class Repair:
    """One repair made to a request: what kind, and where (``meterValue[0].timestamp``)."""

    kind: str
    path: str


def bounded_schema(schema: Any) -> Any:
    """A copy of a schema whose integers are bounded to 64 bits (unless it bounds them
    itself): a ``connectorId`` of 10**30 is then a schema violation, not a crash in the
    store. Applied once when a validator is compiled."""
    if isinstance(schema, list):
        return [bounded_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: bounded_schema(value) for key, value in schema.items()}
    if out.get("type") == "integer":
        out.setdefault("minimum", INT64_MIN)
        out.setdefault("maximum", INT64_MAX)
    return out


def validate_leniently(validate: Callable[[Any], Any], payload: Any,
                       schema_of: Callable[[], Schema]) -> tuple[Any, tuple[Repair, ...]]:
    """The payload as read (repaired where needed) and the repairs made; ``schema_of``
    gives the schema ``validate`` was compiled from, and is only called on a failure.

    Raises the validator's :class:`fastjsonschema.JsonSchemaValueException` when the
    payload breaks the schema in a way no repair mends: the error of what is left after
    the repairs, which names a real problem.
    """
    try:
        validate(payload)
        return payload, ()
    except fastjsonschema.JsonSchemaValueException as error:
        refusal = error
    repaired, repairs = repair(payload, schema_of())
    if not repairs:
        raise refusal
    validate(repaired)  # raises what the repairs could not mend
    return repaired, tuple(repairs)


def repair(payload: Any, schema: Schema) -> tuple[Any, list[Repair]]:
    """A repaired copy of ``payload`` along ``schema`` (a JSON schema whose ``$ref`` point
    into its own ``definitions``) and the repairs made; what no repair mends is left as
    it is, for the validator to refuse. The walk follows the schema, so its depth is the
    schema's whatever the payload's nesting."""
    walk = _Walk(schema.get("definitions") or {},
                 # draft 4 (OCPP 1.6) wants an int; from draft 6 on (2.0.1), 1.0 is one too
                 strict_integers="draft-04" in str(schema.get("$schema", "")))
    return walk.value(payload, schema, "", ""), walk.repairs


class _Walk:
    def __init__(self, definitions: Schema, strict_integers: bool) -> None:
        self.definitions = definitions
        self.strict_integers = strict_integers
        self.repairs: list[Repair] = []

    def resolve(self, schema: Schema) -> Schema:
        for _ in range(8):  # a chain of references, never a loop
            ref = schema.get("$ref")
            if not isinstance(ref, str) or not ref.startswith("#/definitions/"):
                return schema
            schema = self.definitions.get(ref.rsplit("/", 1)[1]) or {}
        return schema

    def value(self, value: Any, schema: Schema, path: str, name: str) -> Any:
        schema = self.resolve(schema)
        wanted = schema.get("type")
        if wanted == "object" and isinstance(value, dict):
            return self.object(value, schema, path)
        if wanted == "array" and isinstance(value, list):
            items = schema.get("items")
            if not isinstance(items, Mapping):
                return value
            return [self.value(item, items, f"{path}[{index}]", name)
                    for index, item in enumerate(value)]
        if wanted == "integer":
            if isinstance(value, float) and not self.strict_integers and value.is_integer() \
                    and INT64_MIN <= value <= INT64_MAX:
                return value  # valid as it is
            return _integer(value, path, name, self.repairs)
        if wanted == "number":
            return _number(value, path, self.repairs)
        if wanted == "string":
            return _string(value, schema, path, self.repairs)
        return value

    def object(self, value: dict[str, Any], schema: Schema, path: str) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        closed = schema.get("additionalProperties") is False
        out: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key in properties:
                out[key] = self.value(item, properties[key], where, key)
            elif closed:
                shown = key if len(key) <= _PATH_KEY_MAX else key[:_PATH_KEY_MAX] + "…"
                self.repairs.append(Repair(UNKNOWN_PROPERTY,
                                           f"{path}.{shown}" if path else shown))
            else:
                out[key] = item
        return out


def _finite_float(text: str) -> float | None:
    """A number written in a string ("12", " 0.5 ", "1e3"); None when it is none."""
    text = text.strip()
    if len(text) > _NUMBER_TEXT_MAX or not _NUMBER_TEXT.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _integer(value: Any, path: str, name: str, repairs: list[Repair]) -> Any:
    if isinstance(value, bool):
        return value  # true is not 1: refused
    kind = INTEGRAL_FLOAT
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER_TEXT.fullmatch(text):
            number: Any = int(text)
        else:
            number = _finite_float(text)
            if number is None:
                return value
        kind = NUMERIC_STRING
    elif isinstance(value, float):
        number = value
    else:
        return value  # an int (out of range: refused), or not a number at all
    if isinstance(number, float):
        if not math.isfinite(number):
            return value
        if not number.is_integer():
            if name not in _REGISTERS:
                return value  # 1.5 for a connector id means nothing
            kind = ROUNDED_REGISTER
        number = round(number)
    if not INT64_MIN <= number <= INT64_MAX:
        return value
    repairs.append(Repair(kind, path))
    return number


def _number(value: Any, path: str, repairs: list[Repair]) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if len(text) > _NUMBER_TEXT_MAX:
        return value
    if text.casefold() in _NON_FINITE_TEXT:
        # a meter reading that says it has no value is still a reading, which telemetry
        # leaves out (and counts); refusing it would refuse the whole message, and a
        # session start with it
        number = float(text)
    elif _NUMBER_TEXT.fullmatch(text):
        number = float(text)  # "1e999" is inf, as the JSON decoder reads it
    else:
        return value
    repairs.append(Repair(NUMERIC_STRING, path))
    return number


def _string(value: Any, schema: Schema, path: str, repairs: list[Repair]) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "enum" in schema or "format" in schema \
                or (isinstance(value, float) and not math.isfinite(value)):
            return value
        repairs.append(Repair(NUMBER_AS_STRING, path))
        return repr(value) if isinstance(value, float) else str(value)
    if not isinstance(value, str):
        return value
    allowed = schema.get("enum")
    if isinstance(allowed, list) and value not in allowed:
        folded = value.strip().casefold()
        matches = [option for option in allowed
                   if isinstance(option, str) and option.casefold() == folded]
        if len(matches) == 1:
            repairs.append(Repair(ENUM_CASE, path))
            return matches[0]
        return value
    if schema.get("format") == "date-time":
        return _timestamp(value, path, repairs)
    return value


def _timestamp(value: str, path: str, repairs: list[Repair]) -> str:
    if _DATE_TIME.match(value):
        return value
    text = value.strip()
    # a full date and a time: a date alone does not say when
    if len(text) < 15 or len(text) > _NUMBER_TEXT_MAX:
        return value
    try:
        at = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        return value
    if at.tzinfo is None:
        repairs.append(Repair(NAIVE_TIMESTAMP, path))
        at = at.replace(tzinfo=UTC)
    else:
        repairs.append(Repair(TIMESTAMP_FORM, path))
    return at.isoformat().replace("+00:00", "Z")
