"""Frames are decoded as ``json.loads`` decodes them: the same value, or the same error."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ocpp.framing import decode_frame

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


def outcome(decode: Any, raw: Any) -> tuple[str, Any]:
    try:
        return "value", decode(raw)
    except Exception as error:  # noqa: BLE001 - the error is what is compared
        return type(error).__name__, str(error)


texts = st.one_of(
    json_values.map(json.dumps),
    st.lists(json_values).map(json.dumps),
    # frames bent: trailing or leading text, cut short, a second value, whitespace
    st.tuples(st.lists(json_values).map(json.dumps),
              st.sampled_from(["", " ", "\n", "]", "x", "[]", " [1]", ",", "\ufeff"]),
              st.sampled_from(["", " ", "\n", "\ufeff", "x"]))
    .map(lambda parts: parts[2] + parts[0] + parts[1]),
    st.lists(json_values).map(json.dumps).flatmap(
        lambda text: st.integers(0, len(text)).map(lambda cut: text[:cut])),
    st.text(),
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(texts)
def test_a_frame_decodes_to_what_json_loads_gives(raw: str):
    assert outcome(decode_frame, raw) == outcome(json.loads, raw)
    encoded = raw.encode("utf-8", "surrogatepass")
    assert outcome(decode_frame, encoded) == outcome(json.loads, encoded)


def test_frames_nested_too_deep_raise_what_loads_raises():
    deep = "[" * 100_000 + "]" * 100_000
    assert outcome(decode_frame, deep)[0] == outcome(json.loads, deep)[0] == "RecursionError"
