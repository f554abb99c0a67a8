"""Simple CEL conditions run as Python closures instead of interpreter calls.

A CEL interpreter call costs ~10 µs per record, most of it converting the record into CEL
values; ``record["url.path"] == "/healthz"`` as a Python closure costs ~0.1 µs. This module
parses a small subset of CEL itself and compiles it to a closure that returns ``True``,
``False``, or ``None`` where CEL would give an error (a missing field, a wrong type):

- a field: ``record["dotted.name"]`` or ``record.name``;
- ``FIELD == LIT``, ``FIELD != LIT`` (either side), LIT a string, number, bool or ``null``;
- ``FIELD < <= > >= NUMBER-or-STRING`` (either side);
- ``FIELD in [LIT, ...]``;
- ``FIELD.matches("regex")`` where the regex means the same in RE2 and in Python ``re``
  (plain syntax; ``\\d \\w \\s \\b`` are ASCII, ``$`` is the very end, as in RE2);
- ``"name" in record``, ``has(record.name)``, ``true``, ``false``;
- ``&&``, ``||``, ``!`` and parentheses over these, with CEL's error absorption
  (``false && error`` is false, ``true || error`` is true).

Semantics follow CEL's heterogeneous equality: values of different kinds are unequal
(``"500" == 500`` is false, ``true == 1`` is false), ints and doubles compare by value, and an
ordering between kinds is an error. Anything else (functions, arithmetic, string escapes other
than ``\\\\ \\" \\' \\n \\t \\r``, regex features outside the common subset) is left to CEL:
``compile_condition`` returns ``None``. A property test holds the closures to the CEL library's
answers on random records and conditions.

``referenced_fields`` serves the CEL path: when an expression only reads named fields, the
interpreter is given a dict of those fields alone, which is what makes its per-record cost
independent of the record's size.

Left out: ``size``, ``startsWith``/``endsWith``/``contains`` and other functions, arithmetic,
uint and bytes literals; they run in CEL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from sidekick.ship.records import Record

Closure = Callable[[Record], bool | None]
_MISSING: Any = object()

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<string>[rR]?(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'))
    |(?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\],.\-+*/%?:{}])
    """,
    re.VERBOSE,
)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}


class _Unsupported(Exception):
    """The expression is outside the fast subset; CEL runs it."""


Token = tuple[
    str, Any
]  # (kind, value): ("string", "x"), ("number", 5), ("ident", "in"), ("op", "==")


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _Unsupported(text[pos:])
        pos = m.end()
        kind = m.lastgroup
        value = m.group()
        if kind == "space":
            continue
        if kind == "string":
            out.append(("string", _string(value)))
        elif kind == "number":
            out.append(("number", _number(value)))
        else:
            assert kind is not None
            out.append((kind, value))
    out.append(("end", None))
    return out


def _string(lit: str) -> str:
    if lit[0] in "rR":
        return lit[2:-1]
    body = lit[1:-1]
    if "\\" not in body:
        return body
    chars: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            esc = _ESCAPES.get(body[i + 1])
            if esc is None:
                raise _Unsupported(body[i : i + 2])
            chars.append(esc)
            i += 2
        else:
            chars.append(c)
            i += 1
    return "".join(chars)


def _number(lit: str) -> int | float:
    if lit[-1] in "uU":
        raise _Unsupported(lit)
    if any(c in lit for c in ".eE"):
        return float(lit)
    value = int(lit)
    if value > 2**63 - 1:
        raise _Unsupported(lit)
    return value


# Whether a value is a CEL number: ints beyond int64 are not CEL values and never match.
_NUMBER = (
    "(type({v}) is float or (type({v}) is int and "
    "-9223372036854775808 <= {v} < 9223372036854775808))"
)
# How ``LIT op FIELD`` reads as ``FIELD op' LIT``.
_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


