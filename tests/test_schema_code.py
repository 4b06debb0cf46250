"""The validators drbridge compiles (set lookups for string enums) accept and refuse exactly
what ``fastjsonschema.compile`` does, with the same errors, for every OCPP schema."""

from __future__ import annotations

import copy
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
    """Accepted, or refused with which error (on a copy: defaults are filled in place)."""
    try:
        validate(copy.deepcopy(payload))
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


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(schema_and_payload())
def test_the_same_payloads_are_accepted_and_refused_with_the_same_errors(
        case: tuple[tuple[str, str], Any]):
    (folder, name), payload = case
    ours, library = validators(folder, name)
    assert outcome(ours, payload) == outcome(library, payload)


def resolved(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def instance(node: dict[str, Any], root: dict[str, Any], path: tuple[Any, ...],
             enums: list[tuple[tuple[Any, ...], list[Any]]]) -> Any:
    """A valid instance of ``node`` with every property and one item per array; where an
    enum sits, its path and members go to ``enums``."""
    node = resolved(node, root)
    if "enum" in node:
        enums.append((path, node["enum"]))
        return node["enum"][0]
    kind = node.get("type")
    if kind == "object":
        return {key: instance(value, root, (*path, key), enums)
                for key, value in node.get("properties", {}).items()}
    if kind == "array":
        return [instance(node.get("items", {}), root, (*path, 0), enums)]
    if kind == "string":
        return {"date-time": "2026-12-05T01:00:00Z", "uri": "https://example.com/x"}.get(
            node.get("format", ""), "x" * max(node.get("minLength", 1), 1))
    if kind in ("integer", "number"):
        return max(min(1, node.get("maximum", 1)), node.get("minimum", 1) if kind == "integer"
                   else node.get("minimum", 0))
    return True if kind == "boolean" else None


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    document = copy.deepcopy(document)
    place = document
    for step in path[:-1]:
        place = place[step]
    place[path[-1]] = value
    return document


@pytest.mark.parametrize(("folder", "name"), NAMES)
def test_every_enum_of_every_schema_takes_and_refuses_what_the_librarys_does(
        folder: str, name: str):
    """Each enum, at whatever depth, in an otherwise valid request: its members, their
    other cases, a stranger and non-strings."""
    root = schema(folder, name)  # type: ignore[arg-type]
    ours, library = validators(folder, name)
    enums: list[tuple[tuple[Any, ...], list[Any]]] = []
    valid = instance(root, root, (), enums)
    assert outcome(ours, valid) == outcome(library, valid) == ("accepted",)
    for path, members in enums:
        for value in [*members, *(m.upper() for m in members if isinstance(m, str)),
                      *(m.lower() for m in members if isinstance(m, str)),
                      "Nope", 1, None, ["x"], {"a": 1}]:
            if not path:
                continue
            payload = replaced(valid, path, value)
            assert outcome(ours, payload) == outcome(library, payload), (path, value)


def places(document: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every object in a document with its path, the document first."""
    found = [(path, document)] if isinstance(document, dict) else []
    children = (document.items() if isinstance(document, dict)
                else enumerate(document) if isinstance(document, list) else ())
    for key, value in children:
        found += places(value, (*path, key))
    return found


@pytest.mark.parametrize(("folder", "name"), NAMES)
def test_a_request_without_any_one_of_its_keys_is_judged_as_the_library_does(
        folder: str, name: str):
    """Required keys, at any depth: each key of each object of a valid request left out."""
    root = schema(folder, name)  # type: ignore[arg-type]
    ours, library = validators(folder, name)
    valid = instance(root, root, (), [])
    for path, document in places(valid):
        for key in document:
            payload = copy.deepcopy(valid)
            place = payload
            for step in path:
                place = place[step]
            del place[key]
            assert outcome(ours, payload) == outcome(library, payload), (path, key)


def test_the_enums_walked_include_nested_ones():
    enums: list[tuple[tuple[Any, ...], list[Any]]] = []
    root = schema("v16", "MeterValues")
    instance(root, root, (), enums)
    assert ("meterValue", 0, "sampledValue", 0, "measurand") in [path for path, _ in enums]


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


def test_instances_in_a_schema_are_left_as_they_are():
    """const, default, enum and examples hold data: an object there keeps every key."""
    data = {"type": "string", "additionalProperties": False}
    given_schema = {"type": "object", "const": data, "default": data, "examples": [data],
                    "properties": {"a": {"type": "string", "additionalProperties": False}}}
    stripped = without_object_keywords_on_scalars(given_schema)
    assert stripped["const"] == stripped["default"] == stripped["examples"][0] == data
    assert stripped["properties"]["a"] == {"type": "string"}
    draft6 = {"$schema": "http://json-schema.org/draft-06/schema#", "const": data}
    assert outcome(compile_validator(draft6), dict(data)) == ("accepted",)


@pytest.mark.parametrize(("folder", "name"), NAMES)
def test_a_request_with_keys_it_should_not_have_is_judged_as_the_library_does(
        folder: str, name: str):
    """additionalProperties at any depth: one stranger, three (the error names them in the
    library's order), and a stranger next to a known key of the wrong type."""
    root = schema(folder, name)  # type: ignore[arg-type]
    ours, library = validators(folder, name)
    valid = instance(root, root, (), [])
    for path, _ in places(valid):
        for extra in ({"zz": 1}, {"zz": 1, "aa": [], "mm": None}):
            payload = copy.deepcopy(valid)
            place = payload
            for step in path:
                place = place[step]
            place.update(extra)
            assert outcome(ours, payload) == outcome(library, payload), (path, extra)
            for key in list(place):
                if key not in extra:
                    place[key] = {"wrong": "type"}
                    assert outcome(ours, payload) == outcome(library, payload), (path, key)
                    break


SHARING_SCHEMAS = [
    {"allOf": [{"properties": {"a": {"type": "integer"}}}, {"additionalProperties": False}]},
    {"type": "object", "properties": {"a": {}}, "patternProperties": {"^x": {}},
     "additionalProperties": False},
    {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "string"}},
    {"anyOf": [{"properties": {"a": {}}, "additionalProperties": False}, {"type": "string"}]},
]


@pytest.mark.parametrize("given_schema", SHARING_SCHEMAS)
def test_schemas_whose_objects_share_their_keys_keep_the_librarys_code(
        given_schema: dict[str, Any]):
    schema_4 = {"$schema": "http://json-schema.org/draft-04/schema#", **given_schema}
    ours, library = compile_validator(schema_4), fastjsonschema.compile(schema_4)
    for payload in ({"a": 1}, {"a": 1, "b": 2}, {"x1": 1}, {"b": "s"}, {"a": "s"}, "s", {}):
        assert outcome(ours, payload) == outcome(library, payload), payload


def test_known_keys_are_one_subset_test_in_the_code_written():
    validate = compile_validator(schema("v16", "MeterValues"))
    known = [value for name, value in validate.__globals__.items()
             if name.startswith("KNOWN_KEYS_")]
    assert frozenset({"value", "context", "format", "measurand", "phase", "location",
                      "unit"}) in known


def test_an_object_whose_defaults_are_filled_in_names_its_strangers_as_the_library_does():
    """2.0.1's UnitOfMeasure has defaults (unit, multiplier): the library copies the keys
    before filling them in, and its error lists the strangers in that set's order."""
    ours, library = validators("v201", "MeterValuesRequest")
    for n in range(60):
        extra = {f"x{n}": 1, f"vendor{n}": 2, f"y{n}": 3}
        payload = {"evseId": 1, "meterValue": [{"timestamp": "2026-12-05T01:00:00Z",
                                                "sampledValue": [{"value": 1.0,
                                                                  "unitOfMeasure": extra}]}]}
        assert outcome(ours, payload) == outcome(library, payload), extra


@pytest.mark.parametrize("given_schema", [
    # a property named as a keyword whose value is data: its schema is a schema all the same
    {"type": "object", "properties": {"default": {
        "type": "object", "properties": {"a": {}}, "patternProperties": {"^x": {}},
        "additionalProperties": False}}},
    {"type": "object", "definitions": {"enum": {"type": "object", "properties": {"a": {}},
                                                "patternProperties": {"^x": {}},
                                                "additionalProperties": False}},
     "properties": {"enum": {"$ref": "#/definitions/enum"}}},
    # additionalProperties false in other words, and allowed in other words
    *({"type": "object", "properties": {"a": {}}, "additionalProperties": falsy}
      for falsy in (None, 0, "", [], {}, True)),
])
@pytest.mark.parametrize("draft", ["draft-04", "draft-07"])
def test_schemas_the_library_reads_its_own_way_are_judged_as_it_judges(
        given_schema: dict[str, Any], draft: str):
    full = {"$schema": f"http://json-schema.org/{draft}/schema#", **given_schema}
    ours, library = compile_validator(full), fastjsonschema.compile(full)
    for payload in ({"a": 1}, {"a": 1, "b": 2}, {"default": {"x1": 1}},
                    {"default": {"a": 1, "b": 1}}, {"enum": {"x1": 1}}, {"enum": {"b": 1}}):
        assert outcome(ours, payload) == outcome(library, payload), payload
