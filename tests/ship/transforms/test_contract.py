"""The contract every transform in the table keeps, whatever its kind.

Each kind is built from a minimal config and must: satisfy the ``Transform`` protocol with a
typed ``Options`` struct that forbids unknown fields; refuse an unknown option with one
sentence naming the component and the option; give empty outputs for an empty batch; take
records with missing fields and values of every type without raising, handling them as its
module documents (a counter, or passed on unchanged); return only outputs it declares, and
only records it was given (or copies of them), none twice under one output; keep its
counters consistent (every record in is either returned or dropped; ``out`` counts records
returned, summed over outputs, so a record ``route`` copies to two branches counts twice);
and give the same result for the same batch, except where its documentation says the result
depends on time or on the records seen before (``throttle``'s window, ``sample``'s count for
records without the key).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms import TRANSFORMS, Transform, build_transform
from sidekick.ship.transforms.base import Transform as TransformProtocol

MINIMAL: dict[str, dict[str, Any]] = {
    "filter": {"drop": 'record["url.path"] == "/healthz"'},
    "modify": {"set": {"a": "{b}", "c": {"cel": 'record["d"] + 1'}}, "rename": {"e": "f"}},
    "redact": {"patterns": ["bearer_token", "aws_access_key", "jwt", "credit_card", "email"]},
    "sample": {"rate": 2, "key": "trace.id", "exempt": 'record["level"] == "error"'},
    "throttle": {"limit": 3, "key": "k", "excess": "output"},
    "parse": {"parser": "nginx", "field": "log"},
    "route": {"routes": {"a": 'record["s"] >= 500', "b": '"x" in record && record["x"] > 1'}},
}

ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    math.nan,
    math.inf,
    "",
    "bob@example.com",
    "\udcff",
    b"bytes",
    [1, "a", None],
    {"nested": {"x": 1}},
    (1, 2),
]
FIELDS = ["url.path", "b", "d", "e", "trace.id", "level", "k", "log", "s", "x", "message"]


def odd_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [{}]
    for i, value in enumerate(ODD_VALUES):
        records.append({FIELDS[i % len(FIELDS)]: value})
        records.append({f: value for f in FIELDS})
    return records


def test_every_kind_has_a_minimal_config() -> None:
    assert set(MINIMAL) == set(TRANSFORMS)


@pytest.fixture(params=sorted(TRANSFORMS))
def transform(request: pytest.FixtureRequest) -> Transform:
    kind: str = request.param
    t = build_transform(f"the-{kind}", kind, MINIMAL[kind])
    assert t.name == f"the-{kind}" and t.kind == kind
    return t


def check_batch(t: Transform, records: list[dict[str, Any]]) -> None:
    ids = {id(r) for r in records}
    before = t.counters()
    out = t.process(records)
    after = t.counters()
    assert set(out) <= set(t.outputs), f"{t.kind} returned undeclared outputs"
    returned = [r for rs in out.values() for r in rs]
    assert all(isinstance(r, dict) for r in returned)
    for output, rs in out.items():
        assert len({id(r) for r in rs}) == len(rs), (
            f"{t.kind} returned a record twice to {output!r}"
        )
    # Every record out is one that came in, or a copy equal to one (route's second branch).
    for r in returned:
        assert id(r) in ids or any(r == given for given in records), f"{t.kind} made up {r!r}"
    originals = {id(r) for r in returned if id(r) in ids}
    n_in = after["in"] - before["in"]
    n_out = after["out"] - before["out"]
    n_dropped = after["dropped"] - before["dropped"]
    assert n_in == len(records)
    assert n_out == len(returned)
    # Copies (a record sent to two branches) are extra; every original is out or dropped.
    assert n_dropped == len(records) - len(originals)


def test_satisfies_the_protocol_with_a_strict_options_struct(transform: Transform) -> None:
    cls = TRANSFORMS[transform.kind]
    assert cls.kind == transform.kind
    assert issubclass(cls.Options, msgspec.Struct)
    assert cls.Options.__struct_config__.forbid_unknown_fields
    members = set(TransformProtocol.__annotations__) | {
        name
        for name, value in vars(TransformProtocol).items()
        if callable(value) and name[0] != "_"
    }
    assert members == {"name", "kind", "outputs", "process", "counters"}
    for member in members:
        assert hasattr(transform, member), f"{transform.kind} lacks {member}"
    assert isinstance(transform.outputs, tuple) and transform.outputs
    assert all(isinstance(o, str) for o in transform.outputs)


@pytest.mark.parametrize("kind", sorted(TRANSFORMS))
def test_an_unknown_option_is_refused_naming_component_and_option(kind: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_transform(f"my-{kind}", kind, {**MINIMAL[kind], "colour": "blue"})
    message = str(caught.value)
    assert f"'my-{kind}'" in message and "colour" in message and kind in message
    assert "\n" not in message and message.count("; ") == 1


def test_takes_an_empty_batch(transform: Transform) -> None:
    check_batch(transform, [])
    assert transform.counters()["in"] == 0
    out = transform.process([])
    assert all(records == [] for records in out.values())


# What each kind does with a record that has none of the fields its options name, as its
# module documents: the counter that grows and by how much, or None when the record passes
# unchanged.
ON_MISSING_FIELDS: dict[str, tuple[str, int] | None] = {
    "filter": ("condition_errors", 1),  # the condition is false: drop: keeps the record
    "modify": ("set_errors", 2),  # each template or CEL value that cannot be computed
    "redact": None,
    "sample": ("condition_errors", 1),  # exempt: is false; sampled by count
    "throttle": None,  # counted under the empty key
    "parse": ("skipped", 1),
    "route": ("condition_errors", 1),  # branch a fails; b tests "x" in record first
}


def test_a_record_without_the_fields_is_handled_as_documented(transform: Transform) -> None:
    assert set(ON_MISSING_FIELDS) == set(TRANSFORMS)
    expected = ON_MISSING_FIELDS[transform.kind]
    record: dict[str, Any] = {"message": "no fields here"}
    out = transform.process([record])
    counters = transform.counters()
    if expected is not None:
        counter, n = expected
        assert counters.get(counter) == n, counters
    returned = [r for rs in out.values() for r in rs]
    assert counters["in"] == 1 and counters["out"] + counters["dropped"] == 1
    if transform.kind != "modify":
        assert returned in ([], [record]) and record == {"message": "no fields here"}


# throttle's result depends on the window's count so far: the second batch is over the limit.
@pytest.mark.parametrize("transform", sorted(set(TRANSFORMS) - {"throttle"}), indirect=True)
def test_the_same_batch_gives_the_same_result(transform: Transform) -> None:
    records = ordinary_records()
    first = transform.process(copy.deepcopy(records))
    second = transform.process(copy.deepcopy(records))
    assert first == second
    assert set(first) <= set(transform.outputs)


def test_takes_missing_fields_and_odd_values(transform: Transform) -> None:
    for _ in range(3):
        check_batch(transform, odd_records())


def ordinary_records() -> list[dict[str, Any]]:
    return [
        {
            "message": "GET /x Bearer abcdefghijk",
            "url.path": "/healthz" if i % 3 == 0 else "/x",
            "s": 500 + i % 2 * -300,
            "trace.id": f"t{i % 7}",
            "level": "error" if i % 5 == 0 else "info",
            "k": i % 2,
            "x": i,
            "d": i,
            "log": '1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-"',
        }
        for i in range(50)
    ]


def test_takes_ordinary_records(transform: Transform) -> None:
    check_batch(transform, ordinary_records())


def test_counters_are_ints_with_in_out_dropped(transform: Transform) -> None:
    counters = transform.counters()
    assert {"in", "out", "dropped"} <= set(counters)
    assert all(type(v) is int for v in counters.values())


def test_hash_redaction_also_keeps_the_contract(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    t = build_transform(
        "h", "redact", {"patterns": ["email"], "mode": "hash", "hash_key_file": str(key)}
    )
    check_batch(t, odd_records())
