"""``sidekick logs``, the admin server's /status, and eviction over an emptyDir sizeLimit."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable

from tests.conftest import SIDEKICK
from tests.pod.conftest import Up

TWO = """
apiVersion: v1
kind: Pod
metadata: {name: talk}
spec:
  terminationGracePeriodSeconds: 2
  containers:
    - name: first
      command: [sh, -c, "echo one; echo two; exec sleep 60"]
    - name: second
      command: [sh, -c, "echo other; exec sleep 60"]
"""


def logs(up: Up, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEKICK, "logs", *args, "--run-dir", str(up.run_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_logs_prints_the_default_container_and_names_the_choice(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(TWO)
    up.wait_for(lambda: "talk/second | other" in up.out, what="output")
    result = logs(up, "talk")
    assert result.returncode == 0
    assert result.stdout == "one\ntwo\n"
    assert 'Defaulted container "first" out of: first, second' in result.stderr
    assert logs(up, "talk", "-c", "second").stdout == "other\n"
    assert logs(up, "talk", "--tail", "1").stdout == "two\n"
    assert up.stop() == 0


def test_logs_follow_ends_when_the_pod_ends(start_up: Callable[..., Up]) -> None:
    up = start_up(TWO)
    up.wait_for(lambda: "| two\n" in up.out, what="output")
    follower = subprocess.Popen(
        [*SIDEKICK, "logs", "talk", "-f", "--run-dir", str(up.run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert up.stop() == 0
        out, _ = follower.communicate(timeout=10)
    finally:
        follower.kill()
    assert out == "one\ntwo\n"


def test_logs_unknown_pod_or_container_is_a_clear_error(start_up: Callable[..., Up]) -> None:
    up = start_up(TWO)
    up.wait_for(lambda: "talk/second | other" in up.out, what="output")
    result = logs(up, "nope")
    assert result.returncode == 2
    assert "pod 'nope' not found" in result.stderr and "talk" in result.stderr
    result = logs(up, "talk", "-c", "third")
    assert result.returncode == 2
    assert "container 'third' is not in pod 'talk'; choose one of first, second" in result.stderr
    assert up.stop() == 0


def test_status_json_and_readyz_on_the_admin_address(start_up: Callable[..., Up]) -> None:
    up = start_up(TWO)
    up.wait_for(lambda: up.status()["pods"][0]["ready"], what="pod ready")
    status = up.status()
    pod = status["pods"][0]
    assert pod["phase"] == "Running"
    assert [c["name"] for c in pod["containerStatuses"]] == ["first", "second"]
    assert all(c["state"] == "Running" and c["restartCount"] == 0 for c in pod["containerStatuses"])
    port = (up.run_dir / "admin-port").read_text().strip()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
        assert (
            'sidekick_up_container_ready{container="first",pod="talk"} 1.0' in resp.read().decode()
        )
    assert up.stop() == 0
    saved = json.loads((up.run_dir / "talk" / "status.json").read_text())
    assert (saved["ended"], saved["phase"], saved["reason"]) == (True, "Running", "Stopped")


def test_emptydir_over_size_limit_evicts_the_pod(start_up: Callable[..., Up]) -> None:
    manifest = """
    apiVersion: v1
    kind: Pod
    metadata: {name: big}
    spec:
      terminationGracePeriodSeconds: 2
      volumes: [{name: scratch, emptyDir: {sizeLimit: 1Mi}}]
      containers:
        - name: writer
          command: [sh, -c, "head -c 2000000 /dev/zero > /scratch/blob; exec sleep 60"]
          volumeMounts: [{name: scratch, mountPath: /scratch}]
    """
    up = start_up(manifest)
    assert up.wait_exit() == 1
    assert "Pod big evicted: emptyDir volume 'scratch' uses" in up.err
    assert "over its sizeLimit of 1048576 bytes" in up.err
    saved = json.loads((up.run_dir / "big" / "status.json").read_text())
    assert (saved["phase"], saved["reason"]) == ("Failed", "Evicted")
