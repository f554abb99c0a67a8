"""The access-log parser's fast path (``PLAIN`` on lines without a backslash) gives exactly the
records of its general path, ``parse_by_regex``, on any batch, and leaves it only the lines
it cannot read itself."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sidekick.ship.parsers._access import AccessLogParser
from sidekick.ship.parsers.apache import ApacheParser
from sidekick.ship.parsers.nginx import NginxParser
from sidekick.ship.records import Record

PARSERS: dict[str, type[AccessLogParser]] = {"nginx": NginxParser, "apache": ApacheParser}

COMBINED = (
    '203.0.113.9 - alice [02/Jan/2024:03:04:05 +0000] "GET /shop/cart?item=42 HTTP/1.1" '
    '200 5120 "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64)"'
)
ESCAPED_AGENT = '1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 200 1 "-" "a \\"b\\" c"'
NGINX_ERROR = "2024/01/02 03:04:05 [error] 12#0: *5 open() failed, client: 1.2.3.4, server: x"


def typed(records: list[Record]) -> list[list[tuple[str, type, Any]]]:
    """Records as ordered (key, type, value) lists: key order and ``200`` vs ``200.0`` count."""
    return [[(k, type(v), v) for k, v in rec.items()] for rec in records]


def assert_same_as_regex(kind: str, messages: list[Any], read_time: bool = False) -> None:
    def batch() -> list[Record]:
        out: list[Record] = []
        for i, m in enumerate(messages):
            rec: Record = {"message": m, "log.offset": i}
            if read_time:
                rec = {"@timestamp": "2026-01-01T00:00:00.000000000Z", **rec}
            out.append(rec)
        return out

    fast, general = batch(), batch()
    PARSERS[kind]().parse(fast)
    PARSERS[kind]().parse_by_regex(general)
    assert typed(fast) == typed(general)


# Parts of a combined line: mostly well-formed values, with the odd ones the patterns must
# refuse or take literally (non-ASCII digits, lower-case methods, spaces, quotes, tabs). Each
# part is drawn from its usual values nine times out of ten, so a good share of lines is
# valid (one_of picks evenly among distinct strategies; equal ones would count once).


def usual(values: list[str], odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(*(st.sampled_from(values) for _ in range(9)), odd)


addresses = usual(
    ["1.2.3.4", "2001:db8::1", "host.example"], st.sampled_from(["-", "a\tb", "x]", "", "é"])
)
names = usual(["-", "alice"], st.sampled_from(["b%20c", "[u]", '"q"', "é", "", "a b"]))
times = usual(
    ["02/Jan/2024:03:04:05 +0000", "31/Dec/2023:22:30:00 -0500"],
    st.one_of(
        st.builds(
            "{:02d}/{}/{:04d}:{:02d}:{:02d}:{:02d} {}".format,
            st.integers(0, 32),
            st.sampled_from(["Jan", "Feb", "Dec", "jan", "Foo"]),
            st.integers(1969, 2100),
            st.integers(0, 24),
            st.integers(0, 60),
            st.integers(0, 60),
            st.sampled_from(["+0000", "+0130", "-0500", "+05:30", "Z", "+000", "+2400", "x"]),
        ),
        st.text(alphabet="0123456789/: +-[]JanZ", max_size=30),
    ),
)
methods = usual(
    ["GET", "POST", "HEAD"], st.sampled_from(["M-SEARCH", "PROP_FIND", "get", "_X", "G3T", ""])
)
urls = usual(
    ["/", "/a/b.html", "/shop?item=42&n=2", "/x?", "/?a?b", "*"],
    st.text(alphabet='/a?=&%.-_é \t"\\#', max_size=24),
)
versions = usual(["1.1", "1.0", "2.0"], st.sampled_from(["2", "", "1.x", "..", "١.١"]))
requests = st.one_of(
    st.builds("{} {} HTTP/{}".format, methods, urls, versions),
    st.builds("{} {} HTTP/{}".format, methods, urls, versions),
    st.builds("{} {} HTTP/{}".format, methods, urls, versions),
    st.sampled_from(["", "-", "\\x16\\x03\\x01", "GET /", "GET / HTTP/1.1 extra"]),
    st.text(alphabet='GET /HTP1.\\"x', max_size=20),
)
statuses = usual(["200", "304", "404", "500"], st.sampled_from(["20", "2000", "٣٠٠", "-", "2a0"]))
sizes = usual(
    ["0", "512", "-"],
    st.one_of(
        st.integers(0, 10**20).map(str),
        st.sampled_from(["", "0x1", "١٢", "00", "-1", "9" * 18, "1" + "0" * 18]),
    ),
)
quoted = usual(
    ["-", "", "https://example.com/", "curl/8.5.0", "Mozilla/5.0 (X11)"],
    st.text(alphabet='ab -"\\/() é\t', max_size=20),
)
tails = usual(["", ' "10.0.0.1" rt=0.003'], st.sampled_from([" x", '"', "\\", " \\x22", "\n", " "]))


@st.composite
def access_lines(draw: st.DrawFn) -> str:
    head = f"{draw(addresses)} {draw(names)} {draw(names)} [{draw(times)}]"
    middle = f'"{draw(requests)}" {draw(statuses)} {draw(sizes)}'
    if draw(st.booleans()):  # combined
        return f'{head} {middle} "{draw(quoted)}" "{draw(quoted)}"{draw(tails)}'
    return f"{head} {middle}{draw(tails)}"  # common


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid-looking line with a few characters replaced, inserted or deleted."""
    line = draw(access_lines())
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(line)))
        c = draw(st.sampled_from(list(' "\\\t-[]?٣0aZ/\n:.é')))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        if op == "insert":
            line = line[:i] + c + line[i:]
        elif op == "replace":
            line = line[:i] + c + line[i + 1 :]
        else:
            line = line[:i] + line[i + 1 :]
    return line


