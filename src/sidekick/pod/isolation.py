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
(:func:`main_pid`). Exit codes pass through: the parent exits with the child's code, or kills
itself with the child's signal. Exec probes and hooks enter the same namespaces
(:meth:`ContainerIsolation.enter`) so they see the container's files.

What it leaves out: network, IPC and UTS namespaces (every Pod shares the host's network
here), cgroups (resource limits), seccomp, AppArmor and SELinux. Without the privileges,
or with ``--isolation=off``, containers run as plain host processes and ``up`` names, once per
Pod, each securityContext field it cannot enforce.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import marshal
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sidekick.pod.manifest import Pod
from sidekick.pod.paths import PodDirs

log = logging.getLogger("sidekick.up")

NSINIT = str(Path(__file__).with_name("nsinit.py"))
Mode = Literal["root", "userns", "none"]

# securityContext fields honoured here (when isolated); any other one present is named.
HONOURED = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "fsGroup",
    "fsGroupChangePolicy",
    "supplementalGroups",
    "supplementalGroupsPolicy",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
}
IDS = ("runAsUser", "runAsGroup", "fsGroup", "supplementalGroups")


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


# --- securityContext -----------------------------------------------------------------------


@dataclass
class Identity:
    uid: int | None
    gid: int | None
    groups: list[int] | None  # supplementary groups, None: leave as they are


def identity(pod_sc: dict[str, Any], c_sc: dict[str, Any]) -> Identity:
    """The container's user and groups: container-level fields win over the Pod's."""

    def pick(key: str) -> Any:
        return c_sc.get(key) if c_sc.get(key) is not None else pod_sc.get(key)

    uid, gid = pick("runAsUser"), pick("runAsGroup")
    extra = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        extra.insert(0, int(pod_sc["fsGroup"]))
    if uid is not None and gid is None:
        # The image's passwd entry gives the group; the host's stands for it, else root's.
        with contextlib.suppress(KeyError):
            gid = pwd.getpwuid(int(uid)).pw_gid
        gid = 0 if gid is None else gid
    groups: list[int] | None = None
    if uid is not None or gid is not None or extra:
        groups = list(dict.fromkeys([*([int(gid)] if gid is not None else []), *extra]))
        if uid is not None and pod_sc.get("supplementalGroupsPolicy") != "Strict":
            with contextlib.suppress(KeyError):
                user = pwd.getpwuid(int(uid))
                for g in os.getgrouplist(user.pw_name, user.pw_gid):
                    if g not in groups:
                        groups.append(g)
    return Identity(None if uid is None else int(uid), None if gid is None else int(gid), groups)


def check_non_root(where: str, pod_sc: dict[str, Any], c_sc: dict[str, Any]) -> str:
    """A refusal for runAsNonRoot with runAsUser 0 (the kubelet would not start it), or ''."""
    non_root = c_sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    uid = c_sc.get("runAsUser", pod_sc.get("runAsUser"))
    if non_root and uid == 0:
        return (
            f"{where}: runAsNonRoot is true but runAsUser is 0, so the kubelet would not start "
            "it; set runAsUser to a non-zero user or drop runAsNonRoot"
        )
    return ""


# Values that are the default, so nothing to enforce.
_DEFAULTS: dict[str, Any] = {
    "privileged": False,
    "allowPrivilegeEscalation": True,
    "readOnlyRootFilesystem": False,
    "runAsNonRoot": False,
    "seccompProfile": {"type": "Unconfined"},
    "appArmorProfile": {"type": "Unconfined"},
    "procMount": "Default",
}


def unenforced(pod: Pod, iso: Isolation) -> list[str]:
    """The securityContext fields of ``pod`` this run does not enforce, for one warning."""
    out: list[str] = []
    if pod.share_process_namespace and not iso.on:
        out.append("spec.shareProcessNamespace")
    scopes = [("spec.securityContext", pod.security)] + [
        (f"{c.path}.securityContext", c.security) for c in pod.all_containers
    ]
    for where, sc in scopes:
        for key, value in sc.items():
            if value is None or value == [] or value == {} or _DEFAULTS.get(key, ...) == value:
                continue
            if key == "capabilities":
                honoured = iso.on
            elif key in IDS or key == "runAsGroup":
                honoured = iso.mode == "root" or value == 0
            elif key == "runAsNonRoot":
                uid = sc.get("runAsUser", pod.security.get("runAsUser"))
                honoured = uid is not None or os.geteuid() != 0
                if not honoured:
                    key += " (no runAsUser: the image's user is unknown here, so it runs as root)"
            else:
                honoured = iso.on and key in HONOURED
            if not honoured:
                out.append(f"{where}.{key}")
    return out


# --- volumes -------------------------------------------------------------------------------


def _walk_chown(top: Path, uid: int, gid: int, dir_bits: int, file_bits: int) -> None:
    for dirpath, _dirnames, filenames in os.walk(top):
        os.chown(dirpath, uid, gid)
        os.chmod(dirpath, os.stat(dirpath).st_mode & 0o7777 | dir_bits)
        for name in filenames:
            p = os.path.join(dirpath, name)
            os.chown(p, uid, gid, follow_symlinks=False)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode & 0o7777 | file_bits)


def own_volumes(pod: Pod, dirs: PodDirs) -> None:
    """Volume permissions as the kubelet leaves them (as root only).

    Every emptyDir is mode 0777, so any user may write there, as in a cluster. With
    ``fsGroup`` each emptyDir, configMap, secret, downwardAPI and projected volume belongs to
    that group, directories get the setgid bit so new files inherit the group, and files are
    group-readable (emptyDir: -writable). Each container's own state directory (an image's pid
    and temp files) and termination message file belong to its user.
    """
    fs_group = pod.security.get("fsGroup")
    for vol in pod.volumes.values():
        if vol.kind == "hostPath":
            continue
        paths = [dirs.root / "volumes" / vol.name]
        if vol.kind == "configMap":
            paths = [p for p in (dirs.root / "configmaps" / vol.name).glob("*")]
        for top in paths:
            if not top.exists():
                continue
            if vol.kind == "emptyDir":
                os.chmod(top, 0o777)
            if fs_group is not None:
                rw = vol.kind == "emptyDir"
                _walk_chown(
                    top, -1, int(fs_group), 0o2070 if rw else 0o2050, 0o060 if rw else 0o040
                )
    for c in pod.all_containers:
        ident = identity(pod.security, c.security)
        if ident.uid is None and ident.gid is None:
            continue
        uid = -1 if ident.uid is None else ident.uid
        gid = -1 if ident.gid is None else ident.gid
        if c.name in dirs.state:
            _walk_chown(dirs.state[c.name], uid, gid, 0, 0)


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

CAPS = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]


def _dropped_caps(sc: dict[str, Any]) -> list[int]:
    caps = sc.get("capabilities") or {}
    names = {str(n).upper().removeprefix("CAP_") for n in caps.get("drop") or []}
    keep = {str(n).upper().removeprefix("CAP_") for n in caps.get("add") or []}
    if "ALL" in names:
        names = set(CAPS)
    return sorted(CAPS.index(n) for n in names - keep if n in CAPS)


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
