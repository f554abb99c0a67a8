"""A Pod's securityContext as ``up`` reads it: the container's user and groups, the
capabilities it drops, volume ownership as the kubelet leaves it, and the fields this run does
not enforce (for the one warning per Pod).

Users and groups follow the kubelet: container-level fields win over the Pod's, a missing
``runAsGroup`` is the user's primary group in this machine's ``/etc/passwd`` (else 0), and
``fsGroup`` and ``supplementalGroups`` are added. Left out: applying them to processes
(``nsinit`` in the container, ``setpriv`` for exec probes and hooks), starting the container
and logging the warning (``_container_isolation``), and finding out what this machine can
enforce (``isolation``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidekick.pod.isolation import Isolation
from sidekick.pod.manifest import Pod
from sidekick.pod.paths import PodDirs

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


def _sub_paths_like_their_volume(pod: Pod, volume: str, top: Path) -> None:
    """Give the directories made for ``subPath`` mounts of a fresh emptyDir its own mode.

    The kubelet makes a missing sub-path's directories with the volume's permission bits and
    sets them explicitly, past the umask (``doSafeMakeDir``), so a user other than root may
    write in ``/data`` mounted with ``subPath: logs`` as in the whole emptyDir.
    """
    mode = os.stat(top).st_mode & 0o7777
    for c in pod.all_containers:
        for m in c.mounts:
            if m.name != volume or not m.sub_path:
                continue
            path = top
            for part in Path(m.sub_path).parts:
                path = path / part
                if path.is_dir() and not path.is_symlink():
                    os.chmod(path, mode)


def own_volumes(pod: Pod, dirs: PodDirs) -> None:
    """Volume permissions as the kubelet leaves them (as root only).

    Every emptyDir is mode 0777, so any user may write there, as in a cluster. With
    ``fsGroup`` each emptyDir, configMap, secret, downwardAPI and projected volume belongs to
    that group, directories get the setgid bit so new files inherit the group, and files are
    group-readable (emptyDir: -writable); the directories made for an emptyDir's sub-paths get
    the volume's mode. Each container's own state directory (an image's pid
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
            if vol.kind == "emptyDir":
                _sub_paths_like_their_volume(pod, vol.name, top)
    for c in pod.all_containers:
        ident = identity(pod.security, c.security)
        if ident.uid is None and ident.gid is None:
            continue
        uid = -1 if ident.uid is None else ident.uid
        gid = -1 if ident.gid is None else ident.gid
        if c.name in dirs.state:
            _walk_chown(dirs.state[c.name], uid, gid, 0, 0)
