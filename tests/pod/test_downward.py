"""downwardAPI volumes and resourceFieldRef env values, with the real ``sidekick up``."""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path

import pytest

from sidekick.pod.downward import go_quote, parse_quantity
from tests.pod.examples import example, run_to_end

POD = "kubernetes-downwardapi-volume-example"


def _sections(lines: list[str]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current = ""
    for line in lines:
        if line.startswith("== "):
            current = line[3:]
            out[current] = []
        elif current:
            out[current].append(line)
    return {k: "\n".join(v).strip("\n") for k, v in out.items()}


def test_volume_files_hold_labels_annotations_identity_and_resources(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("downward-volume.yaml"))
    assert done.code == 0, done.err
    lines = done.lines(f"{POD}/client-container")
    got = _sections(lines)
    # Sorted key="value" lines, quoted like Go's %q, no final newline (the next echo adds one).
    assert got["labels"].splitlines() == [
        'cluster="test-cluster1"',
        'rack="rack-22"',
        'zone="us-east-coast"',
    ]
    assert got["annotations"].splitlines() == [
        'build="two"',
        'builder="john \\"the builder\\" doe"',
    ]
    assert got["podname"] == POD
    assert got["namespace"] == "team-a"
    volume = done.run_dir / POD / "volumes" / "podinfo"
    assert re.fullmatch(r"[0-9a-f-]{36}", got["uid"])
    assert (volume / "uid").read_text() == got["uid"]
    # 250m in millicores; 125m rounded up to whole cores; memory in MiB.
    assert (got["cpu_limit"], got["cpu_request"]) == ("250", "1")
    assert (got["mem_limit"], got["mem_request"].splitlines()[0]) == ("64", "32")


def test_volume_uses_the_kubelets_data_symlink_layout(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("downward-volume.yaml"))
    assert done.code == 0, done.err
    volume = done.run_dir / POD / "volumes" / "podinfo"
    data = volume / "..data"
    assert data.is_symlink()
    target = os.readlink(data)
    assert target.startswith("..") and (volume / target).is_dir()
    for name in ("labels", "annotations", "podname", "cpu_limit"):
        assert os.readlink(volume / name) == f"..data/{name}"
        assert (volume / target / name).is_file()
    assert (volume / "labels").read_text().endswith('"us-east-coast"')  # no final newline
    listing = done.lines(f"{POD}/client-container")
    assert "..data" in listing


def test_volume_is_read_only_for_the_container(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("downward-volume.yaml"))
    assert done.code == 0, done.err
    assert done.lines(f"{POD}/client-container")[-1] == "READ-ONLY"


def test_env_resource_values_follow_requests_limits_and_divisors(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("downward-env-resources.yaml"))
    assert done.code == 0, done.err
    pod = "dapi-envars-resourcefieldref"
    # 125m in millicores; 1500m rounded up to 2 cores; MiB; bytes; a neighbour without limits
    # has the node's allocatable CPU (this machine's cores), in millicores.
    assert done.lines(f"{pod}/test-container") == [
        "125",
        "2",
        "32",
        "64",
        str(64 * 1024 * 1024),
        str((os.cpu_count() or 1) * 1000),
    ]
    mem_total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_total = int(line.split()[1]) * 1024
    # No limits: the node's allocatable CPU and memory; no request: 0.
    assert done.lines(f"{pod}/unlimited") == [str(os.cpu_count() or 1), str(mem_total), "0"]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("resource: limits.gpu", "resource: 'limits.gpu' is not supported"),
        ("resource: limits.cpu, divisor: 1Mi", "divisor: '1Mi' is not a valid divisor"),
        ("resource: limits.memory, divisor: 1m", "divisor: '1m' is not a valid divisor"),
        ("resource: limits.cpu, containerName: nope", "no container named 'nope'"),
    ],
)
def test_bad_resource_field_refs_are_refused_with_exit_2(
    tmp_path: Path, ref: str, expected: str
) -> None:
    text = f"""
apiVersion: v1
kind: Pod
metadata: {{name: bad}}
spec:
  containers:
    - name: c
      image: busybox
      command: [sleep, "1"]
      env:
        - name: X
          valueFrom:
            resourceFieldRef: {{{ref}}}
"""
    done = run_to_end(tmp_path, text)
    assert done.code == 2, done.err
    assert "spec.containers[0].env[0].valueFrom.resourceFieldRef." in done.err
    assert expected in done.err
    assert "Traceback" not in done.err


def test_volume_resource_ref_needs_a_container_name_and_status_fields_are_refused(
    tmp_path: Path,
) -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
    - name: c
      image: busybox
      command: [sleep, "1"]
      volumeMounts: [{name: info, mountPath: /info}]
  volumes:
    - name: info
      downwardAPI:
        items:
          - {path: cpu, resourceFieldRef: {resource: limits.cpu}}
          - {path: ip, fieldRef: {fieldPath: status.podIP}}
"""
    done = run_to_end(tmp_path, text)
    assert done.code == 2
    assert "items[0].resourceFieldRef.containerName: required in a volume" in done.err
    assert "items[1].fieldRef.fieldPath: 'status.podIP' cannot be in a volume" in done.err
    assert "no volume named" not in done.err


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("128Mi", Decimal(128 * 2**20)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        ("1E", Decimal(10**18)),
        ("64Ki", Decimal(65536)),
    ],
)
def test_quantities_parse_like_kubernetes(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_values_are_quoted_like_go() -> None:
    assert go_quote('a "b" \\ c\n\t\x01é') == '"a \\"b\\" \\\\ c\\n\\t\\x01é"'
