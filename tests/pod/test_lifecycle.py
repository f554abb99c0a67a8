"""The kubelet's order and termination rules, measured from timestamps the containers write."""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import free_port
from tests.pod.conftest import Up, marked_pids, read_times


def ev(name: str) -> str:
    """Shell that appends ``name <unix time>`` to the shared events file."""
    return f"echo {name} $$(date +%s.%N) >> /ts/events"


def looping(name: str, before: str = "") -> str:
    """A container that records its start and its SIGTERM, then exits 0 on SIGTERM.

    The trap is set before the start is recorded: the shell is PID 1 of its container, which
    ignores a SIGTERM that comes before the trap (as in a cluster), so a test that stops the
    Pod once it has seen ``NAME-start`` knows the SIGTERM will be recorded.
    """
    return (
        f"trap '{ev(name + '-term')}; exit 0' TERM; {ev(name + '-start')}; {before}"
        "while true; do sleep 0.05; done"
    )


MOUNT = "volumeMounts: [{name: ts, mountPath: /ts}]"


def events(up: Up, pod: str = "order") -> dict[str, float]:
    path = up.run_dir / pod / "volumes" / "ts" / "events"
    return read_times(path) if path.exists() else {}


ORDER = f"""
apiVersion: v1
kind: Pod
metadata: {{name: order}}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{{name: ts, emptyDir: {{}}}}]
  initContainers:
    - name: init1
      command: [sh, -c, "{ev("init1-start")}; sleep 0.2; {ev("init1-end")}"]
      {MOUNT}
    - name: init2
      command: [sh, -c, "{ev("init2-start")}; sleep 0.2; {ev("init2-end")}"]
      {MOUNT}
    - name: side1
      restartPolicy: Always
      command: [sh, -c, "{looping("side1", f"sleep 0.3; {ev('side1-ready')}; touch /ts/side1-ready; ")}"]
      startupProbe:
        exec: {{command: [test, -f, /ts/side1-ready]}}
        periodSeconds: 1
        failureThreshold: 10
      {MOUNT}
    - name: side2
      restartPolicy: Always
      command: [sh, -c, "{looping("side2", "touch /ts/side2-up; ")}"]
      # Without a startupProbe a sidecar counts as started as soon as its process exists,
      # before its shell has written anything; the probe makes its clock comparable.
      startupProbe:
        exec: {{command: [test, -f, /ts/side2-up]}}
        periodSeconds: 1
      {MOUNT}
  containers:
    - name: main1
      command: [sh, -c, "{looping("main1")}"]
      {MOUNT}
    - name: main2
      command: [sh, -c, "{looping("main2")}"]
      {MOUNT}
"""


