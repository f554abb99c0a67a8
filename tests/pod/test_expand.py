"""``$(VAR)`` expansion follows Kubernetes exactly."""

from __future__ import annotations

import pytest

from sidekick.pod.expand import expand

ENV = {"A": "1", "NAME": "web", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("x-$(NAME)-$(A)", "x-web-1"),
        ("$(EMPTY)", ""),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("$$", "$"),
        ("$$$$(A)", "$$(A)"),
        ("$A", "$A"),
        ("${A}", "${A}"),
        ("$(A", "$(A"),
        ("trailing $", "trailing $"),
        ("$()", "$()"),
        ("no vars", "no vars"),
    ],
)
def test_expand_matches_kubernetes(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected
