"""How each container of a Pod is started and entered when isolated: the plan ``nsinit`` gets
(binds, the paths its user must reach, user, groups, capabilities), the command line that
starts it in new namespaces or in the Pod's shared PID namespace, and the ``nsenter`` line that
runs exec probes and hooks inside it.

:func:`prepare_pod` builds these plans once per Pod (after volume ownership and the one
warning about what is not enforced); :func:`main_pid` finds the container's own first process
behind ``unshare``, the one signals go to. Left out: finding out what this machine allows and
the isolated command line itself (``isolation``), reading the securityContext
(``_security_context``), and what runs inside the new namespaces (``nsinit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidekick.pod._security_context import (
    Identity,
    _dropped_caps,
    identity,
    own_volumes,
    unenforced,
)
from sidekick.pod.isolation import NSINIT, Isolation, Mode, _unshare, nsinit, tool
from sidekick.pod.manifest import Pod
from sidekick.pod.paths import PodDirs

log = logging.getLogger("sidekick.up")


# --- one container -------------------------------------------------------------------------


def _script_interpreter(path: str) -> str:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        head = f.read(256)
        if head.startswith(b"#!"):
            words = head[2:].split(b"\n", 1)[0].split()
            if words:
                return words[0].decode(errors="replace")
    return ""


def traverse_paths(argv: list[str], env: dict[str, str], cwd: str | None) -> list[str]:
    """Paths a container's user must reach: its program (and interpreter), PATH, cwd, args."""
    out: list[str] = []
    prog = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH")) or ""
    for p in (prog, _script_interpreter(prog) if prog else ""):
        if p:
            out += [os.path.join(os.path.abspath(p)), os.path.realpath(p)]
    out += [os.path.join(d, "x") for d in env.get("PATH", "").split(":") if d.startswith("/")]
    out += [
        os.path.join(p, "x")
        for p in (sys.prefix, sys.base_prefix, os.path.realpath(sys.base_prefix))
    ]
    out += [os.path.join(cwd or os.getcwd(), "x")]
    out += [a for a in argv[1:] if a.startswith("/") and os.path.exists(a)]
    return list(dict.fromkeys(out))


