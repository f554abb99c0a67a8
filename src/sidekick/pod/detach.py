"""``sidekick up --detach`` and ``sidekick down``: the same run, in the background.

``--detach`` checks the manifests in the foreground (so mistakes still exit 2 at once), then
starts the very same ``sidekick up`` command without ``--detach`` in a new session, with its
output (containers' lines and status lines) in ``RUN_DIR/up.log`` and its pid in
``RUN_DIR/up.pid``, and returns once every Pod's app containers have started (or the Pod
has ended). ``down`` sends that process SIGTERM (the same graceful stop as Ctrl-C) and waits
for it to exit; after ``--timeout`` it kills it and every process that carries the run's
marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sidekick.core.errors import UserError
from sidekick.pod.hygiene import RUN_ENV


def start(run_dir: Path, pods: list[str], argv: list[str]) -> int:
    """Start ``sidekick up`` with ``argv`` in the background; return once it runs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    pid_file = run_dir / "up.pid"
    old = _running(pid_file)
    if old is not None:
        raise UserError(
            f"sidekick up is already running from run dir {str(run_dir)!r} (pid {old}); "
            "stop it with sidekick down or use another --run-dir"
        )
    for name in ("run-id", "admin-port"):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    log_path = run_dir / "up.log"
    with open(log_path, "wb") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidekick", *argv],
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            sys.stderr.write(log_path.read_text()[-4000:])
            return code
        if (run_dir / "run-id").exists() and all(_settled(run_dir / p) for p in pods):
            print(
                f"Started {', '.join(pods)} in the background (pid {proc.pid}); output in "
                f"{log_path}. Read it with sidekick logs POD; stop with sidekick down"
                + (f" --run-dir {run_dir}" if str(run_dir) != ".sidekick/run" else "")
                + "."
            )
            return 0
        time.sleep(0.05)
    return 0


_STARTING = ("PodInitializing", "ContainerCreating")


def _settled(pod_dir: Path) -> bool:
    """Whether the Pod in ``pod_dir`` ended or every app container got past starting."""
    try:
        status = json.loads((pod_dir / "status.json").read_text())
    except (OSError, ValueError):
        return False
    if status.get("ended"):
        return True
    return all(
        c.get("state") != "Waiting" or c.get("reason") not in _STARTING
        for c in status.get("containerStatuses", [])
    )


def _running(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    if b"sidekick" in b" ".join(cmdline) and b"up" in cmdline and state != "Z":
        return pid
    return None


def stop(run_dir: Path, timeout: float) -> str:
    """Stop the background run of ``run_dir``; return a sentence saying what happened."""
    pid_file = run_dir / "up.pid"
    pid = _running(pid_file)
    if pid is None:
        raise UserError(
            f"no sidekick up --detach is running from run dir {str(run_dir)!r}; "
            "pass the --run-dir it was started with"
        )
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _running(pid_file) is None:
            pid_file.unlink(missing_ok=True)
            return f"Stopped sidekick up (pid {pid})."
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    killed = _kill_marked(run_dir)
    pid_file.unlink(missing_ok=True)
    return (
        f"sidekick up (pid {pid}) did not stop within {timeout:g}s; killed it and "
        f"{killed} process(es) of its run."
    )


def _kill_marked(run_dir: Path) -> int:
    try:
        run_id = (run_dir / "run-id").read_text().strip()
    except OSError:
        return 0
    want = f"{RUN_ENV}={run_id}".encode()
    killed = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    os.kill(int(name), signal.SIGKILL)
                    killed += 1
        except OSError:
            continue
    return killed