def test_start_order_is_inits_then_sidecars_after_startup_then_mains(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(ORDER)
    # Each container start runs the namespace setup first: main1's shell may write after
    # main2's on a busy machine.
    up.wait_for(
        lambda: {"main1-start", "main2-start"} <= events(up).keys(), what="main start events"
    )
    t = events(up)
    assert t["init1-end"] <= t["init2-start"]
    assert t["init2-end"] <= t["side1-start"]
    # side2 waits for side1's startupProbe, which can only pass after side1-ready.
    assert t["side1-ready"] <= t["side2-start"]
    # Main containers are started one after the other without waiting for each other, so
    # only their start after the sidecars is an order their own clocks can show.
    assert t["side2-start"] <= min(t["main1-start"], t["main2-start"])
    assert up.stop() == 0


def test_stop_terminates_mains_then_sidecars_in_reverse_order(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(ORDER)
    up.wait_for(lambda: up.container("main2")["state"] == "Running", what="main2 running")
    # Every shell has set its trap (see looping); the sidecars' startupProbes saw theirs.
    up.wait_for(
        lambda: {"main1-start", "main2-start"} <= events(up).keys(), what="main start events"
    )
    assert up.stop() == 0
    t = events(up)
    assert max(t["main1-term"], t["main2-term"]) <= t["side2-term"] <= t["side1-term"]


JOB = f"""
apiVersion: v1
kind: Pod
metadata: {{name: order}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  volumes: [{{name: ts, emptyDir: {{}}}}]
  initContainers:
    - name: side
      restartPolicy: Always
      command: [sh, -c, "{looping("side", "touch /ts/side-up; ")}"]
      # Started once its trap is set, so the SIGTERM after the job is recorded.
      startupProbe:
        exec: {{command: [test, -f, /ts/side-up]}}
        periodSeconds: 1
      {MOUNT}
  containers:
    - name: job
      command: [sh, -c, "{ev("job-start")}; sleep 0.3; {ev("job-end")}; exit $(CODE)"]
      env: [{{name: CODE, value: "0"}}]
      {MOUNT}
"""


def test_job_completion_stops_sidecars_and_exits_zero(start_up: Callable[..., Up]) -> None:
    up = start_up(JOB)
    assert up.wait_exit() == 0
    t = events(up)
    assert t["job-end"] <= t["side-term"]
    status = json.loads((up.run_dir / "order" / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    assert "Pod order completed" in up.err


def test_job_with_failed_main_container_exits_one(start_up: Callable[..., Up]) -> None:
    up = start_up(JOB.replace('value: "0"', 'value: "3"'))
    assert up.wait_exit() == 1
    status = json.loads((up.run_dir / "order" / "status.json").read_text())
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["exitCode"] == 3
    assert "side-term" in events(up)


def test_failed_init_container_under_never_fails_pod_without_starting_mains(
    start_up: Callable[..., Up],
) -> None:
    manifest = f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: order}}
    spec:
      restartPolicy: Never
      volumes: [{{name: ts, emptyDir: {{}}}}]
      initContainers:
        - name: init
          command: [sh, -c, "{ev("init-start")}; exit 4"]
          {MOUNT}
      containers:
        - name: main
          command: [sh, -c, "{ev("main-start")}"]
          {MOUNT}
    """
    up = start_up(manifest)
    assert up.wait_exit() == 1
    assert "init-start" in events(up)
    assert "main-start" not in events(up)
    assert "init container 'init' exited with code 4" in up.err


def test_restart_backoff_delays_double(start_up: Callable[..., Up]) -> None:
    manifest = f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: order}}
    spec:
      volumes: [{{name: ts, emptyDir: {{}}}}]
      containers:
        - name: crash
          command: [sh, -c, "echo start $$(date +%s.%N) >> /ts/starts; exit 1"]
          {MOUNT}
    """
    up = start_up(manifest)
    starts_file = up.run_dir / "order" / "volumes" / "ts" / "starts"
    up.wait_for(
        lambda: starts_file.exists() and len(starts_file.read_text().splitlines()) >= 5,
        what="5 starts",
    )
    starts = [float(line.split()[1]) for line in starts_file.read_text().splitlines()]
    gaps = [b - a for a, b in itertools.pairwise(starts)][:4]
    # As the kubelet: the first restart at once, then --fast-backoff's 0.1 s, 0.2 s, 0.4 s,
    # plus the start-up time of sh (the lower bounds show the doubling; the upper ones, far
    # below the kubelet's 10 s, leave room for a busy machine).
    for expected, gap in zip([0.0, 0.1, 0.2, 0.4], gaps, strict=True):
        assert expected <= gap < expected + 3.0, gaps
    delays = re.findall(r"order/crash exited with code 1; restarting (it|in \S+)\.", up.err)
    assert delays[:4] == ["it", "in 0.1s", "in 0.2s", "in 0.4s"]
    assert up.container("crash")["restartCount"] >= 4
    assert up.stop() == 0


def test_on_failure_does_not_restart_a_successful_container(start_up: Callable[..., Up]) -> None:
    manifest = f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: order}}
    spec:
      restartPolicy: OnFailure
      volumes: [{{name: ts, emptyDir: {{}}}}]
      containers:
        - name: once
          command: [sh, -c, "echo run >> /ts/runs; exit 0"]
          {MOUNT}
    """
    up = start_up(manifest)
    assert up.wait_exit() == 0
    assert (up.run_dir / "order" / "volumes" / "ts" / "runs").read_text() == "run\n"


def test_prestop_runs_before_sigterm(start_up: Callable[..., Up]) -> None:
    manifest = f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: order}}
    spec:
      terminationGracePeriodSeconds: 5
      volumes: [{{name: ts, emptyDir: {{}}}}]
      containers:
        - name: web
          command: [sh, -c, "{looping("web")}"]
          lifecycle:
            preStop:
              exec: {{command: [sh, -c, "{ev("prestop")}; sleep 0.3"]}}
          {MOUNT}
    """
    up = start_up(manifest)
    up.wait_for(lambda: up.container("web")["state"] == "Running", what="web running")
    up.wait_for(lambda: "web-start" in events(up), what="start event")
    assert up.stop() == 0
    t = events(up)
    assert t["prestop"] + 0.3 <= t["web-term"]


