"""Nothing survives ``sidekick up``: process groups, daemonized grandchildren, zombies.

These are the rules for plain host processes (``--isolation=off``, or a machine without the
privileges for namespaces), whose pids the tests read from files the containers write; an
isolated container's processes end with its PID namespace (tests/pod/test_isolation.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.pod.conftest import Up, marked_pids

# Double fork + setsid: the grandchild leaves the container's process group and session.
DAEMON = Path(__file__).with_name("daemonize.py")


def pod(command: str, policy: str = "Always") -> str:
    return f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: hyg}}
    spec:
      restartPolicy: {policy}
      terminationGracePeriodSeconds: 2
      volumes: [{{name: d, emptyDir: {{}}}}]
      containers:
        - name: app
          command: [sh, -c, "{command}"]
          volumeMounts: [{{name: d, mountPath: /d}}]
    """


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def vol(up: Up) -> Path:
    return up.run_dir / "hyg" / "volumes" / "d"


def test_no_process_survives_up_including_a_daemonized_grandchild(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        pod(f"sleep 300 & python3 {DAEMON} /d/daemon.pid 300; echo started; wait"),
        "--isolation=off",
    )
    run_id = up.run_id
    up.wait_for(lambda: (vol(up) / "daemon.pid").exists() and "started" in up.out, what="daemon")
    daemon = int((vol(up) / "daemon.pid").read_text())
    assert alive(daemon)
    assert len(marked_pids(run_id)) >= 3  # sh, sleep, daemon
    assert up.stop() == 0
    assert marked_pids(run_id) == []
    assert not alive(daemon)


def test_sigkill_of_up_still_leaves_no_process_running(start_up: Callable[..., Up]) -> None:
    # up cannot clean up after SIGKILL; its watchdog sees the pipe from up close and does.
    up = start_up(
        pod(f"sleep 300 & python3 {DAEMON} /d/daemon.pid 300; echo started; wait"),
        "--isolation=off",
    )
    run_id = up.run_id
    up.wait_for(lambda: (vol(up) / "daemon.pid").exists() and "started" in up.out, what="daemon")
    daemon = int((vol(up) / "daemon.pid").read_text())
    assert len(marked_pids(run_id)) >= 3  # sh, sleep, daemon
    up.proc.kill()
    up.proc.wait()
    # A process SIGKILLed a moment ago may still be exiting: its environment is gone (it is
    # no longer marked) before it is a zombie.
    deadline = time.monotonic() + 10
    while (marked_pids(run_id) or alive(daemon)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marked_pids(run_id) == []
    assert not alive(daemon)


def test_container_exit_kills_its_leftover_processes(start_up: Callable[..., Up]) -> None:
    up = start_up(
        pod(
            f"echo run >> /d/runs; python3 {DAEMON} /d/daemon.pid 300; "
            "sleep 300 & echo $$! > /d/bg.pid; sleep 0.3; exit 1"
        ),
        "--isolation=off",
    )
    up.wait_for(lambda: (vol(up) / "bg.pid").exists(), what="first run")
    daemon = int((vol(up) / "daemon.pid").read_text())
    bg = int((vol(up) / "bg.pid").read_text())
    up.wait_for(lambda: len((vol(up) / "runs").read_text().splitlines()) >= 2, what="restart")
    assert not alive(daemon)
    assert not alive(bg)
    assert up.stop() == 0


def test_orphaned_grandchildren_are_reaped(start_up: Callable[..., Up]) -> None:
    up = start_up(
        pod(f"python3 {DAEMON} /d/daemon.pid 0.2; echo started; exec sleep 300"), "--isolation=off"
    )
    up.wait_for(lambda: "started" in up.out, what="daemon started")
    daemon = int((vol(up) / "daemon.pid").read_text())
    # The daemon exits 0.2 s after it started, re-parented to sidekick up, which must reap
    # it: a zombie would keep its /proc entry.
    up.wait_for(lambda: not os.path.exists(f"/proc/{daemon}"), what="the daemon reaped")
    assert up.stop(signal.SIGINT) == 0


def test_sighup_stops_the_pods_like_sigterm(start_up: Callable[..., Up]) -> None:
    up = start_up(pod("echo started; exec sleep 300"), "--isolation=off")
    run_id = up.run_id
    up.wait_for(lambda: "started" in up.out, what="started")
    assert up.stop(signal.SIGHUP) == 0
    assert "Received SIGHUP, shutting down." in up.err
    assert marked_pids(run_id) == []
