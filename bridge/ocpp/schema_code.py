"""A JSON schema compiled to a validator by ``fastjsonschema``, with two changes to the code
it writes, both without a change in what is accepted or in the errors raised:

- An enum of strings is checked as one set lookup (``value in {...}``), not as a chain of
  ``isinstance(value, str) and value == "..."`` comparisons, one per member. OCPP's enums
  are long (22 measurands in 1.6, 40 in 2.0.1) and a MeterValues holds several: the chains
  were a fifth of a 1.6 MeterValues' validation.
- ``additionalProperties`` on a schema that is not an object's (the OCPP 1.6 schemas put
  ``"additionalProperties": false`` on every string enum) is dropped before compiling: it
  says nothing of a string, and ``fastjsonschema`` still writes a dict test for it.

Together a 1.6 MeterValues of five samples validates in about 6.3 µs instead of 9.1.
Schemas of a draft other than 4, 6 and 7 are compiled as the library does by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastjsonschema
from fastjsonschema.draft04 import CodeGeneratorDraft04
from fastjsonschema.draft06 import CodeGeneratorDraft06
from fastjsonschema.draft07 import CodeGeneratorDraft07
from fastjsonschema.ref_resolver import RefResolver

Validator = Callable[[Any], Any]

_OBJECT_KEYWORDS_ON_NON_OBJECTS = ("additionalProperties",)
_SCALAR_TYPES = frozenset({"string", "integer", "number", "boolean", "null"})
# keywords whose value is an instance, never a schema to walk into
_DATA_KEYWORDS = frozenset({"const", "default", "enum", "examples"})


def _string_enum_check(self: Any) -> None:
    """generate_enum for an enum of strings only: one set lookup; others as before."""
    enum = self._definition["enum"]
    if not (isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum)):
        self._generate_enum_as_library_does()
        return
    # a set display of constants after ``in`` is compiled into a frozenset constant
    members = "{" + ", ".join(repr(value) for value in enum) + "}"
    with self.l("if not (isinstance({variable}, str) and {variable} in {}):", members):
        self.exc("{name} must be one of {}", self.e(enum), rule="enum")


def _with_set_enums(base: type[Any]) -> type[Any]:
    return type(f"SetEnums{base.__name__}", (base,), {
        "generate_enum": _string_enum_check,
        "_generate_enum_as_library_does": base.generate_enum,
    })


_GENERATORS = {
    "draft-04": _with_set_enums(CodeGeneratorDraft04),
    "draft-06": _with_set_enums(CodeGeneratorDraft06),
    "draft-07": _with_set_enums(CodeGeneratorDraft07),
}


def without_object_keywords_on_scalars(schema: Any) -> Any:
    """A copy of ``schema`` without ``additionalProperties`` where the type is a scalar.
    Values that are data, not schemas (``const``, ``default``, ``enum``, ``examples``),
    are copied as they are."""
    if isinstance(schema, list):
        return [without_object_keywords_on_scalars(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: value if key in _DATA_KEYWORDS else without_object_keywords_on_scalars(value)
           for key, value in schema.items()}
    if isinstance(out.get("type"), str) and out["type"] in _SCALAR_TYPES:
        for keyword in _OBJECT_KEYWORDS_ON_NON_OBJECTS:
            out.pop(keyword, None)
    return out


def compile_validator(schema: dict[str, Any]) -> Validator:
    """The validator of ``schema``: raises ``fastjsonschema.JsonSchemaValueException`` on a
    violation, as ``fastjsonschema.compile(schema)`` would, with the same message."""
    version = str(schema.get("$schema", ""))
    generator_class = next((cls for draft, cls in _GENERATORS.items() if draft in version),
                           None)
    if generator_class is None:
        return fastjsonschema.compile(schema)  # type: ignore[no-any-return]
    schema = without_object_keywords_on_scalars(schema)
    resolver = RefResolver.from_schema(schema, handlers={}, store={})
    generator = generator_class(schema, resolver=resolver)
    namespace = generator.global_state
    exec(generator.func_code, namespace)  # noqa: S102 - code the library wrote from a schema
    return namespace[resolver.get_scope_name()]  # type: ignore[no-any-return]
