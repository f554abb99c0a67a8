"""The redact transform: built-in patterns, user regexes, fields, mask and keyed hash."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidekick.core.errors import ConfigError
from sidekick.ship.graph import build_graph
from sidekick.ship.transforms import DEFAULT, build_transform
from sidekick.ship.transforms._redact_scan import BUILTIN, luhn_ok, strings_in
from tests.ship.helpers import ShipperProcess, read_ndjson, ship_config, wait_for_sync

ALL = list(BUILTIN)
SECRETS = {
    "bearer_token": ("Authorization: Bearer s3cr3tT0kenValue", "s3cr3tT0kenValue"),
    "aws_access_key": ("key=AKIAIOSFODNN7EXAMPLE done", "AKIAIOSFODNN7EXAMPLE"),
    "jwt": ("t eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl end", "eyJhbGciOiJIUzI1NiJ9"),
    "credit_card": ("paid with 4111-1111-1111-1111 ok", "4111-1111-1111-1111"),
    "email": ("mail bob.smith@example.co.uk now", "bob.smith@example.co.uk"),
}


@pytest.mark.parametrize("pattern", ALL)
def test_each_builtin_pattern_is_masked_and_counted(pattern: str) -> None:
    text, secret = SECRETS[pattern]
    t = build_transform("clean", "redact", {"patterns": ALL})
    out = t.process([{"message": text}])[DEFAULT]
    assert secret not in out[0]["message"]
    assert f"[REDACTED:{pattern}]" in out[0]["message"]
    assert t.counters()[f"redacted.{pattern}"] == 1


def test_bearer_keeps_the_word_and_card_needs_luhn() -> None:
    t = build_transform("clean", "redact", {"patterns": ["bearer_token", "credit_card"]})
    out = t.process([{"m": "Bearer abcdefgh123 card 4111 1111 1111 1112 ts 1700000000000"}])
    assert out[DEFAULT][0]["m"] == (
        "Bearer [REDACTED:bearer_token] card 4111 1111 1111 1112 ts 1700000000000"
    )
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_user_regex_and_fields_limit_the_search() -> None:
    t = build_transform(
        "clean", "redact", {"regex": ["pw=\\S+"], "patterns": ["email"], "fields": ["message"]}
    )
    records = [{"message": "login pw=hunter2 a@b.io", "user": "a@b.io pw=x", "n": 3}]
    out = t.process(records)[DEFAULT][0]
    assert out["message"] == "login [REDACTED:regex.1] [REDACTED:email]"
    assert out["user"] == "a@b.io pw=x"
    assert t.counters()["redacted.regex.1"] == 1


def test_every_string_field_when_fields_unset_and_other_values_untouched() -> None:
    t = build_transform("clean", "redact", {"patterns": ["email"]})
    records = [{"a": "x@y.org", "b": [7, None, 2.5], "c": 5, "d": None, "e": "fine"}]
    assert t.process(records)[DEFAULT] == [
        {"a": "[REDACTED:email]", "b": [7, None, 2.5], "c": 5, "d": None, "e": "fine"}
    ]


def test_hash_mode_is_stable_per_secret_and_keyed(tmp_path: Path) -> None:
    key1, key2 = tmp_path / "k1", tmp_path / "k2"
    key1.write_text("one\n")
    key2.write_text("two\n")
    opts = {"patterns": ["email"], "mode": "hash", "hash_key_file": str(key1)}
    t = build_transform("clean", "redact", opts)
    out = t.process([{"m": "a@b.io"}, {"m": "to a@b.io"}, {"m": "c@d.io"}])[DEFAULT]
    h = out[0]["m"]
    assert h.startswith("[hmac:") and len(h) == len("[hmac:]") + 16
    assert out[1]["m"] == f"to {h}"
    assert out[2]["m"] != h
    other = build_transform("c2", "redact", {**opts, "hash_key_file": str(key2)})
    assert other.process([{"m": "a@b.io"}])[DEFAULT][0]["m"] != h
    again = build_transform("c3", "redact", opts)
    assert again.process([{"m": "a@b.io"}])[DEFAULT][0]["m"] == h


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({}, "no patterns"),
        ({"patterns": ["ssn"]}, "'ssn' is not a built-in pattern"),
        ({"regex": "("}, "does not compile"),
        ({"patterns": ["email"], "mode": "hash"}, "needs hash_key_file"),
        (
            {"patterns": ["email"], "mode": "hash", "hash_key_file": "/nonexistent/k"},
            "cannot be read",
        ),
        ({"patterns": ["email"], "mode": "scramble"}, "mode"),
    ],
)
def test_mistakes_are_config_errors(options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        build_transform("clean", "redact", options)
    assert says in str(err.value)


def test_bearer_in_any_case_and_a_card_with_spaces_in_another_field() -> None:
    t = build_transform("clean", "redact", {"patterns": ["bearer_token", "credit_card"]})
    out = t.process([{"a": "BeArEr abcdefgh123", "b": "card 4111 1111 1111 1111."}])[DEFAULT]
    assert out[0] == {
        "a": "BeArEr [REDACTED:bearer_token]",
        "b": "card [REDACTED:credit_card].",
    }


TOKEN = "Bearer s3cr3tT0kenValue"
MAIL = "bob@example.org"
KEY = "AKIAIOSFODNN7EXAMPLE"


def nested_record() -> dict[str, Any]:
    return {
        "message": "request done",
        "tags": ["ok", f"auth {TOKEN}", 3],
        "headers": {"accept": "*/*", "user": {"mail": MAIL, "ids": [1, 2]}},
        "events": [{"name": "login", "key": KEY}, {"name": "logout"}],
        "n": 5,
    }


def test_secrets_in_lists_maps_and_lists_of_maps_are_masked_and_counted() -> None:
    t = build_transform("clean", "redact", {"patterns": ALL})
    out = t.process([nested_record()])[DEFAULT][0]
    assert out == {
        "message": "request done",
        "tags": ["ok", "auth Bearer [REDACTED:bearer_token]", 3],
        "headers": {"accept": "*/*", "user": {"mail": "[REDACTED:email]", "ids": [1, 2]}},
        "events": [{"name": "login", "key": "[REDACTED:aws_access_key]"}, {"name": "logout"}],
        "n": 5,
    }
    counts = t.counters()
    assert counts["redacted.bearer_token"] == 1
    assert counts["redacted.email"] == 1
    assert counts["redacted.aws_access_key"] == 1


def test_nested_secrets_are_hashed_like_top_level_ones(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k\n")
    opts = {"patterns": ["email"], "mode": "hash", "hash_key_file": str(key)}
    t = build_transform("clean", "redact", opts)
    out = t.process([{"m": MAIL, "deep": [[{"to": [MAIL, "x"]}]]}])[DEFAULT][0]
    h = out["m"]
    assert h.startswith("[hmac:") and MAIL not in json.dumps(out)
    assert out["deep"] == [[{"to": [h, "x"]}]]
    assert t.counters()["redacted.email"] == 2


def test_a_named_field_holding_a_list_or_a_map_is_searched_and_others_are_not() -> None:
    t = build_transform("clean", "redact", {"patterns": ["email"], "fields": ["to", "meta"]})
    record = {"to": [MAIL, "x"], "meta": {"a": {"b": MAIL}}, "cc": [MAIL], "m": MAIL}
    out = t.process([record])[DEFAULT][0]
    assert out == {
        "to": ["[REDACTED:email]", "x"],
        "meta": {"a": {"b": "[REDACTED:email]"}},
        "cc": [MAIL],
        "m": MAIL,
    }


def test_shared_nested_values_are_copied_never_changed_in_place() -> None:
    tags = ["ok", MAIL]
    clean = {"a": ["nothing", "here"], "b": {"c": "fine"}}
    record = {"tags": tags, "m": MAIL, **clean}
    t = build_transform("clean", "redact", {"patterns": ["email"]})
    out = t.process([record.copy()])[DEFAULT][0]
    assert out["tags"] == ["ok", "[REDACTED:email]"]
    assert tags == ["ok", MAIL]  # the list another branch may hold is as it was
    # Containers without a secret are not copied.
    assert out["a"] is clean["a"] and out["b"] is clean["b"]


def test_a_branch_without_redact_receives_the_nested_secret_unchanged(tmp_path: Path) -> None:
    ship: dict[str, Any] = {
        "inputs": {"web": {"url": f"file://{tmp_path}/*.log", "parser": "json"}},
        "transforms": {"clean": {"type": "redact", "inputs": ["web"], "patterns": ["email"]}},
        "outputs": {
            "masked": {"url": f"file://{tmp_path}/masked.ndjson", "inputs": ["clean"]},
            "raw": {"url": f"file://{tmp_path}/raw.ndjson", "inputs": ["web"]},
        },
        "state_dir": str(tmp_path / "state"),
    }
    plan = build_graph(ship_config(**ship)).plans["web"]
    routed = {plan.output_names[i]: got for i, got in plan.run([{"to": [{"mail": MAIL}]}])}
    assert routed == {
        "masked": [{"to": [{"mail": "[REDACTED:email]"}]}],
        "raw": [{"to": [{"mail": MAIL}]}],
    }


def test_no_nesting_is_too_deep() -> None:
    deep: Any = [MAIL]
    for _ in range(5000):
        deep = {"d": [deep]}
    t = build_transform("clean", "redact", {"patterns": ["email"]})
    out = t.process([{"deep": deep}])[DEFAULT][0]["deep"]
    assert strings_in([out]) == ["[REDACTED:email]"]
    assert strings_in([deep]) == [MAIL]


def test_nested_counts_reach_metrics_through_the_cli(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [
        json.dumps({"message": f"m{i}", "to": [MAIL, {"jwt": "none"}], "h": {"k": [KEY]}})
        for i in range(20)
    ]
    (logs / "a.log").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.ndjson"
    config = tmp_path / "ship.yaml"
    ship = {
        "inputs": {"app": {"url": f"file://{logs}/*.log", "parser": "json"}},
        "transforms": {
            "clean": {"type": "redact", "inputs": ["app"], "patterns": ["email", "aws_access_key"]}
        },
        "outputs": {"file": {"url": f"file://{out}", "inputs": ["clean"]}},
        "state_dir": str(tmp_path / "state"),
    }
    config.write_text(yaml.safe_dump({"ship": ship}))
    sh = ShipperProcess(["--config", str(config)], tmp_path / "ship.log").start()
    try:
        sh.wait_ready()
        wait_for_sync(lambda: len(read_ndjson(out)) == 20, timeout=30)

        def events(event: str) -> float:
            return sh.metric(
                "sidekick_ship_component_events_total",
                component="clean",
                type="redact",
                event=event,
            )

        wait_for_sync(lambda: events("redacted.email") == 20, timeout=30)
        assert events("redacted.aws_access_key") == 20
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    text = out.read_text()
    assert MAIL not in text and KEY not in text
    assert read_ndjson(out)[0]["to"] == ["[REDACTED:email]", {"jwt": "none"}]


def test_a_batch_finds_each_secret_in_its_own_record_only() -> None:
    """One scan serves a whole batch: a needle is traced back to the record it falls in,
    including the first and the last, records with a non-ASCII text before them (byte and
    character offsets differ), and digit runs that only reach 13 across two records."""
    t = build_transform("clean", "redact", {"patterns": ALL})
    records: list[dict[str, Any]] = []
    for i in range(2000):
        records.append({"message": f"é ünïcode line #{i}: 4111 1111", "n": i, "s": "0000 00"})
    placed = {
        0: "email",
        999: "jwt",
        1000: "credit_card",
        1500: "bearer_token",
        1999: "aws_access_key",
    }
    for i, pattern in placed.items():
        records[i]["other"] = SECRETS[pattern][0]
    out = t.process(records)[DEFAULT]
    assert out is records
    for i, r in enumerate(out):
        if i in placed:
            pattern = placed[i]
            assert SECRETS[pattern][1] not in r["other"]
            assert f"[REDACTED:{pattern}]" in r["other"]
        else:
            assert "other" not in r
            assert r["message"] == f"é ünïcode line #{i}: 4111 1111"
    assert {k: v for k, v in t.counters().items() if k.startswith("redacted.")} == {
        f"redacted.{p}": 1 for p in placed.values()
    }


def test_a_user_regex_is_searched_in_every_record() -> None:
    t = build_transform("clean", "redact", {"regex": r"pin=\d{4}"})
    records = [{"m": f"pin={1000 + i} x"} for i in range(300)]
    out = t.process(records)[DEFAULT]
    assert all(r["m"] == "[REDACTED:regex.1] x" for r in out)
    assert t.counters()["redacted.regex.1"] == 300


def test_card_numbers_among_long_digit_runs() -> None:
    """Ids and epoch milliseconds are runs of 13+ digits too: they stay as they are, and a
    real card number next to one, or after a dash and a space, is still found."""
    t = build_transform("clean", "redact", {"patterns": ["credit_card"]})
    records = [
        {"id": "fe00-25426d-449939353078261e-0", "ts": "1763800000123"},
        {"m": "order - 4111 1111 1111 1111 ok", "id": "x-449939353078261"},
        {"m": "ts 1763800000123 then 4111111111111111"},
    ]
    out = t.process(records)[DEFAULT]
    assert out[0] == {"id": "fe00-25426d-449939353078261e-0", "ts": "1763800000123"}
    assert out[1]["m"] == "order - [REDACTED:credit_card] ok"
    assert out[1]["id"] == "x-449939353078261"
    assert out[2]["m"] == "ts 1763800000123 then [REDACTED:credit_card]"
    assert t.counters()["redacted.credit_card"] == 2


CARD = "4111111111111111"


@pytest.mark.parametrize("fields", [None, ["m"]])
@pytest.mark.parametrize("control", ["\x00", "\x01", "\x09", "\x0a", "\x11", "\x19", "\x1b"])
def test_a_card_number_right_after_a_control_character_is_masked(
    control: str, fields: list[str] | None
) -> None:
    """In the batch's JSON a control character is an escape, and ``\\u0001`` ends in digits
    that run into the card number after it; the record is still found."""
    options: dict[str, Any] = {"patterns": ["credit_card"]}
    if fields is not None:
        options["fields"] = fields
    t = build_transform("clean", "redact", options)
    records: list[dict[str, Any]] = [{"m": f"line {i}", "n": i} for i in range(50)]
    records[20]["m"] = f"paid{control}{CARD} ok"
    records[30]["m"] = f"{control}{CARD}"
    out = t.process(records)[DEFAULT]
    assert out[20]["m"] == f"paid{control}[REDACTED:credit_card] ok"
    assert out[30]["m"] == f"{control}[REDACTED:credit_card]"
    assert t.counters()["redacted.credit_card"] == 2


def test_a_card_after_a_control_character_deep_in_a_named_field_is_masked() -> None:
    t = build_transform("clean", "redact", {"patterns": ALL, "fields": ["meta"]})
    records: list[dict[str, Any]] = [{"meta": {"a": [f"x{i}"]}} for i in range(10)]
    records[4] = {"meta": {"a": [{"card": f"\x02{CARD}"}, "fine"]}, "other": f"\x02{CARD}"}
    out = t.process(records)[DEFAULT]
    assert out[4] == {
        "meta": {"a": [{"card": "\x02[REDACTED:credit_card]"}, "fine"]},
        "other": f"\x02{CARD}",
    }


@pytest.mark.parametrize(
    "odd",
    [object(), "\udcff", {(1, 2): "tuple key"}, 1 + 2j],
    ids=["object", "lone surrogate", "tuple key", "complex"],
)
def test_a_batch_msgspec_cannot_encode_is_still_searched(odd: object) -> None:
    """A value msgspec refuses (an unknown type, a lone surrogate, a key that is neither a
    string nor a number) sends the batch through the record-by-record scan."""
    t = build_transform("clean", "redact", {"patterns": ALL})
    records: list[dict[str, Any]] = [{"m": f"line {i}"} for i in range(20)]
    records[3] = {"odd": odd, "m": f"to {MAIL}", "tags": [f"auth {TOKEN}"]}
    records[15]["m"] = f"\x01{CARD}"
    records[17]["m"] = "key=AKIAIOSFODNN7EXAMPLE"
    out = t.process(records)[DEFAULT]
    assert out[3]["odd"] is odd
    assert out[3]["m"] == "to [REDACTED:email]"
    assert out[3]["tags"] == ["auth Bearer [REDACTED:bearer_token]"]
    assert out[15]["m"] == "\x01[REDACTED:credit_card]"
    assert out[17]["m"] == "key=[REDACTED:aws_access_key]"


@pytest.mark.parametrize("prefix", ["AKIA", "ASIA", "ABIA", "ACCA"])
def test_each_access_key_prefix_is_found_by_the_batch_scan(prefix: str) -> None:
    t = build_transform("clean", "redact", {"patterns": ["aws_access_key"]})
    key = prefix + "IOSFODNN7EXAMPLE"
    records = [{"m": f"line {i} ACCESS aKiA"} for i in range(50)]
    records[31] = {"m": "plain", "headers": {"x": [f"key {key}"]}}
    out = t.process(records)[DEFAULT]
    assert out[31]["headers"] == {"x": ["key [REDACTED:aws_access_key]"]}
    assert t.counters()["redacted.aws_access_key"] == 1


def test_numbers_map_keys_and_bytes_are_left_as_they_are() -> None:
    """They are in the batch's JSON and may make a record a suspect, never change it."""
    t = build_transform("clean", "redact", {"patterns": ALL})
    record = {"n": int(CARD), "h": {MAIL: "x", "k": [int(CARD)]}, "b": CARD.encode()}
    out = t.process([dict(record)])[DEFAULT]
    assert out == [record]
    assert not {k: v for k, v in t.counters().items() if k.startswith("redacted.")}


