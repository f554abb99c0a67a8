"""Double-quoted escapes: what kubectl's YAML reader (go-yaml) accepts loads here too."""

from __future__ import annotations

import pytest
import yaml

from sidekick.core.yamlload import load_all


def test_escaped_single_quote_in_double_quotes_loads() -> None:
    assert load_all("cmd: \"echo \\'hi\\'\"\n") == [{"cmd": "echo 'hi'"}]


@pytest.mark.parametrize(
    ("escape", "value"),
    [
        ("\\\\", "\\"),
        ('\\"', '"'),
        ("\\t", "\t"),
        ("\\x41", "A"),
        ("\\u00e9", "é"),
        ("\\e", "\x1b"),
    ],
)
def test_the_other_escapes_are_unchanged(escape: str, value: str) -> None:
    assert load_all(f'v: "a{escape}b"\n') == [{"v": f"a{value}b"}]


def test_an_unknown_escape_is_still_an_error() -> None:
    with pytest.raises(yaml.YAMLError, match="unknown escape character 'q'"):
        load_all('v: "a\\qb"\n')
