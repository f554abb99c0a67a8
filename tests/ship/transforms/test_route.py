"""The route transform: branches by condition, copies for several matches, _unmatched."""

from __future__ import annotations

import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms import build_transform


def test_records_go_to_each_matching_branch_as_copies_and_the_rest_to_unmatched() -> None:
    t = build_transform(
        "split",
        "route",
        {
            "routes": {
                "server_errors": 'record["http.response.status_code"] >= 500',
                "api": 'record["url.path"].matches("^/api/")',
            }
        },
    )
    assert t.outputs == ("server_errors", "api", "_unmatched")
    a = {"http.response.status_code": 503, "url.path": "/api/x"}
    b = {"http.response.status_code": 200, "url.path": "/api/y"}
    c = {"http.response.status_code": 200, "url.path": "/"}
    d = {"message": "no fields"}
    out = t.process([a, b, c, d])
    assert out["server_errors"] == [a] and out["server_errors"][0] is a
    assert out["api"] == [a, b]
    assert out["api"][0] is not a  # a copy: a change on one branch stays there
    assert out["_unmatched"] == [c, d]
    counters = t.counters()
    assert counters["in"] == 4 and counters["out"] == 5 and counters["dropped"] == 0
    assert counters["out.api"] == 2


@pytest.mark.parametrize(
    ("routes", "says"),
    [
        ({}, "routes is empty"),
        ({"_unmatched": "true"}, "is not allowed"),
        ({"a.b": "true"}, "is not allowed"),
        ({"x": "record["}, "routes.x"),
        ({"x": 'record["a"] + 1'}, "not a boolean"),
    ],
)
def test_mistakes_are_config_errors(routes: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_transform("split", "route", {"routes": routes})
    assert says in str(err.value)
