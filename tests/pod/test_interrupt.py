"""A second Ctrl-C ends ``sidekick up`` at once and quietly: no asyncio traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import SIDEKICK
from tests.pod.conftest import Up

STUBBORN = """
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 60
  initContainers:
    - name: helper
      image: busybox
      restartPolicy: Always
      command: [sh, -c, 'trap "" TERM; while true; do sleep 0.2; done']
  containers:
    - name: first
      image: busybox
      command: [sh, -c, 'trap "" TERM; echo ready; while true; do sleep 0.2; done']
    - name: second
      image: busybox
      command: [sh, -c, 'trap "" TERM; while true; do sleep 0.2; done']
"""


def test_second_sigint_prints_no_traceback(start_up: Callable[..., Up]) -> None:
    up = start_up(STUBBORN)
    up.wait_for(lambda: "ready" in up.out, what="containers running")
    up.wait_for(lambda: up.container("second")["state"] == "Running", what="second running")
    up.proc.send_signal(signal.SIGINT)
    up.wait_for(lambda: "Received SIGINT, shutting down" in up.err, what="first SIGINT")
    up.wait_for(lambda: "Stopping 1 pod(s)" in up.err, what="stop begun")
    up.proc.send_signal(signal.SIGINT)
    assert up.wait_exit(20) == 130
    assert "Received second SIGINT" in up.err
    assert "Traceback" not in up.err
    assert "never retrieved" not in up.err


def test_sigterm_while_the_manifests_are_read_leaves_no_isolation_probe_behind(
    tmp_path: Path,
) -> None:
    """The isolation check starts before the manifests are read (in a directory of its own,
    under TMPDIR); a SIGTERM in that time ends up with exit code 143 and removes it."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # Enough documents that reading them (the schema check) takes a while.
    docs = [
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\ndata: {{k: v}}\n"
        for i in range(400)
    ]
    docs.append(STUBBORN)
    manifest = tmp_path / "many.yaml"
    manifest.write_text("---\n".join(docs))
    args = ["up", str(manifest), "--run-dir", str(tmp_path / "run"), "--admin-addr", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*SIDEKICK, *args],
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not list(tmp.glob("sidekick-ns-*")):
            assert proc.poll() is None and time.monotonic() < deadline, "no isolation probe"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert "Running 1 pod" not in err.decode(), "the signal came after the manifests were read"
    assert proc.returncode == 143, err.decode()
    assert list(tmp.glob("sidekick-ns-*")) == []
