"""The fast path agrees with the CEL library, and covers the simple conditions it promises."""

from __future__ import annotations

import json
import math
from typing import Any

from cel_expr_python import cel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidekick.ship.transforms.fastpath import (
    compile_condition,
    compile_fast,
    python_regex,
    referenced_fields,
)

ENV = cel.NewEnv(variables={"record": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})

NAMES = ["a", "b.c", "url.path"]
TEXT = st.text(alphabet="ab/.1 \n", max_size=4)
INTS = st.one_of(st.integers(-3, 3), st.sampled_from([2**63 - 1, -(2**63), 500]))
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 2.5, 500.0, math.inf, -math.inf, math.nan]),
    st.floats(-5, 5, allow_nan=False),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2))
RECORDS = st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=3)


def cel_literal(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value) if "." in repr(value) or "e" in repr(value) else repr(value) + ".0"
    return str(value)


LITERALS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 2.5, -1.5, 500.0]),
    TEXT,
)
ORDERED = st.one_of(st.integers(-3, 3), st.sampled_from([0.0, 2.5, -1.5]), TEXT)


@st.composite
def fields(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from([*NAMES, "missing"]))
    return f'record["{name}"]' if "." in name or draw(st.booleans()) else f"record.{name}"


REGEX_PIECES = [
    "a",
    "b",
    ".",
    "^",
    "$",
    "[ab]",
    "[^a]",
    "\\d",
    "\\s",
    "\\w",
    "*",
    "+",
    "?",
    "|",
    "/",
]


@st.composite
def regexes(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.sampled_from(REGEX_PIECES), min_size=1, max_size=5))
    pattern = "".join(pieces)
    try:
        python_regex(pattern)
    except Exception:
        return "a"
    # RE2 must accept it too; otherwise it is not a simple condition.
    if cel.NewEnv().compile(f"''.matches({json.dumps(pattern)})").eval().type() == cel.Type.ERROR:
        return "a"
    return pattern


@st.composite
def atoms(draw: st.DrawFn) -> str:
    kind = draw(
        st.sampled_from(["eq", "ne", "order", "in", "matches", "has", "in_record", "flip", "const"])
    )
    f = draw(fields())
    if kind in ("eq", "ne"):
        op = "==" if kind == "eq" else "!="
        return f"{f} {op} {cel_literal(draw(LITERALS))}"
    if kind == "flip":
        op = draw(st.sampled_from(["==", "!=", "<", ">=", ">", "<="]))
        lit = draw(ORDERED if op not in ("==", "!=") else LITERALS)
        return f"{cel_literal(lit)} {op} {f}"
    if kind == "order":
        op = draw(st.sampled_from(["<", "<=", ">", ">="]))
        return f"{f} {op} {cel_literal(draw(ORDERED))}"
    if kind == "in":
        items = draw(st.lists(LITERALS, min_size=1, max_size=3))
        return f"{f} in [{', '.join(cel_literal(i) for i in items)}]"
    if kind == "matches":
        return f"{f}.matches({json.dumps(draw(regexes()))})"
    name = draw(st.sampled_from(NAMES))
    if kind == "has":
        return f"has(record.{name})" if "." not in name else f'"{name}" in record'
    if kind == "in_record":
        return f'"{name}" in record'
    return draw(st.sampled_from(["true", "false"]))


def conditions() -> st.SearchStrategy[str]:
    return st.recursive(
        atoms(),
        lambda inner: st.one_of(
            st.builds(lambda a, b: f"({a}) && ({b})", inner, inner),
            st.builds(lambda a, b: f"({a}) || ({b})", inner, inner),
            st.builds(lambda a: f"!({a})", inner),
        ),
        max_leaves=4,
    )


def cel_answer(text: str, record: dict[str, Any]) -> bool | None:
    value = ENV.compile(text).eval(data={"record": record}).value()
    return value if isinstance(value, bool) else None


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditions(), RECORDS)
def test_fast_path_agrees_with_cel(text: str, record: dict[str, Any]) -> None:
    closure = compile_condition(text)
    assert closure is not None, f"{text} should take the fast path"
    assert closure(record) == cel_answer(text, record), (text, record)


def test_simple_conditions_take_the_fast_path() -> None:
    for text in [
        'record["url.path"] == "/healthz"',
        'record["url.path"] in ["/healthz", "/readyz"]',
        'record["http.response.status_code"] >= 500',
        'record["message"].matches("^GET /api/[0-9]+$")',
        'record["a"] == 1 && !(record["b"] == "x") || "c" in record',
        "has(record.level) && record.level != 'debug'",
        r'record["m"].matches(r"\d+\.\d+")',
    ]:
        assert compile_condition(text) is not None, text


def test_other_expressions_are_left_to_cel() -> None:
    for text in [
        'size(record["a"]) > 3',
        'record["a"].startsWith("x")',
        'record["a"] + 1 == 2',
        '!record["a"] == true',  # ! binds to the field first: not the same as !(a == true)
        'record["m"].matches("(?i)get")',
        'record["m"].matches("a(?=b)")',
        'record["a"] == 1u',
        'record["a"] == "\\u00e9"',
    ]:
        assert compile_condition(text) is None, text


def test_referenced_fields_only_when_record_is_read_by_name() -> None:
    assert referenced_fields('record["a.b"] == 1 && record.c > 2 && "d" in record') == {
        "a.b",
        "c",
        "d",
    }
    assert referenced_fields("size(record) > 3") is None
    assert referenced_fields("record.exists(k, k == 'x')") is None


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditions(), st.lists(RECORDS, max_size=6))
def test_the_batch_gives_what_each_record_gives(text: str, records: list[dict[str, Any]]) -> None:
    fast = compile_fast(text)
    assert fast is not None
    assert fast.batch(records) == [fast.one(r) for r in records], text
