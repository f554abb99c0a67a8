"""Seed 000 exactly as the article writes it: nginx on port 80 and a sidecar that prints its
logs every 30 s from a shared emptyDir (tests/pod/test_seed000.py runs a faster variant)."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable

from tests.pod.conftest import Up

SEED = """
apiVersion: v1
kind: Pod
metadata:
  name: webserver
spec:
  volumes:
    - name: shared-logs
      emptyDir: {}

  containers:
    - name: nginx
      image: nginx
      volumeMounts:
        - name: shared-logs
          mountPath: /var/log/nginx

    - name: sidecar-container
      image: busybox
      command: ["sh","-c","while true; do cat /var/log/nginx/access.log /var/log/nginx/error.log; sleep 30; done"]
      volumeMounts:
        - name: shared-logs
          mountPath: /var/log/nginx
"""


def _port_80_free() -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", 80))
        except OSError:
            return False
    return True


def test_seed_000_as_written_serves_on_80_and_the_sidecar_prints_the_log(
    start_up: Callable[..., Up],
) -> None:
    assert _port_80_free(), "the seed's nginx listens on port 80, which must be free here"
    up = start_up(SEED)

    def get() -> bytes:
        try:
            with urllib.request.urlopen("http://127.0.0.1/?from=seed000", timeout=2) as resp:
                return bytes(resp.read())
        except OSError:
            return b""

    assert b"Welcome to nginx!" in up.wait_for(get, timeout=30, what="nginx on port 80")
    line = '"GET /?from=seed000 HTTP/1.1" 200'
    up.wait_for(
        lambda: any(
            row.startswith("webserver/sidecar-container | ") and line in row
            for row in up.out.splitlines()
        ),
        timeout=75,
        what="the access log line printed by the sidecar (every 30 s)",
    )
    assert up.container("sidecar-container")["restartCount"] == 0
    # The sidecar's shell ignores SIGTERM as PID 1 of its container: 30 s of grace apply.
    assert up.stop(timeout=75) == 0
