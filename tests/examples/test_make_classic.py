"""deploy/make_classic.py: the generated classic and podman variants of a manifest."""

from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
make_classic = runpy.run_path(str(REPO / "deploy" / "make_classic.py"))
expand = make_classic["expand"]
classic = make_classic["classic"]
podman = make_classic["podman"]


def pod(init: list[dict[str, object]], main: list[dict[str, object]]) -> dict[str, object]:
    return {
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"initContainers": init, "containers": main},
    }


def test_expand_replaces_a_defined_variable() -> None:
    assert expand("--output=$(OUT)", {"OUT": "stdout:"}) == "--output=stdout:"


def test_expand_keeps_an_escaped_reference_literal() -> None:
    assert expand("$$(OUT) costs $$5", {"OUT": "x"}) == "$(OUT) costs $5"


def test_expand_leaves_an_undefined_reference_as_written() -> None:
    assert expand("$(NOPE)/$(OUT)", {"OUT": "x"}) == "$(NOPE)/x"


def test_classic_moves_native_sidecars_after_the_main_container_in_order() -> None:
    doc = pod(
        [
            {"name": "setup"},
            {"name": "a", "restartPolicy": "Always"},
            {"name": "b", "restartPolicy": "Always"},
        ],
        [{"name": "app"}],
    )
    spec = classic(doc)["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["setup"]
    assert spec["containers"] == [{"name": "app"}, {"name": "a"}, {"name": "b"}]


def test_classic_leaves_the_input_unchanged() -> None:
    doc = pod([{"name": "a", "restartPolicy": "Always"}], [{"name": "app"}])
    classic(doc)
    assert doc["spec"]["initContainers"] == [{"name": "a", "restartPolicy": "Always"}]


def test_podman_publishes_the_service_target_port_and_expands_args() -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 3,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "args": ["--out=$(OUT)"],
                            "env": [{"name": "OUT", "value": "stdout:"}],
                            "ports": [
                                {"name": "http", "containerPort": 8080},
                                {"containerPort": 9000},
                            ],
                        }
                    ]
                }
            },
        },
    }
    service = {"kind": "Service", "spec": {"ports": [{"port": 80, "targetPort": "http"}]}}
    out, _ = podman([deployment, service])
    (web,) = out["spec"]["template"]["spec"]["containers"]
    assert out["spec"]["replicas"] == 1
    assert web["ports"] == [
        {"name": "http", "containerPort": 8080, "hostPort": 8080},
        {"containerPort": 9000},
    ]
    assert web["args"] == ["--out=stdout:"]