any_line = st.one_of(
    access_lines(),
    access_lines(),
    mutated(),
    st.text(alphabet='0123456789 -:/[]"\\.+?AGETPHZ\t٣é', max_size=120),
    st.sampled_from([COMBINED, ESCAPED_AGENT, NGINX_ERROR, ""]),
)


@settings(max_examples=1000, deadline=None)
@given(kind=st.sampled_from(sorted(PARSERS)), messages=st.lists(any_line, max_size=8))
def test_fast_path_gives_the_records_of_the_regex_path(kind: str, messages: list[str]) -> None:
    assert_same_as_regex(kind, messages)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(PARSERS)), messages=st.lists(any_line, max_size=8))
def test_fast_path_keeps_a_read_time_as_the_regex_path_does(kind: str, messages: list[str]) -> None:
    # An impossible date leaves the time the record was read with and marks the record.
    assert_same_as_regex(kind, messages, read_time=True)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(sorted(PARSERS)),
    messages=st.lists(st.one_of(any_line, st.none(), st.integers(), st.binary(max_size=8))),
)
def test_batches_with_messages_that_are_not_text_match_the_regex_path(
    kind: str, messages: list[Any]
) -> None:
    assert_same_as_regex(kind, messages)


def test_a_batch_of_clean_escaped_error_and_odd_lines_matches_the_regex_path() -> None:
    assert_same_as_regex("nginx", [COMBINED, ESCAPED_AGENT, NGINX_ERROR, "junk", COMBINED])


def test_lines_that_only_the_escape_aware_pattern_reads_keep_their_fields() -> None:
    lines = [
        ESCAPED_AGENT,
        '1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "GET /a\\b HTTP/1.1" 200 1 "r\\"" "-"',
        '1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "\\x16\\x03" 400 0 "-" "-"',
        '1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 200 1 "-" "a\\" "b"',
    ]
    records: list[Record] = [{"message": line} for line in lines]
    NginxParser().parse(records)
    assert records[0]["user_agent.original"] == 'a \\"b\\" c'
    assert records[1]["url.path"] == "/a\\b"
    assert records[1]["http.request.header.referer"] == 'r\\"'
    assert "http.request.method" not in records[2]
    assert records[2]["http.response.status_code"] == 400
    assert records[3]["user_agent.original"] == 'a\\" '
    assert_same_as_regex("nginx", lines)


def test_non_ascii_digits_are_not_a_status_or_a_size() -> None:
    lines = [
        '1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" ٢٠٠ 1 "-" "-"',
        '1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 200 ١ "-" "-"',
    ]
    records: list[Record] = [{"message": line} for line in lines]
    NginxParser().parse(records)
    assert all(records[i]["log.parse_error"] == "nginx: no format matched" for i in (0, 1))
    assert_same_as_regex("nginx", lines)


class RoutingParser(NginxParser):
    """Keeps the messages handed to the general path."""

    def __init__(self) -> None:
        super().__init__()
        self.general: list[Any] = []

    def parse_by_regex(self, records: list[Record]) -> None:
        self.general.extend(r.get("message") for r in records)
        super().parse_by_regex(records)


def test_only_lines_with_a_backslash_take_the_general_path() -> None:
    # A line no access pattern matches is read by the error format without a second try.
    p = RoutingParser()
    records: list[Record] = [{"message": m} for m in (COMBINED, ESCAPED_AGENT, NGINX_ERROR)]
    p.parse(records)
    assert p.general == [ESCAPED_AGENT]
    assert records[0]["http.response.status_code"] == 200
    assert records[2]["log.level"] == "error"


def test_a_batch_holding_a_message_that_is_not_text_takes_the_general_path() -> None:
    p = RoutingParser()
    records: list[Record] = [{"message": COMBINED}, {"message": 7}, {}]
    p.parse(records)
    assert p.general == [COMBINED, 7, None]
    assert records[0]["http.response.status_code"] == 200
    assert records[1]["log.parse_error"] == "nginx: the record has no text message"
