"""``sidekick sync`` as PID 1, as git-sync runs: a bare init in front of the real process.

In a container without an init, the program is PID 1, and every orphan in the container is
re-parented to it: the background child of a hook, the helpers of a git that a timeout
killed. asyncio waits only for the processes it started, so those would stay zombies until
the container ends. Like git-sync (its ``pid1`` package), ``rerun_if_pid1`` then starts the
same command line again as a child and becomes a minimal init: it passes every signal on to
that child, reaps whatever exits, and exits with the child's code (128 + the signal's number
if a signal ended it).

It leaves out everything else an init may do (it is no service manager).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from types import FrameType

# Set in the child, so it runs the command instead of starting another init.
_CHILD = "SIDEKICK_SYNC_PID1_CHILD"
# Signals an init cannot or should not pass on.
_KEEP = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


def rerun_if_pid1() -> None:
    """Return at once unless this process is PID 1; otherwise run the command line as a
    child, act as its init, and exit with its code."""
    if os.getpid() != 1 or os.environ.get(_CHILD):
        return
    # Handlers first: a PID 1 without one ignores the signal, so one sent while the child
    # starts would be lost. It is held until the child's pid is known.
    child: list[int] = []
    held: list[int] = []
    _pass_signals_on(child, held)
    proc = subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env={**os.environ, _CHILD: "1"})
    child.append(proc.pid)
    for signum in held:
        _send(proc.pid, signum)
    sys.exit(_reap_until(proc.pid))


def _send(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _pass_signals_on(child: list[int], held: list[int]) -> None:
    def forward(signum: int, _frame: FrameType | None) -> None:
        if child:
            _send(child[0], signum)
        else:
            held.append(signum)

    for sig in signal.valid_signals():
        if sig in _KEEP:
            continue
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            continue


def _reap_until(firstborn: int) -> int:
    """Reap every child that exits; when ``firstborn`` does, its exit code (128 + the
    signal's number if a signal ended it)."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid != firstborn:
            continue
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.waitstatus_to_exitcode(status)


__all__ = ["rerun_if_pid1"]
