"""The modify transform: rename, copy, set (literal, template, CEL), remove."""

from __future__ import annotations

import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms import DEFAULT, build_transform


def test_rename_copy_set_remove_in_order() -> None:
    t = build_transform(
        "shape",
        "modify",
        {
            "rename": {"log": "message"},
            "copy": {"tags": "labels"},
            "set": {
                "service.name": "web",
                "ref": "{k8s.pod.name}/{http.request.method}",
                "status.class": {"cel": 'record["status"] / 100'},
                "braces": "{{literal}}",
                "n": 3,
            },
            "remove": ["secret"],
        },
    )
    record = {
        "log": "hi",
        "tags": ["a"],
        "k8s.pod.name": "web-0",
        "http.request.method": "GET",
        "status": 503,
        "secret": "x",
    }
    out = t.process([record])[DEFAULT][0]
    assert out == {
        "message": "hi",
        "tags": ["a"],
        "labels": ["a"],
        "k8s.pod.name": "web-0",
        "http.request.method": "GET",
        "status": 503,
        "service.name": "web",
        "ref": "web-0/GET",
        "status.class": 5,
        "braces": "{literal}",
        "n": 3,
    }
    out["labels"].append("b")
    assert out["tags"] == ["a"]


def test_template_with_missing_field_and_failing_cel_leave_field_and_count() -> None:
    t = build_transform(
        "shape", "modify", {"set": {"ref": "{a}/{b}", "x": {"cel": 'record["n"] + 1'}}}
    )
    out = t.process([{"a": 1, "x": "old"}, {"a": True, "b": None, "n": 1}])[DEFAULT]
    assert out[0] == {"a": 1, "x": "old"}
    assert out[1]["ref"] == "true/null" and out[1]["x"] == 2
    assert t.counters()["set_errors"] == 2


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({}, "nothing to do"),
        ({"set": {"x": "{unclosed"}}, "unmatched or empty brace"),
        ({"set": {"x": {"cell": "1"}}}, "{cel: 'EXPRESSION'}"),
        ({"set": {"x": {"cel": "record["}}}, "is not valid CEL"),
        ({"remove": "x"}, "remove: expected `array`"),
    ],
)
def test_mistakes_are_config_errors(options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_transform("shape", "modify", options)
    assert says in str(err.value)
