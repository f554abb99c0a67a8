"""The contract every transform in the table keeps, whatever its kind.

Each kind is built from a minimal config and must: take an empty batch; take records with
missing fields and values of every type without raising; return only outputs it declares;
keep its counters consistent (every record in is either returned or dropped; ``out`` counts
records returned, summed over outputs).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from sidekick.ship.transforms import TRANSFORMS, Transform, build_transform

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
    originals = {id(r) for r in returned if id(r) in ids}
    n_in = after["in"] - before["in"]
    n_out = after["out"] - before["out"]
    n_dropped = after["dropped"] - before["dropped"]
    assert n_in == len(records)
    assert n_out == len(returned)
    # Copies (a record sent to two branches) are extra; every original is out or dropped.
    assert n_dropped == len(records) - len(originals)


def test_takes_an_empty_batch(transform: Transform) -> None:
    check_batch(transform, [])
    assert transform.counters()["in"] == 0


def test_takes_missing_fields_and_odd_values(transform: Transform) -> None:
    for _ in range(3):
        check_batch(transform, odd_records())


def test_takes_ordinary_records(transform: Transform) -> None:
    records = [
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
    check_batch(transform, records)


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
