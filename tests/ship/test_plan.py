"""A graph's plans (``ship/plan.py``): records are shared where nothing changes them and
copied where a branch may, so no output sees another branch's changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidekick.ship.graph import build_graph
from tests.ship.helpers import ship_config
from tests.ship.test_graph import graph


def test_a_selecting_chain_shares_records_and_a_fan_out_to_outputs_copies_nothing(
    tmp_path: Path,
) -> None:
    cfg = ship_config(**graph(tmp_path), state_dir=str(tmp_path / "state"))
    g = build_graph(cfg)
    plan = g.plans["web"]
    records = [{"url.path": "/healthz"}, {"url.path": "/x"}]
    routed = dict(plan.run(records))
    everything, raw = routed[0], routed[1]
    assert everything == [{"url.path": "/x"}]
    assert raw == records
    # Nothing changes records on either path: the outputs share them.
    assert everything[0] is records[1] and raw[1] is records[1]


def test_outputs_never_see_another_branch_s_changes(tmp_path: Path) -> None:
    ship: dict[str, Any] = {
        "inputs": {"web": f"file://{tmp_path}/logs/*.log"},
        "transforms": {
            "mask": {"type": "redact", "inputs": ["web"], "patterns": ["bearer_token"]},
            "tag": {"type": "modify", "inputs": ["web"], "set": {"tagged": "yes"}},
            "split": {
                "type": "route",
                "inputs": ["web"],
                "routes": {"a": "true", "b": "true"},
            },
            "tag-b": {"type": "modify", "inputs": ["split.b"], "set": {"b": "yes"}},
        },
        "outputs": {
            "raw": {"url": "stdout:", "inputs": ["web"]},
            "masked": {"url": f"file://{tmp_path}/m.ndjson", "inputs": ["mask"]},
            "tagged": {"url": f"file://{tmp_path}/t.ndjson", "inputs": ["tag"]},
            "a": {"url": f"file://{tmp_path}/a.ndjson", "inputs": ["split.a"]},
            "b": {"url": f"file://{tmp_path}/b.ndjson", "inputs": ["tag-b"]},
        },
    }
    g = build_graph(ship_config(**ship, state_dir=str(tmp_path / "state")))
    secret = "Authorization: Bearer abcdefgh12345678"
    records = [{"message": secret, "log.flags": ["partial"]}]
    got = {list(g.outputs)[i]: recs for i, recs in g.plans["web"].run(records)}
    assert got["raw"] == [{"message": secret, "log.flags": ["partial"]}]
    assert "abcdefgh12345678" not in got["masked"][0]["message"]
    assert "tagged" not in got["masked"][0]
    assert got["tagged"][0]["message"] == secret and got["tagged"][0]["tagged"] == "yes"
    assert got["a"] == [{"message": secret, "log.flags": ["partial"]}]
    assert got["b"][0]["b"] == "yes"
    # Lists are copies too: a change to one branch's flags stays there.
    got["tagged"][0]["log.flags"].append("x")
    assert got["raw"][0]["log.flags"] == ["partial"]
