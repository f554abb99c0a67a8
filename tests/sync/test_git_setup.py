"""``--git-config`` is parsed as git-sync parses it."""

from __future__ import annotations

import pytest

from sidekick.core.errors import ConfigError
from sidekick.sync.git_setup import parse_git_config


def test_git_config_pairs_are_parsed_like_git_sync() -> None:
    text = 'safe.directory:*,"url.https://h/.insteadOf":git@h:,core.comment:a\\,b'
    assert parse_git_config(text) == [
        ("safe.directory", "*"),
        ("url.https://h/.insteadOf", "git@h:"),
        ("core.comment", "a,b"),
    ]


def test_git_config_without_a_colon_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="has no ':'"):
        parse_git_config("safe.directory")
