"""What every OCPP version shares on the wire: payloads, the JSON schemas, times.

- :func:`validator`: the compiled ``fastjsonschema`` validator of one of the JSON schemas
  the ``ocpp`` package ships, per version folder (``v16``, ``v201``, ``v21``), compiled once
  (:func:`~bridge.ocpp.schema_code.compile_validator`: string enums as set lookups);
  integers bounded to 64 bits (:func:`~bridge.ocpp.leniency.bounded_schema`).
- :func:`format_time`, :func:`now_iso`: times as the wire writes them (RFC 3339, ``Z``);
  :func:`parse_time`: a station's time, read leniently: one without offset is UTC, as
  OCPP times are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Literal

from bridge.ocpp.leniency import bounded_schema
from bridge.ocpp.schema_code import compile_validator

Payload = dict[str, Any]  # a request's or an answer's payload, as JSON decodes it

# The ``ocpp`` package's folders of JSON schemas (ocpp/<folder>/schemas/<name>.json), one
# per OCPP version drbridge speaks.
SchemaSet = Literal["v16", "v201", "v21"]

# The heartbeat interval a BootNotification is answered with (seconds), in every version.
HEARTBEAT_INTERVAL_S = 300


@cache
def schema(schemas: SchemaSet, name: str) -> Payload:
    """The JSON schema ``name`` (``MeterValues``, ``MeterValuesRequest``) of a version."""
    text = resources.files("ocpp").joinpath(schemas, "schemas", f"{name}.json").read_text(
        "utf-8")
    loaded = json.loads(text)
    loaded.pop("$id", None)  # a urn: fastjsonschema would try to resolve its references there
    return bounded_schema(loaded)  # type: ignore[no-any-return]


def action_names(schemas: SchemaSet, request_suffix: str) -> frozenset[str]:
    """Every action of a version (both directions), named as its request schemas are:
    ``MeterValues.json`` in 1.6 (suffix ""), ``MeterValuesRequest.json`` in 2.x. (The
    package's ``Action`` enums list the same names, but importing one loads the whole
    version's message classes and jsonschema: about 11 MB the bridge never uses.)"""
    folder = resources.files("ocpp").joinpath(schemas, "schemas")
    names = (entry.name.removesuffix(".json") for entry in folder.iterdir()
             if entry.name.endswith(".json"))
    if request_suffix:
        return frozenset(name.removesuffix(request_suffix) for name in names
                         if name.endswith(request_suffix))
    return frozenset(name for name in names if not name.endswith("Response"))


@cache
def validator(schemas: SchemaSet, name: str) -> Callable[[Payload], Any]:
    """The compiled validator of a schema; raises JsonSchemaValueException on a violation."""
    return compile_validator(schema(schemas, name))


def format_time(at: datetime) -> str:
    """A time as the wire writes it: ISO 8601 with ``Z`` for UTC."""
    return at.isoformat().replace("+00:00", "Z")


def now_iso() -> str:
    return format_time(datetime.now(UTC))


def parse_time(text: Any) -> datetime | None:
    """A time a station sent, timezone-aware: without an offset it is UTC; None when it
    is no time."""
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