def test_poststart_hook_runs_after_start(start_up: Callable[..., Up]) -> None:
    manifest = f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: order}}
    spec:
      terminationGracePeriodSeconds: 5
      volumes: [{{name: ts, emptyDir: {{}}}}]
      containers:
        - name: web
          command: [sh, -c, "{looping("web")}"]
          lifecycle:
            postStart:
              exec: {{command: [sh, -c, "{ev("poststart")}"]}}
          {MOUNT}
    """
    up = start_up(manifest)
    up.wait_for(lambda: "poststart" in events(up), what="postStart event")
    assert up.stop() == 0


def test_grace_period_ends_with_sigkill(start_up: Callable[..., Up]) -> None:
    manifest = """
    apiVersion: v1
    kind: Pod
    metadata: {name: order}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: stubborn
          command: [python3, -c, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(100)"]
    """
    up = start_up(manifest)
    up.wait_for(lambda: "up" in up.out, what="container output")
    began = time.monotonic()
    assert up.stop(signal.SIGTERM) == 0
    took = time.monotonic() - began
    assert 1.0 <= took < 8.0  # the grace period of 1 s, with room for a busy machine
    status = json.loads((up.run_dir / "order" / "status.json").read_text())
    assert status["containerStatuses"][0]["exitCode"] == 137
    assert "did not stop within the grace period of 1s; sending SIGKILL" in up.err


def test_second_sigint_kills_at_once(start_up: Callable[..., Up]) -> None:
    manifest = """
    apiVersion: v1
    kind: Pod
    metadata: {name: order}
    spec:
      terminationGracePeriodSeconds: 60
      containers:
        - name: stubborn
          command: [python3, -c, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(100)"]
    """
    up = start_up(manifest)
    run_id = up.run_id
    up.wait_for(lambda: "up" in up.out, what="container output")
    up.proc.send_signal(signal.SIGINT)
    # Only once the first one is handled: two SIGINTs pending at once would merge into one.
    up.wait_for(lambda: "Received SIGINT, shutting down" in up.err, what="first SIGINT")
    began = time.monotonic()
    up.proc.send_signal(signal.SIGINT)
    up.wait_exit(20)
    assert time.monotonic() - began < 10.0  # not the 60 s grace period
    assert "Received second SIGINT" in up.err
    assert marked_pids(run_id) == []


def test_sidecar_output_is_prefixed_and_logged(start_up: Callable[..., Up], tmp_path: Path) -> None:
    manifest = """
    apiVersion: v1
    kind: Pod
    metadata: {name: order}
    spec:
      restartPolicy: Never
      containers:
        - name: talker
          command: [sh, -c, "echo hello; echo to-stderr >&2; printf no-newline"]
    """
    up = start_up(manifest)
    assert up.wait_exit() == 0
    assert "order/talker | hello\n" in up.out
    assert "order/talker | to-stderr\n" in up.out
    assert "order/talker | no-newline\n" in up.out
    log = (up.run_dir / "order" / "logs" / "talker.log").read_text()
    assert log == "hello\nto-stderr\nno-newline\n"


def test_failed_init_container_is_retried_with_backoff_until_it_succeeds(
    start_up: Callable[..., Up],
) -> None:
    manifest = f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: order}}
    spec:
      restartPolicy: Always
      terminationGracePeriodSeconds: 2
      volumes: [{{name: ts, emptyDir: {{}}}}]
      initContainers:
        - name: flaky
          command: [sh, -c, "echo try >> /ts/tries; test $$(wc -l < /ts/tries) -ge 3"]
          {MOUNT}
      containers:
        - name: main
          command: [sh, -c, "{looping("main")}"]
          {MOUNT}
    """
    up = start_up(manifest)
    up.wait_for(lambda: "main-start" in events(up), what="main start")
    tries = (up.run_dir / "order" / "volumes" / "ts" / "tries").read_text()
    assert tries == "try\ntry\ntry\n"
    assert up.container("flaky")["restartCount"] == 2
    assert up.stop() == 0


def test_prestop_http_hook_is_called(start_up: Callable[..., Up], tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    server = (
        "import http.server, sys\\n"
        "class H(http.server.BaseHTTPRequestHandler):\\n"
        "    def do_GET(self):\\n"
        "        print('hook', self.path, flush=True); self.send_response(200); self.end_headers()\\n"
        "    def log_message(self, *a): pass\\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\\n"
    )
    manifest = f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: order}}
    spec:
      terminationGracePeriodSeconds: 3
      containers:
        - name: web
          command: [python3, -c, "{server}", "{port}"]
          readinessProbe: {{tcpSocket: {{port: {port}}}, periodSeconds: 1}}
          lifecycle:
            preStop:
              httpGet: {{path: /drain, port: {port}}}
    """
    up = start_up(manifest)
    up.wait_for(lambda: up.container("web")["ready"], what="ready")
    assert up.stop() == 0
    assert "order/web | hook /drain" in up.out


def test_missing_program_is_a_start_error_that_names_it(start_up: Callable[..., Up]) -> None:
    manifest = """
    apiVersion: v1
    kind: Pod
    metadata: {name: order}
    spec:
      restartPolicy: Never
      containers:
        - name: typo
          command: [no-such-program-here, --flag]
    """
    up = start_up(manifest)
    assert up.wait_exit() == 1
    assert "order/typo: cannot run 'no-such-program-here'" in up.err
    status = json.loads((up.run_dir / "order" / "status.json").read_text())
    assert status["containerStatuses"][0]["reason"] == "StartError"


def test_backoff_resets_after_a_long_enough_run(start_up: Callable[..., Up]) -> None:
    # --fast-backoff resets after a run of 4 s (the kubelet: 10 min). Runs 1 and 2 crash at
    # once (restart at once, then after 0.1 s); run 3 lasts 4.5 s; without the reset the
    # next delay would be 0.2 s, with it the restart is at once again, as the first.
    script = (
        "n=$$(($$(cat /ts/n 2>/dev/null || echo 0) + 1)); echo $$n > /ts/n; "
        "echo start-$$n $$(date +%s.%N) >> /ts/events; "
        "if [ $$n -eq 3 ]; then sleep 4.5; fi; "
        "echo end-$$n $$(date +%s.%N) >> /ts/events; exit 1"
    )
    manifest = f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: order}}
    spec:
      volumes: [{{name: ts, emptyDir: {{}}}}]
      containers:
        - name: crash
          command: [sh, -c, "{script}"]
          {MOUNT}
    """
    up = start_up(manifest)
    up.wait_for(lambda: "start-4" in events(up), timeout=30, what="fourth start")
    t = events(up)
    assert t["start-3"] - t["end-2"] >= 0.1
    # The delay chosen after run 3, from up's own message: measuring the gap between the
    # processes could not tell 0 s from 0.2 s on a busy machine.
    delays = re.findall(r"order/crash exited with code 1; restarting (it|in \S+)\.", up.err)
    assert delays[:3] == ["it", "in 0.1s", "it"]
    assert up.stop() == 0


def test_lifecycle_stop_signal_is_sent_instead_of_sigterm(start_up: Callable[..., Up]) -> None:
    manifest = f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: order}}
    spec:
      terminationGracePeriodSeconds: 5
      volumes: [{{name: ts, emptyDir: {{}}}}]
      containers:
        - name: web
          command: [sh, -c, "{ev("start")}; trap '{ev("usr1")}; exit 0' USR1; trap '{ev("term")}; exit 0' TERM; while true; do sleep 0.05; done"]
          lifecycle: {{stopSignal: SIGUSR1}}
          {MOUNT}
    """
    up = start_up(manifest)
    up.wait_for(lambda: "start" in events(up), what="start")
    assert up.stop() == 0
    assert "usr1" in events(up) and "term" not in events(up)


def test_stop_does_not_wait_for_a_hanging_poststart_hook(start_up: Callable[..., Up]) -> None:
    manifest = """
    apiVersion: v1
    kind: Pod
    metadata: {name: order}
    spec:
      terminationGracePeriodSeconds: 30
      containers:
        - name: web
          # PID 1 of its namespace: without the trap SIGTERM would not stop it.
          command: [sh, -c, "trap 'exit 0' TERM; echo up; sleep 60 & wait"]
          lifecycle:
            postStart:
              exec: {command: [sleep, "60"]}
        - name: never
          command: [sh, -c, "echo second; exec sleep 60"]
    """
    up = start_up(manifest)
    up.wait_for(lambda: "| up\n" in up.out, what="first container")
    began = time.monotonic()
    assert up.stop() == 0
    assert time.monotonic() - began < 10.0  # not the 30 s grace period of the hook
    assert "second" not in up.out


CLEAN_EXIT = (
    "import signal, sys, time\n"
    "def term(*_):\n"
    "    time.sleep(0.5)\n"
    "    print('cleaned up', flush=True)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, term)\n"
    "print('up', flush=True)\n"
    "while True:\n"
    "    time.sleep(0.05)\n"
)


def test_a_stop_with_a_grace_period_of_0_runs_prestop_and_leaves_2_s_for_the_signal(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: quick}}
        spec:
          terminationGracePeriodSeconds: 0
          volumes: [{{name: ts, emptyDir: {{}}}}]
          containers:
            - name: app
              command: [python3, -c, {json.dumps(CLEAN_EXIT)}]
              lifecycle:
                preStop:
                  exec: {{command: [sh, -c, "sleep 0.3; echo done > /ts/prestop"]}}
              {MOUNT}
        """
    )
    up.wait_for(lambda: "up" in up.out, what="container output")
    assert up.stop(signal.SIGTERM) == 0
    status = json.loads((up.run_dir / "quick" / "status.json").read_text())
    assert status["containerStatuses"][0]["exitCode"] == 0, up.err
    assert "quick/app | cleaned up" in up.out
    assert "sending SIGKILL" not in up.err
    # A stop gives the Pod at least 1 s, so a short preStop runs to its end.
    assert (up.run_dir / "quick" / "volumes" / "ts" / "prestop").read_text() == "done\n"


