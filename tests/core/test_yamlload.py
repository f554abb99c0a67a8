"""Bounded YAML loading: ordinary aliases load as before; bombs, cycles and depth are refused."""

from __future__ import annotations

import io
import time

import pytest
import yaml

from sidekick.core.yamlload import YAMLLimitError, load_all, read_bounded

ANCHORS = """\
defaults: &defaults {image: busybox, env: &env [{name: A, value: "1"}]}
first:
  <<: *defaults
  name: first
second:
  <<: *defaults
  name: second
  env: *env
---
- &x hello
- *x
"""


def laughs(levels: int, fan_out: int = 9, text: str = "lol") -> str:
    """A "billion laughs" document: each level is ``fan_out`` aliases of the one before."""
    lines = [f"l0: &l0 [{', '.join([repr(text)] * fan_out)}]"]
    for n in range(1, levels + 1):
        lines.append(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * fan_out)}]")
    return "\n".join(lines) + "\n"


def test_ordinary_anchors_aliases_and_merge_keys_load_like_safe_load() -> None:
    assert load_all(ANCHORS) == list(yaml.safe_load_all(ANCHORS))


def test_alias_bomb_is_refused_before_it_is_built() -> None:
    started = time.monotonic()
    with pytest.raises(YAMLLimitError, match=r"document 1 has more than 1000000 values once"):
        load_all(laughs(9))  # 9**10 values once expanded
    assert time.monotonic() - started < 5


def test_alias_bomb_just_under_the_limit_loads() -> None:
    doc = laughs(2)  # 9 + 81 + 729 values: far below the limit
    assert load_all(doc, max_nodes=1000) == list(yaml.safe_load_all(doc))
    with pytest.raises(YAMLLimitError, match="more than 500 values"):
        load_all(doc, max_nodes=500)


def test_aliases_of_a_long_string_are_counted_by_their_text() -> None:
    doc = laughs(3, fan_out=10, text="x" * 100_000)  # 10**4 copies of 100 kB
    with pytest.raises(YAMLLimitError, match=r"more than 64 MiB of text once its YAML aliases"):
        load_all(doc)


def test_a_document_containing_itself_is_refused() -> None:
    with pytest.raises(YAMLLimitError, match="document 2 contains itself through a YAML alias"):
        load_all("a: 1\n---\nloop: &loop [1, *loop]\n")


def test_nesting_too_deep_for_the_parser_is_refused() -> None:
    with pytest.raises(YAMLLimitError, match="document 1 nests too deeply; flatten"):
        load_all("a: " + "[" * 5000 + "]" * 5000 + "\n")


def test_reading_stops_past_the_byte_limit() -> None:
    assert read_bounded(io.BytesIO(b"x" * 100), limit=100) == b"x" * 100
    with pytest.raises(YAMLLimitError, match="is larger than"):
        read_bounded(io.BytesIO(b"x" * 101), limit=100)