class _Parser:
    """Recursive descent over the subset; each method returns Python source over the record ``r``.

    The source is an expression giving True, False or None. It refers to values only through
    constants (``_c1``...) and temporaries (``_v1``...): no text of the condition is pasted in.
    """

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.consts: dict[str, object] = {"_M": _MISSING}
        self.temps = 0

    def const(self, value: object) -> str:
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    def temp(self) -> str:
        self.temps += 1
        return f"_v{self.temps}"

    def peek(self, offset: int = 0) -> Token:
        return self.toks[min(self.i + offset, len(self.toks) - 1)]

    def take(self, kind: str, value: object = None) -> Any:
        tok = self.toks[self.i]
        if tok[0] != kind or (value is not None and tok[1] != value):
            raise _Unsupported(tok)
        self.i += 1
        return tok[1]

    def at(self, kind: str, value: object = None) -> bool:
        tok = self.peek()
        return tok[0] == kind and (value is None or tok[1] == value)

    def parse(self) -> str:
        code = self.or_()
        self.take("end")
        return code

    def or_(self) -> str:
        code = self.and_()
        while self.at("op", "||"):
            self.i += 1
            a, b = self.temp(), self.temp()
            right = self.and_()
            code = (
                f"(True if ({a} := {code}) is True or ({b} := {right}) is True "
                f"else (None if {a} is None or {b} is None else False))"
            )
        return code

    def and_(self) -> str:
        code = self.unary()
        while self.at("op", "&&"):
            self.i += 1
            a, b = self.temp(), self.temp()
            right = self.unary()
            code = (
                f"(False if ({a} := {code}) is False or ({b} := {right}) is False "
                f"else (None if {a} is None or {b} is None else True))"
            )
        return code

    def unary(self) -> str:
        if self.at("op", "!"):
            self.i += 1
            # ``!`` binds tighter than comparisons: only ``!(...)``, ``!!x`` and ``!has(...)``.
            if not (self.at("op", "(") or self.at("op", "!") or self.at("ident", "has")):
                raise _Unsupported("!")
            a = self.temp()
            return f"(None if ({a} := {self.unary()}) is None else not {a})"
        return self.primary()

    def primary(self) -> str:
        if self.at("op", "("):
            self.i += 1
            inner = self.or_()
            self.take("op", ")")
            return inner
        constant = self.at("ident", "true") or self.at("ident", "false")
        if constant and not (self.peek(1)[0] == "op" and self.peek(1)[1] in _FLIP):
            return "True" if self.take("ident") == "true" else "False"
        if self.at("ident", "has"):
            self.i += 1
            self.take("op", "(")
            self.take("ident", "record")
            self.take("op", ".")
            key = self.take("ident")
            self.take("op", ")")
            return f"({self.const(key)} in r)"
        if (
            self.at("string")
            and self.peek(1) == ("ident", "in")
            and self.peek(2) == ("ident", "record")
        ):
            key = self.take("string")
            self.i += 2
            return f"({self.const(key)} in r)"
        if self.at("ident", "record"):
            return self.after_field(self.field())
        lit = self.literal()
        op = self.take("op")
        if op not in _FLIP:
            raise _Unsupported(op)
        return self.compare(self.field(), _FLIP[op], lit)

    def field(self) -> str:
        self.take("ident", "record")
        if self.at("op", "."):
            self.i += 1
            key: str = self.take("ident")
            if self.at("op", "("):
                raise _Unsupported("method on record")
            return key
        self.take("op", "[")
        key = self.take("string")
        self.take("op", "]")
        return key

    def after_field(self, key: str) -> str:
        if self.at("op", "."):
            self.i += 1
            self.take("ident", "matches")
            self.take("op", "(")
            pattern = self.take("string")
            self.take("op", ")")
            v = self.temp()
            search = self.const(python_regex(pattern).search)
            return (
                f"(None if type({v} := r.get({self.const(key)}, _M)) is not str "
                f"else {search}({v}) is not None)"
            )
        if self.at("ident", "in"):
            self.i += 1
            self.take("op", "[")
            items = [self.literal()]
            while self.at("op", ","):
                self.i += 1
                items.append(self.literal())
            self.take("op", "]")
            return self.in_list(key, items)
        op = self.take("op")
        if op not in _FLIP:
            raise _Unsupported(op)
        return self.compare(key, op, self.literal())

    def literal(self) -> object:
        negative = False
        if self.at("op", "-"):
            self.i += 1
            negative = True
            if not self.at("number"):
                raise _Unsupported("-")
        kind, value = self.peek()
        self.i += 1
        if kind == "number":
            return -value if negative else value
        if kind == "string":
            return value
        if kind == "ident" and value in ("true", "false"):
            return value == "true"
        if kind == "ident" and value == "null":
            return None
        raise _Unsupported((kind, value))

    def equals(self, v: str, lit: object) -> str:
        """Source for CEL ``v == lit``: kinds must agree, ints and doubles compare by value."""
        if lit is None:
            return f"({v} is None)"
        if isinstance(lit, bool):
            return f"({v} is {lit})"
        c = self.const(lit)
        if isinstance(lit, str):
            return f"({v} == {c})"  # a str equals no value of another kind a record holds
        return f"({v} == {c} if {_NUMBER.format(v=v)} else False)"

    def compare(self, key: str, op: str, lit: object) -> str:
        v = self.temp()
        get = f"({v} := r.get({self.const(key)}, _M)) is _M"
        if op in ("==", "!="):
            test = self.equals(v, lit)
            return f"(None if {get} else {test if op == '==' else f'not {test}'})"
        if isinstance(lit, bool) or lit is None:
            raise _Unsupported("ordering of bool or null")
        if isinstance(lit, float) and math.isnan(lit):
            raise _Unsupported("NaN literal")
        kind = f"type({v}) is str" if isinstance(lit, str) else _NUMBER.format(v=v)
        return f"(None if {get} or not {kind} else {v} {op} {self.const(lit)})"

    def in_list(self, key: str, items: list[object]) -> str:
        v = self.temp()
        get = f"({v} := r.get({self.const(key)}, _M)) is _M"
        if all(isinstance(i, str) for i in items):
            c = self.const(frozenset(items))
            return f"(None if {get} else ({v} in {c} if type({v}) is str else False))"
        tests = " or ".join(self.equals(v, i) for i in items)
        return f"(None if {get} else ({tests}))"


_RE_ESCAPES_OK = set("dDwWbB.\\-/[](){}*+?|^$tn")
_RE2_SPACE = "\\t\\n\\f\\r "


def python_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` as a Python regex that matches what RE2 matches, or ``_Unsupported``."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 >= len(pattern):
                raise _Unsupported(pattern)
            e = pattern[i + 1]
            if e == "s":
                out.append(_RE2_SPACE if in_class else f"[{_RE2_SPACE}]")
            elif e == "S" and not in_class:
                out.append(f"[^{_RE2_SPACE}]")
            elif e in _RE_ESCAPES_OK and not (in_class and e in "bB"):
                out.append(c + e)
            else:
                raise _Unsupported(pattern)
            i += 2
            continue
        if in_class:
            if c == "]" and not (out and out[-1] in ("[", "[^")):
                in_class = False
            elif c == "[":
                raise _Unsupported(pattern)  # POSIX classes and nested sets differ
            out.append(c)
        elif c == "[":
            in_class = True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
                continue
            out.append(c)
        elif c == "$":
            out.append(r"\Z")
        elif c == "(" and pattern.startswith("(?", i) and not pattern.startswith("(?:", i):
            raise _Unsupported(pattern)
        else:
            out.append(c)
        i += 1
    if in_class:
        raise _Unsupported(pattern)
    try:
        return re.compile("".join(out), re.ASCII)
    except re.error:
        raise _Unsupported(pattern) from None


class FastCondition:
    """A condition compiled to Python. ``one(record)`` and ``batch(records)`` give, per
    record, True, False, or None where CEL reports an error."""

    def __init__(self, source: str, consts: dict[str, object]) -> None:
        self.source = source
        namespace: dict[str, Any] = dict(consts)
        code = (
            f"def one(r):\n    return {source}\n"
            f"def batch(records):\n    return [{source} for r in records]\n"
        )
        exec(compile(code, "<ship condition>", "exec"), namespace)
        self.one: Closure = namespace["one"]
        self.batch: Callable[[list[Record]], list[bool | None]] = namespace["batch"]


def compile_fast(text: str) -> FastCondition | None:
    """``text`` compiled to Python, equal to CEL on it; ``None`` when outside the subset."""
    try:
        parser = _Parser(text)
        source = parser.parse()
    except (_Unsupported, IndexError, ValueError):
        return None
    return FastCondition(source, parser.consts)


def compile_condition(text: str) -> Closure | None:
    """A one-record closure equal to CEL on ``text``, or ``None`` outside the subset."""
    fast = compile_fast(text)
    return None if fast is None else fast.one


def regex_literals(text: str) -> list[str]:
    """The string arguments of ``.matches(...)`` in ``text``, to be checked when built."""
    try:
        toks = _tokens(text)
    except (_Unsupported, ValueError):
        return []
    return [
        toks[i + 3][1]
        for i in range(len(toks) - 4)
        if toks[i] == ("op", ".")
        and toks[i + 1] == ("ident", "matches")
        and toks[i + 2] == ("op", "(")
        and toks[i + 3][0] == "string"
        and toks[i + 4] == ("op", ")")
    ]


def referenced_fields(text: str) -> frozenset[str] | None:
    """The field names ``text`` reads, when it reads the record only by name; else ``None``."""
    try:
        toks = _tokens(text)
    except (_Unsupported, ValueError):
        return None

    def at(i: int) -> Token:
        return toks[i] if 0 <= i < len(toks) else ("end", None)

    keys: set[str] = set()
    for i, tok in enumerate(toks):
        if tok != ("ident", "record"):
            continue
        before, after = at(i - 1), at(i + 1)
        if before == ("op", "."):
            return None  # a member called record of something else
        indexed = after == ("op", "[") and at(i + 2)[0] == "string" and at(i + 3) == ("op", "]")
        selected = after == ("op", ".") and at(i + 2)[0] == "ident" and at(i + 3) != ("op", "(")
        if indexed or selected:
            keys.add(at(i + 2)[1])
        elif before == ("ident", "in") and at(i - 2)[0] == "string":
            keys.add(at(i - 2)[1])
        else:
            return None
    return frozenset(keys)