def test_a_liveness_kill_with_a_grace_period_of_0_leaves_2_s_for_the_signal(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: quick}}
        spec:
          terminationGracePeriodSeconds: 0
          containers:
            - name: app
              command: [python3, -c, {json.dumps(CLEAN_EXIT)}]
              livenessProbe:
                exec: {{command: ["false"]}}
                initialDelaySeconds: 1  # once the handler is in place
                periodSeconds: 1
                failureThreshold: 1
        """
    )
    up.wait_for(lambda: up.container("app").get("lastState"), timeout=20, what="a restart")
    last = up.container("app")["lastState"]
    assert last["exitCode"] == 0, (last, up.err)
    assert "quick/app | cleaned up" in up.out
    assert "sending SIGKILL" not in up.err


def test_a_failed_poststart_hook_runs_prestop_before_the_container_is_killed(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: order}}
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 5
          volumes: [{{name: ts, emptyDir: {{}}}}]
          containers:
            - name: web
              command: [sh, -c, "{looping("web")}"]
              lifecycle:
                postStart:
                  exec: {{command: [sh, -c, "sleep 0.3; exit 1"]}}
                preStop:
                  exec: {{command: [sh, -c, "{ev("prestop")}"]}}
              {MOUNT}
        """
    )
    up.wait_exit(20)
    seen = events(up)
    assert "prestop" in seen, (seen, up.err)
    assert seen["prestop"] < seen["web-term"]
    status = json.loads((up.run_dir / "order" / "status.json").read_text())
    web = status["containerStatuses"][0]
    # The runtime's reason for the exit code, as the kubelet reports it; the hook's failure
    # is in the message.
    assert web["reason"] == ("Completed" if web["exitCode"] == 0 else "Error"), web
    assert web["message"].startswith("postStart hook failed: "), web


