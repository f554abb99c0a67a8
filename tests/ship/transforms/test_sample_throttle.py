"""The sample and throttle transforms."""

from __future__ import annotations

import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms import DEFAULT, build_transform
from sidekick.ship.transforms.throttle import ThrottleOptions, ThrottleTransform


def test_sample_keeps_whole_traces_and_about_one_in_n() -> None:
    t = build_transform("s", "sample", {"rate": 4, "key": "trace.id"})
    records = [{"trace.id": f"t{i // 3}", "i": i} for i in range(3000)]
    kept = t.process(records)[DEFAULT]
    traces = {r["trace.id"] for r in kept}
    assert all(sum(1 for r in kept if r["trace.id"] == tr) == 3 for tr in list(traces)[:50])
    assert 150 < len(traces) < 350  # of 1000 traces, about 250
    again = build_transform("s2", "sample", {"rate": 4, "key": "trace.id"})
    assert again.process([dict(r) for r in records])[DEFAULT] == kept
    c = t.counters()
    assert c["in"] == 3000 and c["out"] + c["dropped"] == 3000


def test_sample_exempt_is_never_sampled_and_no_key_samples_by_count() -> None:
    t = build_transform("s", "sample", {"rate": 10, "exempt": 'record["log.level"] == "error"'})
    records = [{"log.level": "error" if i % 7 == 0 else "info", "i": i} for i in range(100)]
    kept = t.process(records)[DEFAULT]
    assert all(r in kept for r in records if r["log.level"] == "error")
    infos = [r for r in kept if r["log.level"] == "info"]
    assert [r["i"] for r in infos] == [i for i in range(0, 100, 10) if i % 7]


def test_throttle_limits_per_key_per_window_and_counts() -> None:
    now = [100.0]
    t = ThrottleTransform(
        "t", ThrottleOptions(limit=2, window="1s", key="k8s.pod.name"), clock=lambda: now[0]
    )
    batch = [{"k8s.pod.name": p, "i": i} for i in range(4) for p in ("a", "b")] + [{"i": 9}]
    out = t.process(batch)
    assert [(r.get("k8s.pod.name"), r["i"]) for r in out[DEFAULT]] == [
        ("a", 0),
        ("b", 0),
        ("a", 1),
        ("b", 1),
        (None, 9),
    ]
    assert t.counters()["dropped"] == 4 and t.counters()["throttled"] == 4
    assert len(t.process([{"k8s.pod.name": "a"}])[DEFAULT]) == 0
    now[0] = 101.0
    assert len(t.process([{"k8s.pod.name": "a"}] * 3)[DEFAULT]) == 2


def test_throttle_excess_output_and_bounded_keys() -> None:
    t = ThrottleTransform(
        "t", ThrottleOptions(limit=1, key="id", excess="output", max_keys=3), clock=lambda: 5.0
    )
    assert t.outputs == (DEFAULT, "excess")
    out = t.process([{"id": i} for i in range(10)] + [{"id": [1]}])
    assert [r["id"] for r in out[DEFAULT]] == [0, 1, 2, 3]  # 3 keys, then one shared count
    assert len(out["excess"]) == 7
    assert t.counters()["dropped"] == 0 and len(t._counts) == 4


@pytest.mark.parametrize(
    ("kind", "options", "says"),
    [
        ("sample", {"rate": 0}, "rate 0 is below 1"),
        ("sample", {}, "missing required field `rate`"),
        ("throttle", {"limit": 5, "window": "soon"}, "window"),
        ("throttle", {"limit": 5, "excess": "keep"}, "excess"),
    ],
)
def test_mistakes_are_config_errors(kind: str, options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_transform("x", kind, options)
    assert says in str(err.value)
