"""Properties every parser keeps on arbitrary input: no exception, no record lost or moved."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidekick.ship.parsers import create_parser
from sidekick.ship.parsers.multiline import MultilineJoiner
from sidekick.ship.records import PARSE_ERROR, Record

SPECS = ["json", "nginx", "apache", r"regex:(?P<a>\d+)(?P<timestamp>\S+)?"]

# Text near the formats (brackets, quotes, digits, backslashes) finds more edges than noise.
near_log = st.text(alphabet=st.sampled_from('0123456789 -:/[]"\\.+?{}AGETPHZ\x00é'), max_size=120)
lines = st.lists(st.one_of(st.text(max_size=200), near_log), max_size=20)


@settings(max_examples=300, deadline=None)
@given(spec=st.sampled_from(SPECS), messages=lines)
def test_parse_never_raises_and_never_drops(spec: str, messages: list[str]) -> None:
    records: list[Record] = [{"message": m, "log.offset": i} for i, m in enumerate(messages)]
    create_parser(spec).parse(records)
    assert [r["log.offset"] for r in records] == list(range(len(messages)))
    for rec, original in zip(records, messages, strict=True):
        if PARSE_ERROR in rec:
            assert rec["message"] == original


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.lists(st.text(alphabet="2024-x \t", max_size=12), max_size=8)))
def test_multiline_keeps_every_line_in_order(chunks: list[list[str]]) -> None:
    j = MultilineJoiner(r"^\d{4}", max_lines=3)
    out: list[str] = []
    for chunk in chunks:
        messages, _ = j.feed(chunk, list(range(len(chunk))))
        out.extend(messages)
    out.extend(j.flush()[0])
    fed = [line for chunk in chunks for line in chunk]
    assert "\n".join(out) == "\n".join(fed)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["a", "b", "message", "msg", "time"]), children, max_size=3
        )
    ),
    max_leaves=10,
)
time_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet="0123456789-T:.Z+ ", max_size=35),
)


@settings(max_examples=300, deadline=None)
@given(obj=st.dictionaries(st.text(max_size=8), json_values, max_size=5), when=time_values)
def test_json_time_of_any_value_becomes_timestamp_or_stays_a_field(
    obj: dict[str, object], when: object
) -> None:
    import msgspec

    body = msgspec.json.encode({**obj, "time": when}).decode()
    records: list[Record] = [{"message": body}]
    create_parser("json").parse(records)
    rec = records[0]
    assert PARSE_ERROR not in rec
    assert "@timestamp" in rec or rec["time"] == when


@settings(max_examples=100, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    values=st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=30)), max_size=10),
)
def test_records_without_text_message_are_marked_not_fatal(spec: str, values: list[object]) -> None:
    records: list[Record] = [{} if v is None else {"message": v} for v in values]
    create_parser(spec).parse(records)
    for rec, v in zip(records, values, strict=True):
        if not isinstance(v, str):
            assert rec[PARSE_ERROR].endswith("the record has no text message")


@given(digits=st.integers(min_value=19, max_value=6000))
@settings(max_examples=20, deadline=None)
def test_absurdly_long_numbers_stay_text_and_never_raise(digits: int) -> None:
    big = "9" * digits
    lines = [
        f'1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 200 {big} "-" "-"',
        f"2024/01/02 03:04:05 [error] {big}#0: *{big} boom",
        f"[Tue Jan 02 03:04:05 2024] [core:error] [pid {big}:tid 1] [client 1.2.3.4:{big}] x",
    ]
    for spec in ("nginx", "apache", r"regex:(?P<http__response__status_code>\d+)"):
        records: list[Record] = [{"message": line} for line in lines]
        create_parser(spec).parse(records)
        for rec in records:
            assert not any(isinstance(v, int) and v > 10**18 for v in rec.values())