def test_active_deadline_fails_the_pod_and_stops_it_gracefully(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: order}}
        spec:
          activeDeadlineSeconds: 1
          volumes: [{{name: ts, emptyDir: {{}}}}]
          containers:
            - name: web
              command: [sh, -c, "{looping("web")}"]
              {MOUNT}
        """
    )
    assert up.wait_exit(20) == 1, up.err
    seen = events(up)
    assert 0.8 <= seen["web-term"] - seen["web-start"] < 5.0, seen
    status = json.loads((up.run_dir / "order" / "status.json").read_text())
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")
    assert status["message"] == "Pod was active on the node longer than the specified deadline"
    assert status["containerStatuses"][0]["exitCode"] == 0  # stopped by its SIGTERM trap


def test_a_poststart_http_hook_answered_with_an_error_status_has_run(
    start_up: Callable[..., Up],
) -> None:
    """The kubelet's runHTTPHandler looks at no status: a postStart httpGet answered 503 is
    a hook that ran, so the container is not killed."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import http.server, sys\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        self.send_response(503); self.end_headers()\n"
            "    def log_message(self, *a): pass\n"
            "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n",
            str(port),
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the test server did not start"
                time.sleep(0.05)
        up = start_up(
            f"""
            apiVersion: v1
            kind: Pod
            metadata: {{name: order}}
            spec:
              restartPolicy: Never
              terminationGracePeriodSeconds: 2
              containers:
                - name: web
                  command: [sleep, "60"]
                  lifecycle:
                    postStart:
                      httpGet: {{path: /started, port: {port}}}
            """
        )
        up.wait_for(lambda: up.container("web")["started"], what="started")
        time.sleep(0.5)
        assert up.container("web")["state"] == "Running", up.err
        assert "postStart hook failed" not in up.err
        assert up.stop() == 0
    finally:
        server.kill()
        server.wait()


