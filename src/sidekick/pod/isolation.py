"""Container-like isolation for host processes: PID and mount namespaces, users, a private root.

Where the machine allows it (root, or unprivileged user namespaces), every container starts as::

    unshare --mount --pid --fork --kill-child [--user --map-root-user] -- python -I -S -c 'import nsinit ...' nsinit.py PLAN -- COMMAND

so COMMAND is PID 1 of its own PID namespace: a shell without a ``trap`` ignores SIGTERM and
waits for SIGKILL at the end of the grace period, as in a container, and when it ends the kernel
kills everything else in the namespace. ``nsinit`` (see there) gives it a private root: the
host's filesystems as overlays whose writes stay in the container (``/usr/share/message``,
``/tmp/healthy``, ``/dev/termination-log`` never reach the host), its volumes bound at their
host paths (read-only where Kubernetes makes them so), ``readOnlyRootFilesystem``, and
``runAsUser``/``runAsGroup``/``fsGroup``/``supplementalGroups`` applied before the exec.
With ``shareProcessNamespace: true`` a small per-Pod process (the pause container's role) holds
one PID namespace that every container of the Pod enters with ``nsenter``.

``unshare --fork`` blocks SIGTERM and SIGINT in its waiting parent and does not forward them,
so signals go to the container's own first process, found as that parent's child
(``_container_isolation.main_pid``). Exit codes pass through: the parent exits with the child's
code, or kills itself with the child's signal. Exec probes and hooks enter the same namespaces
(``_container_isolation.ContainerIsolation.enter``) so they see the container's files.

What it leaves out: network, IPC and UTS namespaces (every Pod shares the host's network
here), cgroups (resource limits), seccomp, AppArmor and SELinux. Without the privileges,
or with ``--isolation=off``, containers run as plain host processes and ``up`` names, once per
Pod, each securityContext field it cannot enforce.

This module finds out, once per run, what the machine allows (:class:`IsolationProbe`), and
builds the isolated command line. The securityContext (users and groups, dropped capabilities,
volume ownership, the fields not enforced) is read in ``_security_context``; each container's
plan, its start and ``nsenter`` into it, and the Pod's shared PID namespace are in
``_container_isolation``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import marshal
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("sidekick.up")

NSINIT = str(Path(__file__).with_name("nsinit.py"))
Mode = Literal["root", "userns", "none"]


@dataclass
class Isolation:
    """What this run can enforce, found once at start by trying it."""

    mode: Mode
    why_not: str = ""  # when mode is "none"
    shared_mounts: list[str] = field(default_factory=list)  # host mounts bound, not overlaid

    @property
    def on(self) -> bool:
        return self.mode != "none"

    @classmethod
    def probe(cls, enabled: bool) -> Isolation:
        return cls.start_probe(enabled).result()

    @classmethod
    def start_probe(cls, enabled: bool) -> IsolationProbe:
        """Begin finding out what this run can enforce; :meth:`IsolationProbe.result` tells."""
        return IsolationProbe(enabled)

    def warn_unavailable(self) -> None:
        if self.mode == "none" and self.why_not != "--isolation=off":
            log.warning(
                "Containers are not isolated (%s): they share this machine's PID namespace and "
                "write its files outside their volumes; run sidekick up as root for isolation.",
                self.why_not,
            )
        elif self.mode == "none":
            log.info("Isolation is off: containers run as plain processes of this machine.")
        if self.shared_mounts:
            log.warning(
                "Containers write through to this machine's %s (no private overlay possible "
                "there).",
                ", ".join(self.shared_mounts),
            )


@functools.cache
def tool(name: str) -> str:
    """util-linux programs by absolute path: the container's own PATH may not lead to them."""
    return shutil.which(name) or name


def _unshare(mode: Mode, pid: bool = True) -> list[str]:
    argv = [tool("unshare"), "--mount", "--propagation", "private"]
    if pid:
        argv += ["--pid", "--fork", "--kill-child"]
    if mode == "userns":
        argv += ["--user", "--map-root-user"]
    return [*argv, "--"]


# nsinit is imported rather than run as a script, so that its compiled bytecode is cached
# (a script is compiled again at every start: ~8 ms of each container's start). Its own
# directory goes last on the path, after the standard library. Its path stays in the command
# line, where main_pid looks for it.
_RUN_NSINIT = (
    "import sys; sys.path.append(sys.argv[1].rpartition('/')[0]); "
    "import nsinit; nsinit.run(sys.argv[1:])"
)


def nsinit(plan: dict[str, Any]) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", _RUN_NSINIT, NSINIT, marshal.dumps(plan).hex(), "--"]


class IsolationProbe:
    """An isolated ``true`` (a Python start and every host mount rebuilt, ~0.1 s), run in the
    background so that it overlaps the reading of the manifests; :meth:`result` waits for it.

    ``up`` starts it before anything else and collects it before the first container; on an
    error in between, :meth:`cancel` ends it.
    """

    def __init__(self, enabled: bool) -> None:
        self._done: Isolation | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._scratch = ""
        self.mode: Mode = "root" if os.geteuid() == 0 else "userns"
        if not enabled:
            self._done = Isolation("none", "--isolation=off")
            return
        tools = [t for t in ("unshare", "nsenter", "setpriv") if shutil.which(t) is None]
        if tools:
            self._done = Isolation("none", f"{', '.join(tools)} not found (util-linux)")
            return
        self._scratch = tempfile.mkdtemp(prefix="sidekick-ns-")
        plan = {"scratch": self._scratch, "userns": self.mode == "userns", "report": True}
        try:
            self._proc = subprocess.Popen(
                [*_unshare(self.mode), *nsinit(plan), "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            self._finish(Isolation("none", str(exc)))

    def _finish(self, iso: Isolation) -> Isolation:
        self._done = iso
        self._proc = None
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = ""
        return iso

    def result(self) -> Isolation:
        """What this run can enforce (waits for the probe, at most 20 s)."""
        if self._done is not None:
            return self._done
        assert self._proc is not None
        try:
            out, err = self._proc.communicate(timeout=20)
        except subprocess.TimeoutExpired as exc:
            self.cancel()
            return self._finish(Isolation("none", str(exc)))
        if self._proc.returncode != 0:
            lines = (err or out).decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"exit code {self._proc.returncode}"
            return self._finish(Isolation("none", why or "needs root or user namespaces"))
        shared = [
            ln.split(" ", 1)[1] for ln in out.decode().splitlines() if ln.startswith("bound ")
        ]
        return self._finish(Isolation(self.mode, shared_mounts=shared))

    def cancel(self) -> None:
        """End the probe, if it still runs, and remove its scratch directory."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.communicate()
        if self._done is None:
            self._finish(Isolation("none", "cancelled"))
