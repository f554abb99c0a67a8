"""``--parser docker``: json-file lines parsed, and Docker's partial entries joined."""

from __future__ import annotations

import json

from sidekick.ship.parsers import create_parser
from sidekick.ship.parsers.docker import DockerParser
from sidekick.ship.records import FLAGS, PARSE_ERROR, Record

T1 = "2024-05-01T10:00:00.123456789Z"
T2 = "2024-05-01T10:00:00.9Z"


def entry(log: str, stream: str = "stdout", time: str = T1, **extra: object) -> str:
    # Docker's key order and Go's compact encoding, as dockerd writes them.
    return json.dumps({"log": log, "stream": stream, "time": time, **extra}, separators=(",", ":"))


def parse(*messages: str) -> list[Record]:
    records: list[Record] = [{"message": m} for m in messages]
    create_parser("docker").parse(records)
    return records


def feed(joiner: object, lines: list[str]) -> tuple[list[str], list[int]]:
    offsets = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
    return joiner.feed(lines, offsets)  # type: ignore[attr-defined,no-any-return]


def test_log_becomes_message_without_its_newline() -> None:
    (rec,) = parse(entry("GET / 200\n", "stderr"))
    assert (rec["message"], rec["log.iostream"], rec["@timestamp"]) == ("GET / 200", "stderr", T1)
    assert FLAGS not in rec and PARSE_ERROR not in rec


def test_only_the_last_newline_goes_and_the_time_is_padded() -> None:
    (rec,) = parse(entry("two\n\n", time=T2))
    assert rec["message"] == "two\n"
    assert rec["@timestamp"] == "2024-05-01T10:00:00.900000000Z"


def test_attrs_become_docker_attrs_fields() -> None:
    (rec,) = parse(entry("x\n", attrs={"tag": "web", "env": "prod"}))
    assert (rec["docker.attrs.tag"], rec["docker.attrs.env"]) == ("web", "prod")


def test_unjoined_entry_without_newline_is_marked_partial() -> None:
    (rec,) = parse(entry("first half"))
    assert rec["message"] == "first half" and rec[FLAGS] == ["partial"]


def test_lines_that_are_not_docker_entries_keep_their_message_with_a_parse_error() -> None:
    not_json, array, bad_time = parse("plain text", "[1, 2]", entry("x\n", time="soon"))
    assert not_json["message"] == "plain text" and PARSE_ERROR in not_json
    assert PARSE_ERROR in array
    assert "not RFC 3339" in bad_time[PARSE_ERROR] and bad_time["message"] == "x"


def test_partial_entries_join_with_the_entry_that_ends_the_line() -> None:
    j = DockerParser().joiner(1 << 20)
    lines = [entry("before\n"), entry("abc"), entry("err\n", "stderr"), entry("def\n", time=T2)]
    messages, offsets = feed(j, lines)
    assert offsets == [0, len(lines[0]) + len(lines[1]) + 2, len(lines[0]) + 1]
    (before, err, joined) = parse(*messages)
    assert (before["message"], err["message"]) == ("before", "err")
    assert (joined["message"], joined["@timestamp"], FLAGS in joined) == ("abcdef", T1, False)


def test_an_escaped_backslash_before_n_is_not_taken_for_the_newline() -> None:
    # The text ends with a backslash and an "n", no newline: a partial entry.
    j = DockerParser().joiner(1 << 20)
    lines = [entry("C:\\dir\\n"), entry("ext\n")]
    messages, _ = feed(j, lines)
    (rec,) = parse(*messages)
    assert rec["message"] == "C:\\dir\\next"


def test_pending_group_holds_the_checkpoint_and_flush_marks_it_partial() -> None:
    j = DockerParser().joiner(1 << 20)
    lines = [entry("done\n"), entry("waiting")]
    messages, _ = feed(j, lines)
    assert len(messages) == 1 and j.pending_offset == len(lines[0]) + 1
    messages, offsets = j.flush()
    (rec,) = parse(*messages)
    assert rec["message"] == "waiting" and j.flags == [["partial"]]
    assert offsets == [len(lines[0]) + 1]


def test_an_entry_without_log_is_not_joined_and_gets_a_parse_error() -> None:
    # Before, it was taken for a piece of a longer line (no newline at the end of an absent
    # "log"): joined into the next entry of its stream, whose time it gave, and gone.
    j = DockerParser().joiner(1 << 20)
    no_log = json.dumps({"stream": "stdout", "time": T2}, separators=(",", ":"))
    messages, offsets = feed(j, [no_log, entry("hello\n")])
    assert j.pending_offset is None
    assert offsets == [0, len(no_log) + 1]
    bad, hello = parse(*messages)
    assert bad["message"] == no_log and bad[PARSE_ERROR] == 'docker: the entry has no "log" field'
    assert FLAGS not in bad
    assert (hello["message"], hello["@timestamp"]) == ("hello", T1)
