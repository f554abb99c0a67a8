"""``sidekick exec``: run a command inside a running container, like ``kubectl exec``.

``sidekick up`` writes ``RUN_DIR/<pod>/exec.json`` when it prepares a Pod: the container that
``kubectl exec`` would choose by default (the ``kubectl.kubernetes.io/default-container``
annotation, else the first container), the names in kubectl's order and each container's
path translations. The running container itself is found through the Pod's ``status.json``:
its pid, checked against the run's markers in ``/proc/<pid>/environ`` so a reused pid is
never entered.

The command then gets what the container's own processes have, read from ``/proc``: the
environment (with the run's markers, so it is killed with the container, as an exec session
ends with its container), the working directory, the user and group, and the namespaces. When
the container runs in namespaces of its own (mount, PID, user: ``sidekick.pod.isolation``) the
command enters them with ``nsenter``; otherwise it is ``exec``ed directly. Arguments are
translated like the container's own (``cat /var/log/nginx/access.log`` reads its volume). The
exit code is the command's.

Left out: a terminal (``-t`` keeps the caller's own terminal when there is one), resizing,
``exec`` into a container that is not running.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidekick.core.errors import UserError
from sidekick.pod.manifest import Pod
from sidekick.pod.paths import PodDirs, Translator

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
_NAMESPACES = ("user", "mnt", "pid", "uts", "ipc", "net", "cgroup")
_NSENTER_FLAGS = {
    "mnt": "--mount",
    "pid": "--pid",
    "uts": "--uts",
    "ipc": "--ipc",
    "net": "--net",
    "cgroup": "--cgroup",
}


def write_info(pod: Pod, dirs: PodDirs) -> None:
    """Write what ``sidekick exec`` needs to know about ``pod`` to its run dir."""
    names = [c.name for c in pod.containers]
    default = pod.annotations.get(DEFAULT_CONTAINER_ANNOTATION, "")
    info = {
        "defaultContainer": default if default in names else "",
        "names": [*names, *(f"{c.name} (init)" for c in pod.init_containers)],
        "containers": {
            name: {"paths": translate.table} for name, translate in dirs.translators.items()
        },
    }
    tmp = dirs.root / "exec.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(dirs.root / "exec.json")


@dataclass
class Target:
    """A running container, as its main process shows it."""

    pid: int
    env: dict[str, str]
    translate: Translator
    enter: list[str]  # nsenter options; empty when the container shares our namespaces
    uid: int
    gid: int
    cwd: str


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def choose(run_dir: Path, pod: str, container: str | None) -> tuple[str, str]:
    """The container to use and kubectl's "Defaulted container" note ("" when none)."""
    if not (run_dir / pod / "status.json").exists():
        known = sorted(p.parent.name for p in run_dir.glob("*/status.json"))
        raise UserError(
            f"pod {pod!r} not found in run dir {str(run_dir)!r}"
            + (f"; pods there: {', '.join(known)}" if known else "; start it with sidekick up")
            + " (or pass the --run-dir that sidekick up used)"
        )
    info = _read_json(run_dir / pod / "exec.json")
    names = [str(n) for n in info.get("names", [])]
    plain = [n.removesuffix(" (init)") for n in names]
    if container is not None:
        if plain and container not in plain:
            raise UserError(
                f"container {container!r} is not in pod {pod!r}; choose one of {', '.join(plain)}"
            )
        return container, ""
    if info.get("defaultContainer"):
        return str(info["defaultContainer"]), ""
    if not plain:
        raise UserError(f"pod {pod!r} has no containers recorded; give -c CONTAINER")
    first = plain[0]
    note = f'Defaulted container "{first}" out of: {", ".join(names)}' if len(names) > 1 else ""
    return first, note


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


def _first_child(pid: int) -> int | None:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def _main_process(pid: int) -> int:
    """The container's own first process: past ``unshare``/``nsenter`` and set-up wrappers."""
    for _ in range(8):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return pid
        words = [os.path.basename(a) for a in argv if a]
        if not words or not (
            words[0] in (b"unshare", b"nsenter") or any(w.startswith(b"nsinit") for w in words)
        ):
            return pid
        child = _first_child(pid)
        if child is None:
            return pid
        pid = child
    return pid