@dataclass
class PodNamespace:
    """The Pod's shared PID namespace (``shareProcessNamespace``): a reaper as its PID 1."""

    mode: Mode
    proc: asyncio.subprocess.Process | None = None
    pid: int | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def ensure(self, env: dict[str, str]) -> int:
        async with self._lock:
            if self.pid is not None and self.proc is not None and self.proc.returncode is None:
                return self.pid
            self.proc = await asyncio.create_subprocess_exec(
                *_unshare(self.mode),
                sys.executable,
                "-I",
                "-S",
                "-c",
                _PAUSE,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
            pid = await main_pid(
                self.proc.pid, lambda: self.proc is not None and self.proc.returncode is not None
            )
            if pid is None:
                raise OSError("the Pod's process namespace did not start")
            self.pid = pid
            return pid

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            await self.proc.wait()


# PID 1 of a shared namespace: reaps whatever is re-parented to it, exits on SIGTERM.
_PAUSE = """
import os, signal
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    signal.sigwaitinfo({signal.SIGCHLD})
"""


class ContainerIsolation:
    """How one container is started and entered."""

    def __init__(
        self,
        iso: Isolation,
        *,
        identity: Identity,
        read_only_root: bool,
        no_new_privs: bool,
        cap_drop: list[int],
        binds: list[tuple[str, str, bool]],
        scratch: Path,
        pod_ns: PodNamespace | None,
        keep: list[str] | None = None,
    ) -> None:
        self.iso = iso
        self.identity = identity
        self.read_only_root = read_only_root
        self.no_new_privs = no_new_privs
        self.cap_drop = cap_drop
        self.binds = binds
        self.scratch = scratch
        self.pod_ns = pod_ns
        self.keep = keep or []
        self.main_pid: int | None = None

    def _ids(self) -> dict[str, Any]:
        if self.iso.mode != "root":
            return {}
        ident = self.identity
        out: dict[str, Any] = {}
        if ident.uid is not None:
            out["uid"] = ident.uid
        if ident.gid is not None:
            out["gid"] = ident.gid
        if ident.groups is not None:
            out["groups"] = ident.groups
        return out

    async def argv(self, argv: list[str], env: dict[str, str], cwd: str | None) -> list[str]:
        """The command line that starts ``argv`` isolated."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        plan: dict[str, Any] = {
            "scratch": str(self.scratch),
            "userns": self.iso.mode == "userns",
            "binds": [list(b) for b in self.binds],
            "keep": list(self.keep),
            "cwd": cwd or os.getcwd(),
            "readOnlyRoot": self.read_only_root,
            "noNewPrivs": self.no_new_privs,
            "capDrop": self.cap_drop,
            **self._ids(),
        }
        if self.identity.uid not in (None, 0) and self.iso.mode == "root":
            plan["traverse"] = [*traverse_paths(argv, env, cwd), *(b[1] + "/x" for b in self.binds)]
        if self.pod_ns is not None:
            pause = await self.pod_ns.ensure(env)
            enter = [tool("nsenter"), f"--target={pause}", "--pid"]
            if self.iso.mode == "userns":
                enter += ["--user", "--preserve-credentials"]
            prefix = [*enter, "--", *_unshare("root", pid=False)]
        else:
            prefix = _unshare(self.iso.mode)
        return [*prefix, *nsinit(plan), *argv]

    def enter(self, argv: list[str], cwd: str | None) -> list[str]:
        """``argv`` run inside the running container: its namespaces, directory and user."""
        if self.main_pid is None:
            return argv
        wd = cwd or os.getcwd()
        enter = [tool("nsenter"), f"--target={self.main_pid}", "--mount", "--pid", f"--wdns={wd}"]
        if self.iso.mode == "userns":
            enter += ["--user", "--preserve-credentials"]
        ids = self._ids()
        setpriv: list[str] = []
        if ids or self.no_new_privs:
            setpriv = [tool("setpriv")]
            if "uid" in ids:
                setpriv.append(f"--reuid={ids['uid']}")
            if "gid" in ids:
                setpriv.append(f"--regid={ids['gid']}")
            if "groups" in ids:
                setpriv.append(
                    "--groups=" + ",".join(map(str, ids["groups"]))
                    if ids["groups"]
                    else "--clear-groups"
                )
            if self.no_new_privs:
                setpriv.append("--no-new-privs")
            setpriv.append("--")
        return [*enter, "--", *setpriv, *argv]


def _first_child(pid: int) -> int | None:
    # /proc is memory, not disk: reading it does not block the event loop.
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def _in_setup(pid: int) -> bool | None:
    """Whether ``pid`` still runs nsinit; None once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return NSINIT.encode() in f.read().split(b"\0")
    except OSError:
        return None


async def main_pid(pid: int, gone: Callable[[], bool]) -> int | None:
    """The host pid of the process that ``unshare``/``nsenter`` (``pid``) forked into the
    namespace, once it has ``exec``ed past the setup; None if it ended first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    child: int | None = None
    while loop.time() < deadline and not gone():
        if child is None:
            child = _first_child(pid)
        if child is not None:
            setup = _in_setup(child)
            if setup is None:
                return None
            if not setup:
                return child
        await asyncio.sleep(0.002)
    return child


# --- one Pod -------------------------------------------------------------------------------


def prepare_pod(
    pod: Pod, dirs: PodDirs, iso: Isolation, *, warn: bool = True
) -> dict[str, ContainerIsolation]:
    """Volume ownership, the one warning about what is not enforced, and each container's plan."""
    missing = unenforced(pod, iso)
    if missing and warn:
        if iso.why_not == "--isolation=off":
            why = "isolation is off"
        elif not iso.on:
            why = "containers are not isolated: it needs root or user namespaces"
        elif iso.mode == "userns":
            why = "in a user namespace only root is mapped; no seccomp, AppArmor or SELinux"
        else:
            why = "no seccomp, AppArmor, SELinux, sysctls or privileged mode here"
        log.warning("%s: not enforced here (%s): %s.", pod.origin, why, ", ".join(missing))
    if not iso.on:
        return {}
    if iso.mode == "root":
        own_volumes(pod, dirs)
    pod_ns = PodNamespace(iso.mode) if pod.share_process_namespace else None
    out: dict[str, ContainerIsolation] = {}
    for c in pod.all_containers:
        sc = c.security
        table = dirs.translators[c.name].table
        read_only = set(dirs.read_only.get(c.name, []))
        hosts = sorted(set(table.values()) | {str(dirs.state[c.name])})
        needed = [*hosts, os.getcwd(), sys.prefix, os.path.realpath(sys.base_prefix)]
        binds = [(h, h, h in read_only) for h in hosts]
        # The volumes at their mount paths too, after the host paths: where one hides a path
        # the container needs (an emptyDir at /tmp over a run dir under /tmp), nsinit shows
        # that path again on top of it.
        at_mount = [
            (host, mp, host in read_only)
            for mp, host in sorted(table.items(), key=lambda kv: len(kv[0]))
            if mp != host
        ]
        term = getattr(dirs, "termination", {}).get(c.name)
        if term is not None:
            at_mount.append((str(term), c.termination_message_path, False))
        out[c.name] = ContainerIsolation(
            iso,
            identity=identity(pod.security, sc),
            read_only_root=bool(sc.get("readOnlyRootFilesystem")),
            no_new_privs=sc.get("allowPrivilegeEscalation") is False,
            cap_drop=_dropped_caps(sc),
            binds=[*binds, *at_mount],
            keep=needed,
            scratch=dirs.root / "ns" / c.name,
            pod_ns=pod_ns,
        )
    return out


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


async def close_pod(plans: dict[str, ContainerIsolation]) -> None:
    """End the Pod's shared PID namespace, if it has one."""
    for ns in {id(p.pod_ns): p.pod_ns for p in plans.values() if p.pod_ns is not None}.values():
        await ns.close()
