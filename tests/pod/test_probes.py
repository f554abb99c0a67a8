"""Probes against real processes: exec, httpGet, tcpSocket, and what each setting means."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from sidekick.pod.hygiene import Tracker
from sidekick.pod.manifest import ExecAction, HTTPGetAction, Probe, TCPSocketAction
from sidekick.pod.paths import Translator
from sidekick.pod.probes import ActionContext, ProbeWorker, run_action
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
    # in a cluster) and SIGKILL ends it after the 2 s grace period. The reason is the
    # runtime's for that exit code, as the kubelet reports it, not the kill's cause.
    assert (last["reason"], last["exitCode"]) == ("Error", 137)
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


def host_context(name: str) -> ActionContext:
    """What a probe of a container without volumes or ports has, for probes run here."""
    return ActionContext(
        env={"PATH": os.environ["PATH"]},
        expand_env={},
        cwd=None,
        translate=Translator({}),
        ports={},
        tracker=Tracker(name),
        session=lambda: aiohttp.ClientSession(),
    )


async def test_a_cancelled_exec_probe_stops_even_when_cancelled_as_its_command_ends() -> None:
    # A container's probes are cancelled when it stops. Cancelling at the moment an exec
    # probe's command has just ended used to be swallowed (Python 3.11's wait_for), so the
    # probe went on forever and ``up`` only ended at its shutdown timeout, exiting 1.
    ctx = host_context("probe-cancel-test")
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


async def _attempt_times(epoch_ago: float | None, period: float, until: float) -> list[float]:
    """When (seconds after it began) a tcpSocket readiness probe reached a real listener."""
    loop = asyncio.get_running_loop()
    seen: list[float] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(loop.time())
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ctx = host_context("probe-clock-test")
    probe = Probe(TCPSocketAction(port), period=period)
    epoch = None if epoch_ago is None else loop.time() - epoch_ago
    began = loop.time()
    worker = ProbeWorker("readiness", probe, ctx, lambda ok, reason: None, epoch)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(until)
    task.cancel()
    await asyncio.wait({task})
    server.close()
    await server.wait_closed()
    return [t - began for t in seen]


async def test_probe_attempts_after_the_first_follow_the_pods_clock() -> None:
    # The Pod started 0.6 s before the container: the first attempt runs at once, the next at
    # the Pod's next tick (0.4 s later), then one period apart, as the kubelet's ticker does.
    times = await _attempt_times(0.6, 1.0, 2.2)
    assert len(times) >= 3, times
    assert times[0] < 0.3, times
    assert 0.25 < times[1] - times[0] < 0.75, times
    assert 0.8 < times[2] - times[1] < 1.3, times


async def test_without_a_pod_clock_attempts_are_one_period_apart() -> None:
    times = await _attempt_times(None, 1.0, 1.5)
    assert len(times) >= 2, times
    assert 0.9 < times[1] - times[0] < 1.4, times


def test_a_readiness_probe_that_failed_at_start_runs_again_at_the_pods_next_tick(
    start_up: Callable[..., Up],
) -> None:
    # The init container holds the main one back ~0.5 s; the probe's clock started with the
    # Pod, so its second attempt comes ~2.3 s after the container's start, not a period (3 s).
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: clock}
        spec:
          terminationGracePeriodSeconds: 2
          volumes: [{name: d, emptyDir: {}}]
          initContainers:
            - name: wait
              command: [sleep, "0.5"]
          containers:
            - name: app
              command: [sh, -c, "date +%s.%N > /d/started; sleep 0.3; touch /d/ready; exec sleep 60"]
              readinessProbe:
                exec: {command: [test, -f, /d/ready]}
                periodSeconds: 3
              volumeMounts: [{name: d, mountPath: /d}]
        """
    )
    ready_at = up.wait_for(lambda: up.container("app")["ready"] and time.time(), what="ready")
    started = float((up.run_dir / "clock" / "volumes" / "d" / "started").read_text())
    assert ready_at - started < 2.8
    assert up.stop() == 0


