"""Leave nothing behind: process groups, orphans, zombies.

Every container runs in its own session (so its own process group), and every process
``sidekick up`` starts carries two environment variables: ``SIDEKICK_RUN_ID`` (one per run)
and ``SIDEKICK_CONTAINER`` (``pod/container``). A container's processes are found by those
markers in ``/proc/<pid>/environ`` even after they left the group (a daemon that called
``setsid``), which is how the kubelet's "all processes of a container die with it" is kept.

``sidekick up`` also makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so
orphaned grandchildren are re-parented to it instead of init; it reaps those zombies when
SIGCHLD arrives. Its own children are waited for by asyncio, so only processes it did not start
itself are reaped here, and never while a start is in progress.

If ``sidekick up`` itself is killed with SIGKILL it cannot clean up, so it starts a small
watchdog process first (its own session, stdin the read end of a pipe only ``up`` holds).
When that pipe reaches end of file, ``up`` is gone, however it ended; the watchdog then
SIGKILLs every process carrying the run's marker, until none is left. After a normal stop it
finds nothing and exits.

Left out: a process that clears its environment and escapes the subreaper (re-parented
elsewhere) cannot be found; nor can anything once the watchdog itself is SIGKILLed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidekick.pod.isolation import Isolation

log = logging.getLogger("sidekick.up")

PR_SET_CHILD_SUBREAPER = 36
RUN_ENV = "SIDEKICK_RUN_ID"
CONTAINER_ENV = "SIDEKICK_CONTAINER"


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class Tracker:
    """The pids this process started itself, so the orphan reaper leaves them to asyncio."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.own: set[int] = set()
        self.starting = 0
        # How this run's containers are isolated (sidekick.pod.isolation), found at start.
        self.isolation: Isolation | None = None

    @contextlib.contextmanager
    def starting_process(self) -> Iterator[None]:
        self.starting += 1
        try:
            yield
        finally:
            self.starting -= 1

    def reap_orphans(self) -> int:
        """Reap zombie children this process did not start; return how many."""
        if self.starting:
            return 0
        reaped = 0
        for pid in _children():
            if pid in self.own or _state(pid) != "Z":
                continue
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
        return reaped

    def marked(self, container: str | None = None) -> list[int]:
        """Pids whose environment carries this run's marker (and ``container``'s, if given)."""
        want_run = f"{RUN_ENV}={self.run_id}".encode()
        want_c = f"{CONTAINER_ENV}={container}".encode() if container else None
        me = os.getpid()
        out: list[int] = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if want_run in env and (want_c is None or want_c in env):
                out.append(int(name))
        return out

    def kill_marked(self, container: str | None = None) -> int:
        """SIGKILL every marked process (of ``container``); wait a moment for them to go."""
        pids = self.marked(container)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while pids and time.monotonic() < deadline:
            self.reap_orphans()
            pids = [p for p in pids if _alive(p)]
            if pids:
                time.sleep(0.01)
        return len(pids)


# Run with ``python -I -S -c`` (isolated: no PYTHON* variables, no site-packages) and
# importing only the standard library's C modules where it can (``signal`` would import enum),
# so it is small and starts fast (~20 ms of CPU instead of ~35, taken while the containers
# start). argv[1] is the marker to hunt for.
_WATCHDOG = """
import os, _signal as signal, sys, time
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
    signal.signal(s, signal.SIG_IGN)
while True:
    try:
        if not os.read(0, 4096):
            break
    except InterruptedError:
        continue
    except OSError:
        break
want = sys.argv[1].encode()
me = os.getpid()
for _ in range(100):
    found = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/" + name + "/environ", "rb") as f:
                if want not in f.read().split(b"\\0"):
                    continue
            os.kill(int(name), signal.SIGKILL)
            found += 1
        except OSError:
            continue
    if not found:
        break
    time.sleep(0.05)
"""


class Watchdog:
    """Kills the run's processes if ``sidekick up`` dies without doing it (see above)."""

    def __init__(self, run_id: str) -> None:
        r, self._w = os.pipe()
        env = {k: v for k, v in os.environ.items() if k not in (RUN_ENV, CONTAINER_ENV)}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG, f"{RUN_ENV}={run_id}"],
                stdin=r,
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError:
            os.close(self._w)
            raise
        finally:
            os.close(r)

    def close(self) -> None:
        """``up`` cleaned up itself: let the watchdog check, find nothing and exit."""
        if self._w < 0:
            return
        os.close(self._w)
        self._w = -1
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _children() -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                out.extend(int(p) for p in f.read().split())
        except OSError:
            continue
    return out


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _alive(pid: int) -> bool:
    state = _state(pid)
    return state not in ("", "Z", "X")


async def spawn(
    tracker: Tracker, argv: list[str], env: dict[str, str], cwd: str | None
) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader, asyncio.BaseTransport]:
    """Start ``argv`` in its own session with stdout+stderr on a pipe read by the returned reader.

    The pipe is made here rather than by asyncio because asyncio's ``Process.wait()`` also
    waits for its pipes to close, and a daemonized grandchild may hold them open forever; this
    way the exit is seen at once, and the leftovers can then be killed.
    """
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    try:
        with tracker.starting_process():
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=w,
                stderr=w,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
            tracker.own.add(proc.pid)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    reader = asyncio.StreamReader(limit=1 << 20, loop=loop)
    pipe = os.fdopen(r, "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
        )
    except BaseException:
        # Cancelled (the container or probe is being stopped) just after the start: the
        # caller never sees this process, so kill and reap it here, then re-raise.
        pipe.close()
        kill_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        tracker.own.discard(proc.pid)
        raise
    return proc, reader, transport