def test_the_file_identity_is_never_searched_and_costs_no_card_check() -> None:
    """``log.file.id`` is sidekick's own (device, inode, fingerprint): a digit run in it that
    passes the Luhn check stays as it is, in a record with a secret elsewhere or without."""
    file_id = "fe 4111111111111111"  # a card number the Luhn check passes
    assert luhn_ok("4111111111111111")
    t = build_transform("clean", "redact", {"patterns": ALL})
    plain = {"log.file.id": file_id, "message": "GET /"}
    with_mail = {"log.file.id": file_id, "message": f"to {MAIL}", "note": f"{MAIL} {file_id}"}
    out = t.process([dict(plain), dict(with_mail)])[DEFAULT]
    assert out[0] == plain
    assert out[1]["log.file.id"] == file_id
    assert MAIL not in out[1]["message"]
    # The same text inside another string is searched, and so is a string that differs from
    # the file id only in its digits (the scan folds every digit to one).
    assert out[1]["note"] == "[REDACTED:email] fe [REDACTED:credit_card]"
    near = {"log.file.id": file_id, "message": "fe 5500000000000004"}
    assert t.process([dict(near)])[DEFAULT][0]["message"] == "fe [REDACTED:credit_card]"
    counts = t.counters()
    assert counts["redacted.credit_card"] == 2 and counts["redacted.email"] == 2