def test_on_failure_restarts_a_liveness_kill_even_when_it_exits_0(
    start_up: Callable[..., Up],
) -> None:
    # The program ends cleanly (exit 0) on SIGTERM, as many servers do.
    program = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "print('up', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    up = start_up(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: onfail}}
        spec:
          restartPolicy: OnFailure
          terminationGracePeriodSeconds: 2
          containers:
            - name: app
              command: [python3, -c, {program!r}]
              livenessProbe:
                exec: {{command: ["false"]}}
                initialDelaySeconds: 1
                periodSeconds: 1
                failureThreshold: 1
        """
    )
    up.wait_for(lambda: up.out.count("onfail/app | up") >= 2, timeout=20, what="a restart")
    last = up.container("app")["lastState"]
    assert (last["exitCode"], last["reason"]) == (0, "Completed")
    assert up.proc.poll() is None, up.err  # the Pod did not complete
    assert up.stop() == 0


def test_a_liveness_kill_with_a_grace_period_of_0_skips_prestop(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    """The kubelet's killContainer runs preStop only when the grace period is above 0, and
    then gives the stop signal its minimum window of 2 s (kuberuntime_container.go)."""
    marker = tmp_path / "prestop-ran"
    program = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n"
        "print('up', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    up = start_up(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: nograce}}
        spec:
          terminationGracePeriodSeconds: 0
          containers:
            - name: app
              command: [python3, -c, {program!r}]
              lifecycle:
                preStop:
                  exec: {{command: [touch, {str(marker)!r}]}}
              livenessProbe:
                exec: {{command: ["false"]}}
                initialDelaySeconds: 1
                periodSeconds: 1
                failureThreshold: 1
        """
    )
    up.wait_for(lambda: up.out.count("nograce/app | up") >= 2, timeout=20, what="a restart")
    last = up.container("app")["lastState"]
    # SIGTERM reached it (exit 3 from its handler), not SIGKILL at once.
    assert (last["exitCode"], last["reason"]) == (3, "Error")
    assert not marker.exists()
    assert "preStop hook failed" not in up.err
    assert "app: grace period is 0 s; preStop hook skipped" in up.err
    assert up.stop() == 0


@contextlib.asynccontextmanager
async def http_server(port: int | None = None) -> AsyncIterator[int]:
    """A server for httpGet actions: /ok 200, /bad 503, /to-ok and /to-bad redirect on the
    same host, /elsewhere redirects to another host name (nothing listens there), /loop
    redirects to itself, /endless answers 200 with a body that never ends."""

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        while True:
            await resp.write(b"x" * 4096)
            await asyncio.sleep(0.01)

    closed = free_port()
    answers = {
        "/ok": (200, None),
        "/bad": (503, None),
        "/to-ok": (302, "/ok"),
        "/to-bad": (302, "/bad"),
        "/elsewhere": (302, f"http://localhost:{closed}/"),
        "/loop": (302, "/loop"),
    }

    async def answer(request: web.Request) -> web.StreamResponse:
        status, location = answers[request.path]
        headers = {"Location": location} if location else {}
        return web.Response(status=status, headers=headers)

    app = web.Application()
    for path in answers:
        app.router.add_get(path, answer)
    app.router.add_get("/endless", endless)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port or 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_an_http_probe_follows_redirects_only_on_its_own_host() -> None:
    """The kubelet's prober (pkg/probe/http) follows a redirect to the same host name, up
    to 10 requests; one to another host is not followed and counts as success ("Probe
    terminated redirects"); at most 10 KiB of a body is read."""
    async with http_server() as port, aiohttp.ClientSession() as session:
        ctx = dataclasses.replace(host_context("probe-http-test"), session=lambda: session)

        async def probe(path: str) -> bool:
            ok, _ = await run_action(HTTPGetAction(port=port, path=path), ctx, 3.0)
            return ok

        assert await probe("/to-ok") is True
        assert await probe("/to-bad") is False
        assert await probe("/elsewhere") is True
        assert await probe("/loop") is False
        assert await probe("/endless") is True


async def test_an_http_hook_succeeds_whatever_the_status() -> None:
    """The kubelet's runHTTPHandler returns only the request's error: a hook answered 503
    has run; a hook that reaches no server has failed."""
    async with http_server() as port, aiohttp.ClientSession() as session:
        ctx = dataclasses.replace(host_context("hook-http-test"), session=lambda: session)
        ok, why = await run_action(HTTPGetAction(port=port, path="/bad"), ctx, 3.0, hook=True)
        assert ok, why
        ok, _ = await run_action(HTTPGetAction(port=port, path="/elsewhere"), ctx, 3.0, hook=True)
        assert not ok