def test_a_prestop_hook_is_waited_for_at_most_the_grace_period(
    start_up: Callable[..., Up],
) -> None:
    """executePreStopHook waits for the hook at most the grace period, whatever the hook
    (here a sleep hook ten times longer); the stop signal then gets its 2 s."""
    up = start_up(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: quick}}
        spec:
          terminationGracePeriodSeconds: 2
          containers:
            - name: app
              command: [python3, -c, {json.dumps(CLEAN_EXIT)}]
              lifecycle:
                preStop:
                  sleep: {{seconds: 20}}
        """
    )
    up.wait_for(lambda: "up" in up.out, what="container output")
    began = time.monotonic()
    assert up.stop(signal.SIGTERM) == 0
    assert time.monotonic() - began < 8.0, up.err
    assert "quick/app | cleaned up" in up.out
    assert "app: preStop hook did not finish within the grace period of 2s" in up.err


def test_a_poststart_hook_has_no_time_limit(start_up: Callable[..., Up]) -> None:
    """The kubelet runs a postStart hook without a timeout (RunInContainer(..., 0)), so a
    hook longer than the grace period is waited for, not failed."""
    up = start_up(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: order}}
        spec:
          terminationGracePeriodSeconds: 1
          volumes: [{{name: ts, emptyDir: {{}}}}]
          containers:
            - name: web
              command: [sh, -c, "{looping("web")}"]
              lifecycle:
                postStart:
                  exec: {{command: [sh, -c, "sleep 2.5; {ev("poststart")}"]}}
              {MOUNT}
        """
    )
    up.wait_for(lambda: "poststart" in events(up), timeout=15, what="postStart event")
    assert up.container("web")["state"] == "Running", up.err
    assert up.container("web")["restartCount"] == 0
    assert "postStart hook failed" not in up.err
    assert up.stop() == 0