# Text around the secrets: letters, digits and separators that can touch a card number, every
# character JSON escapes, text that looks like an escape, and non-ASCII.
_AROUND = st.one_of(
    st.text(alphabet='aZ09 -.@\\u"é', max_size=6),
    st.sampled_from([chr(c) for c in range(0x20)] + ['"', "\\", "\x7f", "\u2028", "\\u00"]),
)
_SECRET = st.sampled_from(
    [
        CARD,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "378282246310005",
        "4111111111111112",  # fails the Luhn check
        "1763800000123",
        MAIL,
        TOKEN,
        KEY,
        SECRETS["jwt"][1] + ".eyJzdWIiOiIxIn0.c2ln",
    ]
)
_TEXT = st.lists(st.one_of(_AROUND, _SECRET), max_size=6).map("".join)
_VALUE = st.one_of(
    _TEXT,
    st.integers(),
    st.none(),
    st.lists(_TEXT, max_size=3),
    st.dictionaries(st.sampled_from(["k", MAIL]), st.one_of(_TEXT, st.lists(_TEXT)), max_size=2),
)
_RECORD = st.dictionaries(st.sampled_from(["m", "a", "b"]), _VALUE, max_size=3)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_RECORD, min_size=1, max_size=8),
    st.lists(st.sampled_from(ALL), min_size=1, unique=True),
    st.one_of(st.none(), st.lists(st.sampled_from(["m", "a", "x"]), min_size=1, unique=True)),
)
def test_the_batch_scan_finds_every_record_a_full_search_would_change(
    records: list[dict[str, Any]], patterns: list[str], fields: list[str] | None
) -> None:
    """The output is the same as when every record is searched (a user regex, here one that
    never matches, turns the needles off)."""
    options: dict[str, Any] = {"patterns": patterns, "fields": fields}
    scanned = build_transform("scanned", "redact", options)
    every = build_transform("every", "redact", {**options, "regex": "(?!)"})
    got = scanned.process(copy.deepcopy(records))[DEFAULT]
    want = every.process(copy.deepcopy(records))[DEFAULT]
    assert got == want
    assert scanned.counters() == every.counters()


def test_a_needle_at_the_very_end_of_a_batch_scanned_record_by_record() -> None:
    """The record-by-record scan (here for a value msgspec refuses) finds a needle in the last
    byte of the batch's text, and each needle after the one before it."""
    t = build_transform("clean", "redact", {"patterns": ALL})
    records = [{"odd": object(), "m": "x@"}, {"m": f"to {MAIL} and {MAIL}"}, {"m": "end @"}]
    out = t.process(records)[DEFAULT]
    assert out[0]["m"] == "x@" and out[2]["m"] == "end @"
    assert out[1]["m"] == "to [REDACTED:email] and [REDACTED:email]"
