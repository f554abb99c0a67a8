"""Programs as the image has them: BusyBox's watch, and nginx with the image's configuration."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable

import pytest

from sidekick.pod.imagetools import busybox_userland
from tests.conftest import free_port
from tests.pod.conftest import Up
from tests.pod.examples import example


@pytest.mark.parametrize(
    ("image", "busybox"),
    [
        ("busybox", True),
        ("busybox:1.36", True),
        ("docker.io/library/alpine:3.20", True),
        ("registry.k8s.io/busybox", True),
        ("python:3.12-alpine", True),
        ("nginx:alpine", True),
        ("axeclbr/git", True),
        ("docker.io/alpine/git:v2.45", True),
        ("debian", False),
        ("python:3.12", False),
        ("example.com/team/alpine-tools:1", False),
    ],
)
def test_busybox_images_are_known_by_name(image: str, busybox: bool) -> None:
    assert busybox_userland(image) is busybox


def test_watch_without_a_terminal_runs_like_busybox_in_busybox_images(
    start_up: Callable[..., Up],
) -> None:
    # The host's procps watch exits at once here ("Error opening terminal").
    host = subprocess.run(
        ["watch", "-n", "1", "true"], capture_output=True, text=True, timeout=10, env={}
    )
    assert host.returncode != 0
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: poller}
        spec:
          terminationGracePeriodSeconds: 2  # as PID 1, watch ignores SIGTERM
          containers:
            - name: poll
              image: alpine:3.20
              command: ["sh", "-c", "watch -n 1 echo polled"]
        """
    )
    up.wait_for(lambda: up.out.count("polled") >= 3, timeout=30, what="three rounds")
    c = up.container("poll")
    assert (c["state"], c["restartCount"]) == ("Running", 0)
    assert "Every 1s: echo polled" in up.out
    assert up.stop() == 0


@pytest.mark.parametrize("isolation", ["on", "off"])
def test_lifecycle_handlers_run_with_the_images_nginx_and_stop_in_seconds(
    start_up: Callable[..., Up], isolation: str
) -> None:
    port = free_port()
    up = start_up(example("lifecycle-events.yaml", port=str(port)), "--isolation", isolation)

    def get(path: str) -> bytes:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return bytes(resp.read())
        except OSError:
            return b""

    body = up.wait_for(lambda: get("/message"), timeout=30, what="postStart's message served")
    assert body == b"Hello from the postStart handler\n"
    began = time.monotonic()
    assert up.stop(timeout=40) == 0
    took = time.monotonic() - began
    assert took < 10.0, up.err  # the kubelet takes about 1 s; without the fix, 30 s
    assert "preStop hook failed" not in up.err
    assert "did not stop within the grace period" not in up.err
    status = up.run_dir / "lifecycle-demo" / "status.json"
    assert '"exitCode": 0' in status.read_text()  # nginx quit gracefully, not killed
