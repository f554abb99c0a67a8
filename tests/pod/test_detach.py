"""``sidekick up --detach`` returns once the pods run; ``sidekick down`` stops them all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sidekick.pod.detach import _settled
from tests.conftest import SIDEKICK
from tests.pod.conftest import marked_pids

POD = """
apiVersion: v1
kind: Pod
metadata: {name: bg}
spec:
  terminationGracePeriodSeconds: 2
  containers:
    - name: app
      command: [sh, -c, "echo started; exec sleep 300"]
"""


def sidekick(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIDEKICK, *args], capture_output=True, text=True, timeout=60)


def test_detach_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD)
    run_dir = tmp_path / "run"
    started = sidekick("up", str(manifest), "--detach", "--run-dir", str(run_dir))
    try:
        assert started.returncode == 0, started.stderr
        assert "Started bg in the background" in started.stdout
        run_id = (run_dir / "run-id").read_text().strip()
        assert marked_pids(run_id)
        again = sidekick("up", str(manifest), "--detach", "--run-dir", str(run_dir))
        assert again.returncode == 2
        assert "already running" in again.stderr
        stopped = sidekick("down", "--run-dir", str(run_dir))
        assert stopped.returncode == 0, stopped.stderr
        assert "Stopped sidekick up" in stopped.stdout
        assert marked_pids(run_id) == []
        assert "bg/app | started" in (run_dir / "up.log").read_text()
    finally:
        sidekick("down", "--run-dir", str(run_dir), "--timeout", "1s")
    again = sidekick("down", "--run-dir", str(run_dir))
    assert again.returncode == 2
    assert "no sidekick up --detach is running" in again.stderr


def test_detach_still_reports_manifest_errors_at_once(tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD.replace("name: app", "name: app\n      ports: [{containerPort: x}]"))
    result = sidekick("up", str(manifest), "--detach", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "spec.containers[0].ports[0].containerPort: must be an integer" in result.stderr
    assert not (tmp_path / "run" / "up.pid").exists()


def _status(pod_dir: Path, ended: bool, *containers: tuple[str, str]) -> Path:
    pod_dir.mkdir(parents=True, exist_ok=True)
    statuses = [{"name": f"c{i}", "state": s, "reason": r} for i, (s, r) in enumerate(containers)]
    (pod_dir / "status.json").write_text(
        json.dumps({"ended": ended, "containerStatuses": statuses})
    )
    return pod_dir


def test_detach_waits_until_app_containers_are_past_starting(tmp_path: Path) -> None:
    # A Pod writes status.json while still Pending; returning then would report a run whose
    # processes do not exist yet.
    assert not _settled(tmp_path / "missing")
    assert not _settled(_status(tmp_path / "a", False, ("Waiting", "PodInitializing")))
    assert not _settled(
        _status(tmp_path / "b", False, ("Running", ""), ("Waiting", "ContainerCreating"))
    )
    assert _settled(_status(tmp_path / "c", False, ("Running", ""), ("Terminated", "Completed")))
    assert _settled(_status(tmp_path / "d", False, ("Waiting", "CrashLoopBackOff")))
    assert _settled(_status(tmp_path / "e", True, ("Waiting", "PodInitializing")))
