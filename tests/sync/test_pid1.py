"""``sidekick sync`` as PID 1 (a container without an init): it reaps orphans, as git-sync."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import SIDEKICK, free_port
from tests.sync.conftest import GIT_ENV, CliSync, Upstream, script, wait_for


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _zombies(pids: list[int], name: str) -> list[int]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue
        comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
        if comm == name and state == "Z":
            out.append(pid)
    return out


def test_as_pid_1_it_reaps_orphaned_processes_and_passes_signals_on(
    upstream: Upstream, tmp_path: Path
) -> None:
    """git-sync re-runs itself as a child when it is PID 1 and reaps every orphan; without
    that, what a hook or a killed git leaves behind stays a zombie until the Pod goes."""
    port = free_port()
    hook = script(tmp_path / "hook.sh", "sleep 0.3 &\nexit 0")
    args = ["--repo", upstream.url, "--root", str(tmp_path / "root"), "--period", "100ms"]
    args += ["--admin-addr", f"127.0.0.1:{port}", "--exechook-command", hook]
    proc = subprocess.Popen(
        ["unshare", "--pid", "--kill-child", "--mount-proc", "--", *SIDEKICK, "sync", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=GIT_ENV,
    )
    probe = CliSync.__new__(CliSync)
    probe.port, probe.proc = port, proc
    try:
        probe.wait_ready()
        wait_for(lambda: 'exechook",status="success' in probe.request("/metrics")[1], 10)
        [init] = _children(proc.pid)
        time.sleep(1.0)  # the hook's sleep has ended by now
        assert _zombies(_descendants(init), "sleep") == []
        os.kill(init, signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
