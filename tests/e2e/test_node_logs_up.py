"""The node-logs example (a DaemonSet) under `sidekick up`, reading a generated /var/log/pods.

The test writes the kubelet's layout (``<namespace>_<pod>_<uid>/<container>/<n>.log``, CRI
lines with partial ``P`` pieces, stdout and stderr interleaved, a compressed rotation) into a
temporary directory and points the example's ``hostPath`` volumes there; `up` translates the
mount paths in the shipper's arguments to those directories, as it does for every example.
The manifest is otherwise unchanged but for its port.
"""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_examples_up import run_up, wait_for

pytestmark = pytest.mark.slow

UID_WEB = "0b5a2ce4-6ad1-4c0e-a3d9-0d3c7f6a1e2b"
UID_JOB = "5d7e1f20-9c3b-4a8e-b6d2-3f1a0c9e8b74"


def container_log(pods: Path, ns: str, pod: str, uid: str, container: str, n: int) -> Path:
    d = pods / f"{ns}_{pod}_{uid}" / container
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{n}.log"


def by_message(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["message"]: r for r in records}


def test_node_logs_ships_every_containers_lines_joined_with_their_kubernetes_fields(
    tmp_path: Path,
) -> None:
    pods = tmp_path / "pods"
    m = uuid.uuid4().hex[:12]
    web = container_log(pods, "shop", "web-7d9f8-x2x9q", UID_WEB, "nginx", 1)
    web.write_text(
        f"2026-11-22T10:00:00.1Z stdout F {m} GET / 200\n"
        f"2026-11-22T10:00:00.2Z stderr P {m} a long \n"
        f"2026-11-22T10:00:00.3Z stdout F {m} GET /x 404\n"
        f"2026-11-22T10:00:00.4Z stderr P warning cut \n"
        f"2026-11-22T10:00:00.5Z stderr F by the runtime\n"
    )
    # A rotated, compressed file beside it: never shipped as garbage.
    (web.parent / "0.log.20261122-095900.gz").write_bytes(gzip.compress(b"old\n" * 50))
    job = container_log(pods, "batch", "report-29384", UID_JOB, "main", 0)
    job.write_text(f"2026-11-22T10:00:01Z stdout F {m} report done\n")
    replace = {
        "path: /var/log/pods": f"path: {pods}",
        "path: /var/lib/sidekick-node-logs": f"path: {tmp_path / 'state'}",
    }
    with run_up("node-logs", tmp_path, replace=replace) as pod:
        wait_for(
            "the generated lines in the shipper's output",
            lambda: len(pod.records("node-logs", m)) == 4,
            timeout=20,
        )
        # A line the app writes while the shipper runs, cut by the runtime into two pieces
        # written apart, with a line of the other stream between them: it arrives whole.
        with web.open("a") as f:
            f.write(f"2026-11-22T10:00:02.1Z stdout P {m} live \n")
            f.write(f"2026-11-22T10:00:02.2Z stderr F {m} in between\n")
        wait_for("the line between", lambda: len(pod.records("node-logs", m)) == 5, timeout=10)
        assert not pod.records("node-logs", f"{m} live")  # its first piece waits for the rest
        with web.open("a") as f:
            f.write("2026-11-22T10:00:02.3Z stdout F line end\n")
        wait_for("the joined line", lambda: len(pod.records("node-logs", m)) == 6, timeout=10)
        records = by_message(pod.records("node-logs", m))
    joined = records[f"{m} a long warning cut by the runtime"]
    assert joined["log.iostream"] == "stderr"
    assert joined["@timestamp"] == "2026-11-22T10:00:00.200000000Z"
    assert "log.flags" not in joined
    assert records[f"{m} live line end"]["log.iostream"] == "stdout"
    assert records[f"{m} in between"]["log.iostream"] == "stderr"
    nginx = records[f"{m} GET / 200"]
    assert nginx["@timestamp"] == "2026-11-22T10:00:00.100000000Z"
    assert (nginx["k8s.namespace.name"], nginx["k8s.pod.name"]) == ("shop", "web-7d9f8-x2x9q")
    assert (nginx["k8s.pod.uid"], nginx["k8s.container.name"]) == (UID_WEB, "nginx")
    assert nginx["k8s.container.restart_count"] == 1
    assert nginx["k8s.node.name"]  # spec.nodeName, this host's name
    report = records[f"{m} report done"]
    assert (report["k8s.namespace.name"], report["k8s.pod.name"]) == ("batch", "report-29384")
    assert (report["k8s.container.name"], report["k8s.container.restart_count"]) == ("main", 0)
    # Nothing of the compressed rotation was shipped.
    assert not [line for line in pod.lines("node-logs") if "old" in line and line.startswith("{")]