def _ids(pid: int) -> tuple[int, int]:
    uid = gid = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])
        elif line.startswith("Gid:"):
            gid = int(line.split()[1])
    return uid, gid


def find(run_dir: Path, pod: str, container: str) -> Target:
    """The running ``container`` of ``pod``; UserError naming what is wrong otherwise."""
    status = _read_json(run_dir / pod / "status.json")
    if not status:
        raise UserError(
            f"pod {pod!r} not found in run dir {str(run_dir)!r}; start it with sidekick up "
            "(or pass the --run-dir that sidekick up used)"
        )
    found = [
        c
        for c in status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
        if c.get("name") == container
    ]
    if not found:
        raise UserError(f"container {container!r} is not in pod {pod!r}")
    cstatus = found[0]
    if status.get("ended"):
        raise UserError(
            f"pod {pod!r} is not running (its sidekick up has ended); start it again with "
            "sidekick up"
        )
    pid = cstatus.get("pid")
    if cstatus.get("state") != "Running" or not pid:
        what = cstatus.get("state", "unknown")
        if cstatus.get("reason"):
            what += f": {cstatus['reason']}"
        raise UserError(
            f"container {container!r} of pod {pod!r} is not running ({what}); sidekick exec "
            "needs a running container"
        )
    run_id = (run_dir / "run-id").read_text().strip() if (run_dir / "run-id").exists() else ""
    target = _main_process(int(pid))
    try:
        env = _environ(target)
        uid, gid = _ids(target)
        cwd = os.readlink(f"/proc/{target}/cwd")
    except (OSError, ValueError):
        env, uid, gid, cwd = {}, 0, 0, "/"
    if env.get("SIDEKICK_CONTAINER") != f"{pod}/{container}" or (
        run_id and env.get("SIDEKICK_RUN_ID") != run_id
    ):
        raise UserError(
            f"container {container!r} of pod {pod!r} is not running any more (pid {pid} is "
            "gone); check the Pod with sidekick logs"
        )
    enter = []
    for ns in _NAMESPACES:
        try:
            differs = os.readlink(f"/proc/{target}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
        except OSError:
            continue
        if differs and ns == "user":
            enter += ["--user", "--preserve-credentials"]
        elif differs:
            enter.append(_NSENTER_FLAGS[ns])
    info = _read_json(run_dir / pod / "exec.json")
    table = ((info.get("containers") or {}).get(container) or {}).get("paths") or {}
    return Target(target, env, Translator(dict(table)), enter, uid, gid, cwd)


def argv_for(target: Target, command: list[str]) -> list[str]:
    """The command line that runs ``command`` in ``target`` (to be ``exec``ed)."""
    argv = [target.translate(a) for a in command]
    if not target.enter:
        return argv
    prefix = ["nsenter", f"--target={target.pid}", *target.enter, "--wd"]
    if "--user" not in target.enter and (target.uid, target.gid) != (os.getuid(), os.getgid()):
        prefix += [f"--setgid={target.gid}", f"--setuid={target.uid}"]
    return [*prefix, "--", *argv]


def check_command(target: Target, command: str) -> None:
    """UserError when ``command`` is not an executable file in the container, as it sees it."""
    root = f"/proc/{target.pid}/root"
    word = target.translate(command)
    if "/" in word:
        candidates = [word if word.startswith("/") else os.path.join(target.cwd, word)]
    else:
        path = target.env.get("PATH", os.defpath)
        candidates = [os.path.join(d or ".", word) for d in path.split(":")]
    for c in candidates:
        full = root + (c if c.startswith("/") else os.path.join(target.cwd, c))
        if os.path.isfile(full) and os.access(full, os.X_OK):
            return
    raise UserError(
        f"executable {command!r} is not found in the container's PATH "
        f"({target.env.get('PATH', '')}); check the command's name"
    )
