"""``modify``: ``rename``, ``copy``, ``set`` and ``remove`` fields, in that order.

- ``rename: {old: new}`` moves a field (a missing one is skipped);
- ``copy: {from: to}`` copies a field's value (lists and maps are copied too);
- ``set: {field: value}`` where value is
  - a literal (number, bool, null, list, or a string without braces),
  - a template string, ``"{k8s.pod.name}/{http.request.method}"``: each ``{field}`` is that
    field's value as text (``{{`` and ``}}`` are literal braces), or
  - ``{cel: 'EXPRESSION'}``, whose result becomes the value;
- ``remove: [field, ...]``.

A template naming a missing field, or a CEL expression that cannot be evaluated, leaves its
field as it was, counted as ``set_errors`` (and logged once a minute), never an error storm.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms.base import DEFAULT, BaseTransform, Record
from sidekick.ship.transforms.expr import Value

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class ModifyOptions(msgspec.Struct, forbid_unknown_fields=True):
    rename: dict[str, str] = {}
    copy: dict[str, str] = {}
    set: dict[str, Any] = {}
    remove: list[str] = []


class Template:
    """``"{a}/{b}"`` rendered against a record; ``None`` when a named field is missing."""

    def __init__(self, component: str, field: str, text: str) -> None:
        self.parts: list[tuple[bool, str]] = []  # (is_field, text)
        pos = 0
        literal: list[str] = []
        for m in _PLACEHOLDER.finditer(text):
            literal.append(text[pos : m.start()])
            pos = m.end()
            token = m.group()
            if token in ("{{", "}}"):
                literal.append(token[0])
            elif m.group(1) is None or not m.group(1).strip():
                raise ConfigError(
                    f"transform {component!r}: set.{field} template {text!r} has an unmatched "
                    "or empty brace; write {field.name}, or {{ and }} for literal braces"
                )
            else:
                self.parts.append((False, "".join(literal)))
                literal = []
                self.parts.append((True, m.group(1).strip()))
        literal.append(text[pos:])
        self.parts.append((False, "".join(literal)))
        self.fields = [t for is_field, t in self.parts if is_field]

    def render(self, record: Record) -> str | None:
        out: list[str] = []
        for is_field, text in self.parts:
            if not is_field:
                out.append(text)
                continue
            if text not in record:
                return None
            out.append(_as_text(record[text]))
        return "".join(out)


def _as_text(value: object) -> str:
    if type(value) is str:
        return value
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int | float):
        return str(value)
    return msgspec.json.encode(value).decode()


class ModifyTransform(BaseTransform):
    kind = "modify"
    Options = ModifyOptions

    def __init__(self, name: str, options: ModifyOptions) -> None:
        super().__init__(name, options)
        if not (options.rename or options.copy or options.set or options.remove):
            raise ConfigError(
                f"transform {name!r} (modify): nothing to do; give set:, rename:, copy: or remove:"
            )
        self.rename = list(options.rename.items())
        self.copy = list(options.copy.items())
        self.remove = list(options.remove)
        self.literals: list[tuple[str, Any]] = []
        self.templates: list[tuple[str, Template]] = []
        self.values: list[tuple[str, Value]] = []
        for field, value in options.set.items():
            if isinstance(value, dict):
                if set(value) != {"cel"} or not isinstance(value["cel"], str):
                    raise ConfigError(
                        f"transform {name!r} (modify): set.{field} is a map other than "
                        "{cel: 'EXPRESSION'}; give a literal, a template or {cel: ...}"
                    )
                self.values.append((field, Value(name, f"set.{field}", value["cel"])))
            elif isinstance(value, str) and ("{" in value or "}" in value):
                self.templates.append((field, Template(name, field, value)))
            else:
                self.literals.append((field, value))

    def process(self, records: list[Record]) -> dict[str, list[Record]]:
        errors = 0
        for r in records:
            for old, new in self.rename:
                if old in r:
                    r[new] = r.pop(old)
            for src, dst in self.copy:
                if src in r:
                    value = r[src]
                    r[dst] = copy.deepcopy(value) if isinstance(value, list | dict) else value
            for field, literal in self.literals:
                r[field] = copy.deepcopy(literal) if isinstance(literal, list) else literal
            for field, template in self.templates:
                text = template.render(r)
                if text is None:
                    errors += 1
                else:
                    r[field] = text
            for field, value in self.values:
                ok, result = value.evaluate(r)
                if ok:
                    r[field] = result
                else:
                    errors += 1
            for field in self.remove:
                r.pop(field, None)
        if errors:
            self._add("set_errors", errors)
        self._count(len(records), len(records), 0)
        return {DEFAULT: records}
