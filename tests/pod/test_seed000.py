"""Seed 000: nginx with a log-reading sidecar on a shared emptyDir, with the real nginx.

The article's manifest is used as written, with three changes for a test machine: a ConfigMap
mounted at /etc/nginx/conf.d makes nginx listen on a free port instead of 80 (the nginx
image reads its servers from there, so this is how one would do it on a cluster too), the
sidecar's loop sleeps 1 s instead of 30 s, and the grace period is 3 s instead of the default
30 s. The sidecar's shell is PID 1 of its container without a SIGTERM handler, so, as the
kubelet does, a stop waits the whole grace period for it, then SIGKILLs it (exit code 137);
nginx quits on its image's stop signal at once.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from tests.conftest import free_port
from tests.pod.conftest import Up

SEED = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: nginx-conf
data:
  default.conf: |
    server {{
        listen 127.0.0.1:{port};
        location / {{
            root /usr/share/nginx/html;
        }}
    }}
---
apiVersion: v1
kind: Pod
metadata:
  name: webserver
spec:
  terminationGracePeriodSeconds: 3
  volumes:
    - name: shared-logs
      emptyDir: {{}}
    - name: nginx-conf
      configMap:
        name: nginx-conf

  containers:
    - name: nginx
      image: nginx
      volumeMounts:
        - name: shared-logs
          mountPath: /var/log/nginx
        - name: nginx-conf
          mountPath: /etc/nginx/conf.d

    - name: sidecar-container
      image: busybox
      command: ["sh","-c","while true; do cat /var/log/nginx/access.log /var/log/nginx/error.log; sleep 1; done"]
      volumeMounts:
        - name: shared-logs
          mountPath: /var/log/nginx
"""


def test_seed_000_sidecar_prints_nginx_access_log(start_up: Callable[..., Up]) -> None:
    port = free_port()
    up = start_up(SEED.format(port=port))

    def get() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                return int(resp.status)
        except OSError:
            return 0

    assert up.wait_for(get, what="nginx answering") == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html?from=seed000") as resp:
        assert b"Welcome to nginx!" in resp.read()
    line = '"GET /index.html?from=seed000 HTTP/1.1" 200'
    up.wait_for(
        lambda: any(
            row.startswith("webserver/sidecar-container | ") and line in row
            for row in up.out.splitlines()
        ),
        what="access log line printed by the sidecar",
    )
    log = up.run_dir / "webserver" / "volumes" / "shared-logs" / "access.log"
    assert line in log.read_text()
    _assert_stops_as_the_kubelet_does(up)


def _assert_stops_as_the_kubelet_does(up: Up) -> None:
    began = time.monotonic()
    assert up.stop(timeout=30) == 0, up.err
    took = time.monotonic() - began
    assert "webserver/nginx Terminated (Completed, exit code 0)" in up.err
    assert "did not stop within the grace period of 3s; sending SIGKILL" in up.err
    assert "webserver/sidecar-container Terminated (Error, exit code 137)" in up.err
    assert took >= 3.0


def test_nginx_command_without_config_flag_reads_the_image_config(
    start_up: Callable[..., Up],
) -> None:
    # `command: [nginx, -g, "daemon off;"]` reads nginx's built-in /etc/nginx/nginx.conf,
    # which in the image includes the ConfigMap mounted at /etc/nginx/conf.d.
    port = free_port()
    manifest = SEED.format(port=port).replace(
        "      image: nginx\n",
        '      image: nginx:1.27\n      command: [nginx, -g, "daemon off;"]\n',
    )
    up = start_up(manifest)

    def get() -> bytes:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                return bytes(resp.read())
        except OSError:
            return b""

    assert b"Welcome to nginx!" in up.wait_for(get, what="nginx answering")
    _assert_stops_as_the_kubelet_does(up)
