"""The pipeline graph: every validation mistake is one sentence and exit 2; records follow
the graph (filtered records reach only the outputs after the filter, a batch no output
receives is acknowledged at once) with the real shipper."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidekick.core.errors import ConfigError
from sidekick.ship.checkpoints import STATE_FILE
from sidekick.ship.graph import build_graph
from tests.conftest import SIDEKICK
from tests.ship.helpers import read_ndjson, ship_config, shipping, wait_for


def check(tmp_path: Path, ship: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    ship.setdefault("state_dir", str(tmp_path / "state"))
    config = tmp_path / "ship.yaml"
    config.write_text(yaml.safe_dump({"ship": ship}))
    return subprocess.run(
        [*SIDEKICK, "ship", "--config", str(config), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_sentence(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sidekick: error: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def graph(tmp_path: Path, **over: Any) -> dict[str, Any]:
    """A valid graph: web -> no-probes -> everything, web -> raw."""
    ship: dict[str, Any] = {
        "inputs": {"web": {"url": f"file://{tmp_path}/logs/*.log", "parser": "json"}},
        "transforms": {
            "no-probes": {
                "type": "filter",
                "inputs": ["web"],
                "drop": 'record["url.path"] in ["/healthz", "/readyz"]',
            }
        },
        "outputs": {
            "everything": {"url": f"file://{tmp_path}/all.ndjson", "inputs": ["no-probes"]},
            "raw": {"url": f"file://{tmp_path}/raw.ndjson", "inputs": ["web"]},
        },
    }
    ship.update(over)
    return ship


def test_a_valid_graph_checks(tmp_path: Path) -> None:
    result = check(tmp_path, graph(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "web -> no-probes" in result.stdout


def test_unknown_component_name_in_an_output_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["outputs"]["everything"]["inputs"] = ["no-probe"]
    assert_one_sentence(
        check(tmp_path, ship), "output 'everything'", "'inputs'", "'no-probe'", "no-probes"
    )


def test_unknown_component_name_in_a_transform_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["transforms"]["no-probes"]["inputs"] = ["webb"]
    assert_one_sentence(check(tmp_path, ship), "transform 'no-probes'", "'webb'", "web")


def test_a_cycle_is_one_sentence_naming_it(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["transforms"] = {
        "a": {"type": "filter", "inputs": ["web", "b"], "drop": "false"},
        "b": {"type": "filter", "inputs": ["a"], "drop": "false"},
    }
    ship["outputs"]["everything"]["inputs"] = ["b"]
    assert_one_sentence(check(tmp_path, ship), "cycle", "a -> b -> a", "remove one")


def test_a_transform_nothing_reads_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["outputs"]["everything"]["inputs"] = ["web"]
    assert_one_sentence(
        check(tmp_path, ship), "transform 'no-probes'", "read by nothing", "remove it"
    )


def test_an_input_nothing_reads_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["inputs"]["spare"] = f"file://{tmp_path}/other/*.log"
    assert_one_sentence(check(tmp_path, ship), "input 'spare'", "read by nothing")


def test_an_output_with_no_input_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    del ship["outputs"]["raw"]["inputs"]
    assert_one_sentence(check(tmp_path, ship), "output 'raw'", "no inputs", "add inputs:")


def test_an_output_with_an_empty_input_list_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["outputs"]["raw"]["inputs"] = []
    assert_one_sentence(check(tmp_path, ship), "output 'raw'", "no inputs")


def test_an_expression_that_does_not_compile_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["transforms"]["no-probes"]["drop"] = 'record["url.path"] in ['
    assert_one_sentence(check(tmp_path, ship), "no-probes", "drop")


def test_an_unknown_transform_type_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["transforms"]["no-probes"]["type"] = "filtre"
    assert_one_sentence(check(tmp_path, ship), "transform 'no-probes'", "'filtre'", "filter")


def test_a_transform_without_a_type_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    del ship["transforms"]["no-probes"]["type"]
    assert_one_sentence(check(tmp_path, ship), "transform 'no-probes'", "'type'")


def test_a_branch_of_a_transform_with_one_output_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["outputs"]["everything"]["inputs"] = ["no-probes.errors"]
    assert_one_sentence(check(tmp_path, ship), "'no-probes.errors'", "no branch 'errors'")


def test_a_name_with_a_dot_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["transforms"]["no.probes"] = ship["transforms"].pop("no-probes")
    ship["outputs"]["everything"]["inputs"] = ["no.probes"]
    assert_one_sentence(check(tmp_path, ship), "'no.probes'", "rename it")


def test_a_transform_named_like_an_input_is_one_sentence(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["transforms"]["web"] = ship["transforms"].pop("no-probes")
    ship["outputs"]["everything"]["inputs"] = ["web"]
    assert_one_sentence(check(tmp_path, ship), "transform 'web'", "its own name")


def test_list_form_outputs_with_transforms_leave_them_unread(tmp_path: Path) -> None:
    ship = graph(tmp_path, outputs=[f"file://{tmp_path}/all.ndjson"])
    assert_one_sentence(check(tmp_path, ship), "transform 'no-probes'", "read by nothing")


def test_list_forms_without_transforms_are_the_shorthand(tmp_path: Path) -> None:
    cfg = ship_config(
        inputs=[f"file://{tmp_path}/a/*.log", f"file://{tmp_path}/b/*.log"],
        outputs=["stdout:", f"file://{tmp_path}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
    )
    g = build_graph(cfg)
    assert g.shorthand and not g.plans
    assert len(list(g.edges())) == 4


def test_mapping_inputs_with_list_outputs_are_the_shorthand(tmp_path: Path) -> None:
    cfg = ship_config(
        inputs={"a": f"file://{tmp_path}/a/*.log"},
        outputs=["stdout:"],
        state_dir=str(tmp_path / "state"),
    )
    assert build_graph(cfg).shorthand


async def test_records_of_a_batch_all_dropped_are_acknowledged_at_once(tmp_path: Path) -> None:
    """A file whose every line a filter drops has its checkpoint moved to its end."""
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [json.dumps({"url.path": "/healthz", "n": i}) for i in range(500)]
    (logs / "a.log").write_text("\n".join(lines) + "\n")
    ship = graph(tmp_path)
    ship["outputs"] = {"everything": ship["outputs"]["everything"]}
    cfg = ship_config(**ship, state_dir=str(tmp_path / "state"))
    async with shipping(cfg) as sh:
        size = (logs / "a.log").stat().st_size
        await wait_for(
            lambda: (
                sh.metric(
                    "sidekick_ship_component_records_total",
                    component="no-probes",
                    type="filter",
                    direction="dropped",
                )
                == 500
            )
        )
        await wait_for(lambda: sh.metric("sidekick_ship_inflight_bytes") == 0)
    state = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    offsets = [e["offset"] for e in state["streams"].values() if "offset" in e]
    assert offsets == [size]
    assert read_ndjson(tmp_path / "all.ndjson") == []


@pytest.mark.parametrize("form", ["mapping", "list"])
async def test_filtered_records_reach_only_the_outputs_after_the_filter(
    tmp_path: Path, form: str
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    paths = ["/healthz", "/x", "/readyz", "/y"] * 250
    (logs / "a.log").write_text(
        "".join(json.dumps({"url.path": p, "n": i}) + "\n" for i, p in enumerate(paths))
    )
    ship = graph(tmp_path)
    if form == "list":
        ship["inputs"] = [f"file://{tmp_path}/logs/*.log?parser=json"]
        ship["transforms"]["no-probes"]["inputs"] = [f"file://{tmp_path}/logs/*.log"]
        ship["outputs"]["raw"]["inputs"] = [f"file://{tmp_path}/logs/*.log"]
    cfg = ship_config(**ship, state_dir=str(tmp_path / "state"))
    async with shipping(cfg):
        await wait_for(lambda: len(read_ndjson(tmp_path / "raw.ndjson")) == 1000)
        await wait_for(lambda: len(read_ndjson(tmp_path / "all.ndjson")) == 500)
    kept = read_ndjson(tmp_path / "all.ndjson")
    assert [r["n"] for r in kept] == [i for i, p in enumerate(paths) if p in ("/x", "/y")]
    assert len(read_ndjson(tmp_path / "raw.ndjson")) == 1000


def test_build_graph_errors_are_config_errors(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["outputs"]["raw"]["inputs"] = ["nothing"]
    with pytest.raises(ConfigError, match="'nothing', which is no input or transform"):
        build_graph(ship_config(**ship, state_dir=str(tmp_path / "state")))


def test_a_route_branch_reference_needs_a_known_branch(tmp_path: Path) -> None:
    ship = graph(tmp_path)
    ship["transforms"]["split"] = {
        "type": "route",
        "inputs": ["no-probes"],
        "routes": {"errors": 'record["status"] >= 500'},
    }
    ship["outputs"]["raw"]["inputs"] = ["split.error"]
    assert_one_sentence(check(tmp_path, ship), "'split.error'", "split.errors", "split._unmatched")
    ship["outputs"]["raw"]["inputs"] = ["split"]
    assert_one_sentence(check(tmp_path, ship), "'split'", "several outputs", "split.errors")
