"""Probes against real processes: exec, httpGet, tcpSocket, and what each setting means."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import aiohttp

from sidekick.pod.hygiene import Tracker
from sidekick.pod.manifest import ExecAction, Probe
from sidekick.pod.paths import Translator
from sidekick.pod.probes import ActionContext, ProbeWorker
from tests.conftest import free_port
from tests.pod.conftest import Up

HTTP_SERVER = (
    "import http.server, os, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        ok = os.path.exists('/d/ready')\n"
    "        self.send_response(200 if ok else 503); self.end_headers()\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)


def pod(container: str, grace: int = 2) -> str:
    return f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: probes}}
    spec:
      terminationGracePeriodSeconds: {grace}
      volumes: [{{name: d, emptyDir: {{}}}}]
      containers:
{container}
    """


def test_httpget_readiness_follows_the_endpoint(start_up: Callable[..., Up]) -> None:
    port = free_port()
    script = HTTP_SERVER.replace("\n", "\\n")
    up = start_up(
        pod(
            f"""
        - name: web
          command: [python3, -c, "{script}", "{port}"]
          ports: [{{name: http, containerPort: {port}}}]
          readinessProbe:
            httpGet: {{path: /healthz, port: http}}
            periodSeconds: 1
            failureThreshold: 2
          volumeMounts: [{{name: d, mountPath: /d}}]
"""
        )
    )
    up.wait_for(lambda: up.container("web")["state"] == "Running", what="running")
    time.sleep(1.5)
    assert up.container("web")["ready"] is False
    ready_file = up.run_dir / "probes" / "volumes" / "d" / "ready"
    ready_file.touch()
    up.wait_for(lambda: up.container("web")["ready"], what="ready")
    ready_file.unlink()
    up.wait_for(lambda: not up.container("web")["ready"], what="not ready")
    assert up.stop() == 0


def test_tcpsocket_readiness_waits_for_the_listener(start_up: Callable[..., Up]) -> None:
    port = free_port()
    up = start_up(
        pod(
            f"""
        - name: late
          command: [python3, -c, "import socket, time; time.sleep(1.5); s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port})); s.listen(); print('listening', flush=True); time.sleep(60)"]
          readinessProbe:
            tcpSocket: {{port: {port}}}
            periodSeconds: 1
"""
        )
    )
    ready_at = up.wait_for(lambda: up.container("late")["ready"] and time.monotonic(), what="ready")
    assert "listening" in up.out
    assert ready_at - up.started >= 1.5
    assert up.stop() == 0


def test_readiness_success_threshold_needs_consecutive_successes(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        pod(
            """
        - name: app
          command: [sleep, "60"]
          readinessProbe:
            exec: {command: [test, -f, /d/ok]}
            periodSeconds: 1
            successThreshold: 3
          volumeMounts: [{name: d, mountPath: /d}]
"""
        )
    )
    up.wait_for(lambda: up.container("app")["state"] == "Running", what="running")
    made = time.monotonic()
    (up.run_dir / "probes" / "volumes" / "d" / "ok").touch()
    ready_at = up.wait_for(lambda: up.container("app")["ready"] and time.monotonic(), what="ready")
    # Three successes one period apart: at least two periods after the file appears.
    assert ready_at - made >= 1.9
    assert up.stop() == 0


def test_initial_delay_postpones_the_first_probe(start_up: Callable[..., Up]) -> None:
    up = start_up(
        pod(
            """
        - name: app
          command: [sleep, "60"]
          readinessProbe:
            exec: {command: ["true"]}
            initialDelaySeconds: 2
            periodSeconds: 1
"""
        )
    )
    ready_at = up.wait_for(lambda: up.container("app")["ready"] and time.monotonic(), what="ready")
    assert ready_at - up.started >= 2.0
    assert up.stop() == 0


def test_liveness_failure_restarts_the_container_after_failure_threshold(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        pod(
            """
        - name: app
          command: [sh, -c, "echo start >> /d/starts; touch /d/healthy; exec sleep 60"]
          livenessProbe:
            exec: {command: [test, -f, /d/healthy]}
            periodSeconds: 1
            failureThreshold: 2
          volumeMounts: [{name: d, mountPath: /d}]
"""
        )
    )
    d = up.run_dir / "probes" / "volumes" / "d"
    up.wait_for(lambda: (d / "healthy").exists(), what="healthy file")
    time.sleep(1.2)  # past the probe at 1 s, which passed and cleared any earlier failure
    removed = time.monotonic()
    (d / "healthy").unlink()
    up.wait_for(lambda: up.container("app")["restartCount"] == 1, what="restart")
    assert time.monotonic() - removed >= 1.0  # two failures, one period apart
    up.wait_for(lambda: (d / "starts").read_text() == "start\nstart\n", what="second start")
    assert "app: liveness probe failed (exit code 1); restarting it." in up.err
    last = up.container("app")["lastState"]
    # `sleep` is PID 1 of its container without a SIGTERM handler, so it ignores SIGTERM (as
    # in a cluster) and SIGKILL ends it after the 2 s grace period.
    assert (last["reason"], last["exitCode"]) == ("LivenessProbeFailed", 137)
    assert up.stop() == 0


def test_probe_timeout_counts_as_failure(start_up: Callable[..., Up]) -> None:
    up = start_up(
        pod(
            """
        - name: app
          command: [sleep, "60"]
          livenessProbe:
            exec: {command: [sleep, "5"]}
            timeoutSeconds: 1
            periodSeconds: 1
            failureThreshold: 1
"""
        )
    )
    up.wait_for(
        lambda: "liveness probe failed (command timed out after 1s)" in up.err, what="timeout"
    )
    assert up.stop() == 0


def test_startup_probe_holds_back_liveness_and_kills_on_failure(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        pod(
            """
        - name: app
          command: [sleep, "60"]
          startupProbe:
            exec: {command: ["false"]}
            periodSeconds: 1
            failureThreshold: 2
          livenessProbe:
            exec: {command: ["false"]}
            periodSeconds: 1
            failureThreshold: 1
"""
        )
    )
    up.wait_for(lambda: up.container("app")["restartCount"] >= 1, what="restart")
    assert "app: startup probe failed" in up.err
    assert "liveness probe failed" not in up.err
    assert up.container("app")["started"] is False
    assert up.stop() == 0


async def test_a_cancelled_exec_probe_stops_even_when_cancelled_as_its_command_ends() -> None:
    # A container's probes are cancelled when it stops. Cancelling at the moment an exec
    # probe's command has just ended used to be swallowed (Python 3.11's wait_for), so the
    # probe went on forever and ``up`` only ended at its shutdown timeout, exiting 1.
    ctx = ActionContext(
        env={"PATH": os.environ["PATH"]},
        expand_env={},
        cwd=None,
        translate=Translator({}),
        ports={},
        tracker=Tracker("probe-cancel-test"),
        session=lambda: aiohttp.ClientSession(),
    )
    probe = Probe(ExecAction(["false"]), period=0.01, timeout=5.0, failure_threshold=1000)
    stuck = 0
    for i in range(150):
        worker = ProbeWorker("liveness", probe, ctx, lambda ok, reason: None)
        task = asyncio.create_task(worker.run())
        # Cancel at many different moments of the attempt, many of them just as `false` exits.
        await asyncio.sleep(0.001 * (i % 25))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3.0)
        if not done:
            stuck += 1
            worker.probe = Probe(ExecAction(["false"]), period=60.0)
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
    assert stuck == 0
