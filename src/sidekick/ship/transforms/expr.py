"""CEL conditions and computed values, compiled once when a transform is built.

The record is the CEL variable ``record``, a map of dotted field names, so fields are read by
index: ``record["url.path"]``, ``record["http.response.status_code"] >= 500``. Whether a
field is there is asked with ``"url.path" in record``.

**A condition that cannot be evaluated is false.** A missing field, or a value of a type the
operator does not take (``record["status"] >= 500`` on the string ``"500"``), makes CEL
report an error rather than a value; so does a result that is not a boolean. Such a record
counts as not matching: a ``drop:`` keeps it, a ``keep:`` drops it, a route branch does not
take it. Each such evaluation is counted (``condition_errors``) and logged once per minute per
component, never once per record. CEL's ``&&`` and ``||`` absorb errors as the language says:
``"x" in record && record["x"] == 1`` is plainly false when ``x`` is missing.

Expressions go through two paths. Simple conditions (see :mod:`.fastpath`) are compiled to
Python closures that agree with CEL (a property test holds them to it) at a fraction of an
interpreter call; everything else runs in the CEL library (``common-expression-language``,
the Rust ``cel`` crate's Python bindings; ``bench/ship/cel_choice.py`` measured the
candidates). Expressions are compiled when the transform is built, so a syntax error or an
unknown variable is a ``ConfigError`` at start, naming component, field and fix.

Left out: CEL's static type checking (the record's fields are not declared, so there is
nothing to check against) and custom functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import cel

from sidekick.core.errors import ConfigError
from sidekick.core.ratelog import RateLimitedLog
from sidekick.ship.records import Record
from sidekick.ship.transforms import fastpath

log = logging.getLogger("sidekick.ship.transforms")
_ratelog = RateLimitedLog(log, 60.0)

VARIABLE = "record"
# How CEL errors (missing key, no such overload, non-boolean result) are told from bugs.
_EVAL_ERRORS = (KeyError, TypeError, ValueError, RuntimeError, IndexError, OverflowError)


def _compile(component: str, field: str, text: str) -> Any:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            f"transform {component!r}: {field} is empty; "
            f'write a CEL expression such as record["url.path"] == "/healthz"'
        )
    try:
        program = cel.compile(text)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"transform {component!r}: {field} {text!r} is not valid CEL ({first}); "
            f'fix the expression, e.g. record["url.path"] == "/healthz"'
        ) from None
    unknown = sorted(set(program.variables()) - {VARIABLE})
    if unknown:
        raise ConfigError(
            f"transform {component!r}: {field} {text!r} uses unknown name {unknown[0]!r}; "
            f'fields are read from the variable {VARIABLE!r}, e.g. record["url.path"]'
        )
    return program


class Condition:
    """A compiled CEL condition: ``test(record)`` or ``mask(records)``, errors count as false.

    ``fast`` says whether the condition runs as a Python closure rather than in CEL.
    """

    def __init__(self, component: str, field: str, text: str) -> None:
        self.component = component
        self.field = field
        self.text = text
        self._program = _compile(component, field, text)
        self.errors = 0
        closure = fastpath.compile_condition(text)
        self.fast = closure is not None
        # Three-valued: True, False, or None when CEL would report an error.
        self.evaluate: Callable[[Record], bool | None] = (
            closure if closure is not None else self._evaluate_cel
        )

    def _evaluate_cel(self, record: Record) -> bool | None:
        try:
            result = self._program.execute({VARIABLE: record})
        except _EVAL_ERRORS as exc:
            self._note(exc)
            return None
        if result is True or result is False:
            return result
        self._note(TypeError(f"the result {result!r} is not a boolean"))
        return None

    def _note(self, exc: BaseException) -> None:
        _ratelog.log(
            ("condition", self.component, self.field),
            logging.WARNING,
            "transform %r: %s %r could not be evaluated for a record (%s: %s); "
            "such records count as not matching",
            self.component,
            self.field,
            self.text,
            type(exc).__name__,
            exc,
        )

    def mask(self, records: list[Record]) -> list[bool | None]:
        """The condition for each record: True, False, or None where it could not be evaluated."""
        results = list(map(self.evaluate, records))
        failed = results.count(None)
        if failed:
            self.errors += failed
            if self.fast:
                self._note(KeyError("a field is missing or has another type"))
        return results

    def test(self, record: Record) -> bool:
        return self.mask([record])[0] is True


class Value:
    """A compiled CEL expression whose result becomes a field's value (``modify``'s ``cel:``)."""

    def __init__(self, component: str, field: str, text: str) -> None:
        self.component = component
        self.field = field
        self.text = text
        self._program = _compile(component, field, text)
        self.errors = 0

    def evaluate(self, record: Record) -> tuple[bool, Any]:
        """``(True, value)``, or ``(False, None)`` when CEL reports an error (counted)."""
        try:
            return True, self._program.execute({VARIABLE: record})
        except _EVAL_ERRORS as exc:
            self.errors += 1
            _ratelog.log(
                ("value", self.component, self.field),
                logging.WARNING,
                "transform %r: %s %r could not be evaluated for a record (%s: %s); "
                "the field is left unset",
                self.component,
                self.field,
                self.text,
                type(exc).__name__,
                exc,
            )
            return False, None
