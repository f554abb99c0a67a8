"""The filter transform: keep:/drop: by CEL, missing fields count as not matching."""

from __future__ import annotations

import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms import DEFAULT, build_transform


def test_drop_removes_matching_records_and_counts_them() -> None:
    t = build_transform(
        "no-probes", "filter", {"drop": 'record["url.path"] in ["/healthz", "/readyz"]'}
    )
    records = [{"url.path": "/healthz"}, {"url.path": "/api"}, {"url.path": "/readyz"}]
    out = t.process(records)
    assert out == {DEFAULT: [{"url.path": "/api"}]}
    assert t.counters() == {"in": 3, "out": 1, "dropped": 2}


def test_keep_keeps_only_matching_records() -> None:
    t = build_transform("errors", "filter", {"keep": 'record["http.response.status_code"] >= 500'})
    out = t.process([{"http.response.status_code": 503}, {"http.response.status_code": 200}])
    assert out[DEFAULT] == [{"http.response.status_code": 503}]


def test_missing_field_is_false_and_counted_not_raised() -> None:
    drop = build_transform("d", "filter", {"drop": 'record["url.path"] == "/healthz"'})
    keep = build_transform("k", "filter", {"keep": 'record["url.path"] == "/healthz"'})
    records = [{"message": "no path"}, {"url.path": 5}]
    assert drop.process(list(records))[DEFAULT] == records
    assert keep.process(list(records))[DEFAULT] == []
    assert drop.counters()["condition_errors"] >= 1
    assert keep.counters()["dropped"] == 2


def test_empty_batch_gives_empty_output() -> None:
    t = build_transform("f", "filter", {"keep": "true"})
    assert t.process([]) == {DEFAULT: []}


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({}, "exactly one of keep: or drop:"),
        ({"keep": "true", "drop": "false"}, "exactly one of keep: or drop:"),
        ({"keep": 'record["a"] =='}, "is not valid CEL"),
        ({"keep": 'rec["a"] == 1'}, "unknown name 'rec'"),
        ({"keep": 3}, "keep: expected `str | null`"),
        ({"kep": "true"}, "unknown option `kep`"),
    ],
)
def test_mistakes_are_one_sentence_config_errors(options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_transform("f", "filter", options)
    assert says in str(err.value)
    assert "'f'" in str(err.value)


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"type .flter. is unknown; use one of .*filter"):
        build_transform("f", "flter", {})


def test_conditions_outside_the_fast_path_run_in_cel_with_the_same_rules() -> None:
    t = build_transform("long", "filter", {"keep": 'size(record["message"]) > 3'})
    assert not t.condition.fast  # type: ignore[attr-defined]
    records = [{"message": "long enough"}, {"message": "no"}, {}, {"message": 5}]
    assert t.process(records)[DEFAULT] == [{"message": "long enough"}]
    assert t.counters()["condition_errors"] == 2


def test_simple_conditions_take_the_fast_path_and_agree_on_a_batch() -> None:
    text = 'record["http.response.status_code"] >= 500 && record["url.path"].matches("^/api/")'
    fast = build_transform("fast", "filter", {"keep": text})
    assert fast.condition.fast  # type: ignore[attr-defined]
    records = [
        {"http.response.status_code": 503, "url.path": "/api/x"},
        {"http.response.status_code": 503, "url.path": "/x"},
        {"http.response.status_code": "503", "url.path": "/api/x"},
        {"url.path": "/api/x"},
    ]
    assert fast.process(list(records))[DEFAULT] == records[:1]
    assert fast.counters()["condition_errors"] == 2


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('record["m"].matches("(")', "regex '(' does not compile"),
        ('record["a"] + 1', "gives a value of type int, not a boolean"),
        ('nosuch(record["a"])', "is not valid CEL"),
    ],
)
def test_expressions_are_checked_when_built(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_transform("f", "filter", {"keep": text})
    assert says in str(err.value)
