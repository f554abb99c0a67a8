"""The redact transform: built-in patterns, user regexes, fields, mask and keyed hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms import DEFAULT, build_transform
from sidekick.ship.transforms.redact import BUILTIN, luhn_ok

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
    records = [{"a": "x@y.org", "b": ["x@y.org"], "c": 5, "d": None, "e": "fine"}]
    assert t.process(records)[DEFAULT] == [
        {"a": "[REDACTED:email]", "b": ["x@y.org"], "c": 5, "d": None, "e": "fine"}
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
