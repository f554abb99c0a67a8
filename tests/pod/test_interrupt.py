"""A second Ctrl-C ends ``sidekick up`` at once and quietly: no asyncio traceback."""

from __future__ import annotations

import signal
from collections.abc import Callable

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
