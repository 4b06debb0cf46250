"""YAML text -> validated pydantic model, with errors a site owner can act on.

Every problem names the source file, the line, the key path (``site.capacity_kw``)
and what is wrong. Pure: callers pass the text and a name for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    path: KeyPath
    line: int | None
    message: str

    def describe(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        key = format_path(self.path) or "(top level)"
        return f"{where}: {key}: {self.message}"


class InvalidDocument(ValueError):
    """A YAML document that cannot be used; ``str()`` lists every problem."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.describe(source) for p in problems))


def format_path(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_index(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    """Remember the 1-based line of every key and item below ``node``."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key: str | int = key_node.value
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag.endswith(":int"):
                key = int(key_node.value)
            _line_index(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_index(item, (*path, index), lines)


def _nearest_line(path: KeyPath, lines: dict[KeyPath, int]) -> int | None:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def parse_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        raise InvalidDocument(source, [Problem((), line, f"not valid YAML: {problem}")]) from None
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _line_index(node, (), lines)
    return data, lines


def problems_from(error: ValidationError, lines: dict[KeyPath, int]) -> list[Problem]:
    problems = []
    for item in error.errors():
        # pydantic appends the validator's name for unions and tagged types; keep real keys only
        path = tuple(
            p for p in item["loc"] if isinstance(p, int) or not str(p).startswith("function-")
        )
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the example configuration)"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif item["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        problems.append(Problem(path, _nearest_line(path, lines), message))
    return problems


def validate_yaml(text: str, source: str, model: type[ModelT]) -> ModelT:
    data, lines = parse_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidDocument(source, [Problem((), 1, "expected a mapping of keys to values")])
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidDocument(source, problems_from(error, lines)) from None
