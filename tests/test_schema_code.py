"""The validators drbridge compiles (set lookups for string enums) accept and refuse exactly
what ``fastjsonschema.compile`` does, with the same errors, for every OCPP schema."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.ocpp.schema_code import compile_validator, without_object_keywords_on_scalars
from bridge.ocpp.wire import schema

FOLDERS = ("v16", "v201", "v21")
NAMES = sorted((folder, entry.name.removesuffix(".json"))
               for folder in FOLDERS
               for entry in resources.files("ocpp").joinpath(folder, "schemas").iterdir()
               if entry.name.endswith(".json"))


def vocabulary(node: Any, keys: set[str], strings: set[str]) -> None:
    """Every property name and every string enum member of a schema."""
    if isinstance(node, list):
        for item in node:
            vocabulary(item, keys, strings)
    elif isinstance(node, dict):
        keys.update(node.get("properties", {}))
        strings.update(value for value in node.get("enum", ()) if isinstance(value, str))
        for value in node.values():
            vocabulary(value, keys, strings)


@cache
def validators(folder: str, name: str) -> tuple[Any, Any]:
    """drbridge's validator of a schema and the library's."""
    loaded = schema(folder, name)  # type: ignore[arg-type]
    return compile_validator(loaded), fastjsonschema.compile(loaded)


def outcome(validate: Any, payload: Any) -> tuple[str, ...]:
    try:
        validate(payload)
    except fastjsonschema.JsonSchemaValueException as error:
        return ("refused", error.message, str(error.rule), str(error.name))
    return ("accepted",)


@st.composite
def schema_and_payload(draw: st.DrawFn) -> tuple[tuple[str, str], Any]:
    folder, name = draw(st.sampled_from(NAMES))
    keys: set[str] = set()
    strings: set[str] = {"2026-12-05T01:00:00Z", "2026-12-05T01:00:00.5+01:00", "x"}
    vocabulary(schema(folder, name), keys, strings)  # type: ignore[arg-type]
    members = sorted(strings)
    scalars = (st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5)
               | st.sampled_from(members) | st.sampled_from(members).map(str.lower))
    values = st.recursive(scalars, lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(sorted(keys) or ["k"]), inner, max_size=8)),
        max_leaves=40)
    payload = draw(st.dictionaries(st.sampled_from(sorted(keys) or ["k"]), values,
                                   max_size=10))
    return (folder, name), payload


@settings(max_examples=500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(schema_and_payload())
def test_the_same_payloads_are_accepted_and_refused_with_the_same_errors(
        case: tuple[tuple[str, str], Any]):
    (folder, name), payload = case
    ours, library = validators(folder, name)
    assert outcome(ours, payload) == outcome(library, payload)


@pytest.mark.parametrize(("folder", "name"), NAMES)
def test_every_ocpp_schema_compiles_and_accepts_each_enum_member_where_the_library_does(
        folder: str, name: str):
    loaded = schema(folder, name)  # type: ignore[arg-type]
    ours, library = validators(folder, name)
    # the enum members alone, each as a whole payload, and each under each property
    keys: set[str] = set()
    strings: set[str] = set()
    vocabulary(loaded, keys, strings)
    for member in sorted(strings):
        for payload in (member, {key: member for key in sorted(keys)},
                        {key: member.upper() for key in sorted(keys)}):
            assert outcome(ours, payload) == outcome(library, payload)


def test_a_string_enum_is_one_set_lookup_in_the_code_written():
    source = json.dumps(schema("v16", "MeterValues"))
    assert "Power.Active.Import" in source
    validate = compile_validator(schema("v16", "MeterValues"))
    # the enum's members are one frozenset constant of the validator's code, not a chain
    constants = validate.__code__.co_consts
    assert any(isinstance(c, frozenset) and "Power.Active.Import" in c for c in constants)


def test_object_keywords_go_from_scalar_schemas_only():
    given_schema = {"type": "object", "additionalProperties": False, "properties": {
        "unit": {"type": "string", "enum": ["W"], "additionalProperties": False},
        "both": {"type": ["string", "null"], "additionalProperties": False}}}
    assert without_object_keywords_on_scalars(given_schema) == {
        "type": "object", "additionalProperties": False, "properties": {
            "unit": {"type": "string", "enum": ["W"]},
            "both": {"type": ["string", "null"], "additionalProperties": False}}}
