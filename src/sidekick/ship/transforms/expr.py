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
interpreter call. Everything else runs in ``cel-expr-python``, the bindings to Google's C++
CEL (``bench/ship/cel_choice.py`` measured the candidates; docs/transforms.md has the numbers).
When an expression reads the record only by field name, the interpreter is handed those fields
alone, so its cost does not grow with the record. Expressions are compiled and type-checked
when the transform is built: a syntax error, an unknown name or function, an invalid constant
regex, or a condition that cannot be a boolean is a ``ConfigError`` at start, naming
component, field and fix.

Left out: custom functions, and CEL's optional extensions (strings, math, encoders).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from cel_expr_python import cel

from sidekick.core.errors import ConfigError
from sidekick.core.ratelog import RateLimitedLog
from sidekick.ship.records import Record
from sidekick.ship.transforms import fastpath

log = logging.getLogger("sidekick.ship.transforms")
_ratelog = RateLimitedLog(log, 60.0)

VARIABLE = "record"
_ENV = cel.NewEnv(variables={VARIABLE: cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})
_CHECK_ENV = cel.NewEnv()
_EXAMPLE = 'e.g. record["url.path"] == "/healthz"'
_UNDECLARED = re.compile(r"undeclared reference to '([^']*)'")


def _first_error(exc: Exception) -> str:
    """The first message of a CEL compile error, without the position drawing."""
    text = str(exc)
    found = re.search(r"ERROR: <input>:(\d+:\d+): ([^\n]*)", text)
    if found is None:
        return text.splitlines()[0] if text else type(exc).__name__
    return f"at {found.group(1)}: {found.group(2)}"


def _compile(component: str, field: str, text: object) -> Any:
    where = f"transform {component!r}: {field}"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where} is empty; write a CEL expression, {_EXAMPLE}")
    try:
        expr = _ENV.compile(text)
    except RuntimeError as exc:
        unknown = _UNDECLARED.search(str(exc))
        if unknown is not None and not text.lstrip().startswith(unknown.group(1) + "("):
            raise ConfigError(
                f"{where} {text!r} uses unknown name {unknown.group(1)!r}; fields are read "
                f"from the variable {VARIABLE!r}, {_EXAMPLE}"
            ) from None
        raise ConfigError(
            f"{where} {text!r} is not valid CEL ({_first_error(exc)}); fix the expression, {_EXAMPLE}"
        ) from None
    for pattern in fastpath.regex_literals(text):
        check = _CHECK_ENV.compile(f"''.matches({_cel_string(pattern)})").eval()
        if check.type() == cel.Type.ERROR:
            raise ConfigError(
                f"{where}: regex {pattern!r} does not compile ({check.value()}); "
                "fix it (RE2 syntax: no look-around or back-references)"
            )
    return expr


def _cel_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _log_error(component: str, field: str, text: str, what: str, consequence: str) -> None:
    _ratelog.log(
        ("cel", component, field),
        logging.WARNING,
        "transform %r: %s %r could not be evaluated for a record (%s); %s",
        component,
        field,
        text,
        what,
        consequence,
    )


class _Failed:
    """Stands for a CEL error value when the library raised instead of returning one."""

    def __init__(self, message: str) -> None:
        self.message = message

    def value(self) -> str:
        return self.message

    def type(self) -> Any:
        return cel.Type.ERROR


class _Program:
    """A compiled expression, run with only the fields it reads when that is known."""

    def __init__(self, component: str, field: str, text: str) -> None:
        self.component = component
        self.field = field
        self.text = text
        self.expr = _compile(component, field, text)
        self.keys = fastpath.referenced_fields(text)
        self.errors = 0

    def run(self, record: Record) -> Any:
        """The CEL value for ``record``; a value CEL cannot take (a lone surrogate in a
        string) gives an error value like any other evaluation error."""
        keys = self.keys
        data = record if keys is None else {k: record[k] for k in keys if k in record}
        try:
            return self.expr.eval(data={VARIABLE: data})
        except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
            return _Failed(f"{type(exc).__name__}: {exc}")


class Condition(_Program):
    """A compiled CEL condition: ``mask(records)`` or ``test(record)``; errors count as false.

    ``fast`` says whether the condition runs as a Python closure rather than in CEL;
    ``errors`` counts evaluations that failed.
    """

    def __init__(self, component: str, field: str, text: str) -> None:
        super().__init__(component, field, text)
        kind = self.expr.return_type()
        if kind not in (cel.Type.BOOL, cel.Type.DYN):
            raise ConfigError(
                f"transform {self.component!r}: {field} {text!r} gives a value of type {kind.name().lower()}, "
                f"not a boolean; write a condition, {_EXAMPLE}"
            )
        fast = fastpath.compile_fast(text)
        self.fast = fast is not None
        # Three-valued: True, False, or None where CEL reports an error.
        self.evaluate = fast.one if fast is not None else self._evaluate_cel
        self._batch = fast.batch if fast is not None else None
        self._last: object = None  # the last failed evaluation's CEL error or non-boolean result

    def _evaluate_cel(self, record: Record) -> bool | None:
        value = self.run(record).value()
        if value is True or value is False:
            return value
        self._last = value
        return None

    def mask(self, records: list[Record]) -> list[bool | None]:
        """The condition for each record: True, False, or None where it could not be evaluated."""
        self._last = "a field is missing or has another type"
        batch = self._batch
        results = batch(records) if batch is not None else list(map(self.evaluate, records))
        failed = results.count(None)
        if failed:
            self.errors += failed
            last = self._last
            what = last if isinstance(last, str) else f"the result {last!r} is not a boolean"
            _log_error(
                self.component, self.field, self.text, what, "such records count as not matching"
            )
        return results

    def test(self, record: Record) -> bool:
        return self.mask([record])[0] is True


class Value(_Program):
    """A compiled CEL expression whose result becomes a field's value (``modify``'s ``cel:``)."""

    def evaluate(self, record: Record) -> tuple[bool, Any]:
        """``(True, value)``, or ``(False, None)`` when CEL reports an error (counted)."""
        value = self.run(record)
        if value.type() == cel.Type.ERROR:
            self.errors += 1
            _log_error(
                self.component, self.field, self.text, str(value.value()), "the field is left unset"
            )
            return False, None
        return True, value.plain_value()
