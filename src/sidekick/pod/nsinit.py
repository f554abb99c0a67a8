"""Inside a new mount namespace, give the container its own root, then ``exec`` its command.

Run as ``python -I -S nsinit.py PLAN -- COMMAND...`` (or imported, and :func:`run` called with
those arguments, so that its bytecode is cached) by :mod:`sidekick.pod.isolation` as the
first process of the container's new PID namespace, so the command that replaces it is PID 1
(or, with ``shareProcessNamespace``, a process of the Pod's namespace). PLAN is a dict in
``marshal`` format, hex-encoded (the fastest decoder without imports):

* ``scratch``: a host directory; a private tmpfs is mounted there, holding the new root and
  the writable upper layers of its overlays (so a restart begins from a clean layer, as a
  container does, and the host's files are never written);
* every mount of the host is then rebuilt under the new root: real filesystems as an overlay
  (the host's files below, the container's writes in the tmpfs above), ``/proc`` fresh for the
  new PID namespace, ``/dev/shm`` a fresh tmpfs, other kernel filesystems bound as they are
  (``/sys`` read-only, as a container has it);
* ``binds``: the volumes' host directories, bound at their own paths (writes reach the host),
  read-only where the mount or the volume type says so;
* ``readOnlyRoot``: every overlay made read-only once the binds are in place;
* ``traverse``: paths (the command, the working directory, PATH, the volumes) whose parent
  directories get the search bit for everyone in the container's view only, so a
  ``runAsUser`` that is not root reaches a checkout or a Python under ``/root``;
* then ``pivot_root`` into the new root, ``chdir`` to ``cwd``, supplementary groups, group,
  user, ``no_new_privs``, and ``exec``.

Only the standard library is imported (it runs with ``-I -S`` for a fast start). A failure is
one line on stderr (the container's log) and exit code 126, the shell's "cannot execute".
"""

from __future__ import annotations

# The C module: `signal` imports enum and functools, ~10 ms of each container's start.
import _signal  # type: ignore[import-not-found]
import ctypes
import marshal
import os
import stat
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}
SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134, "riscv64": 134}

# Kernel filesystems: bound as they are, never overlaid.
PSEUDO = {
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs",
    "securityfs", "pstore", "bpf", "configfs", "fusectl", "hugetlbfs", "binfmt_misc",
    "autofs", "efivarfs", "selinuxfs", "nsfs", "rpc_pipefs",
}  # fmt: skip
READ_ONLY_PSEUDO = {"sysfs", "cgroup", "cgroup2", "securityfs", "pstore", "efivarfs"}

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    if (
        _libc.mount(
            src.encode() if src else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _remount_ro(target: str) -> None:
    # Flags the kernel locked on the original (nosuid, nodev, ...) must be given again.
    st = os.statvfs(target)
    keep = 0
    for st_flag, ms_flag in (
        (os.ST_NOSUID, MS_NOSUID),
        (os.ST_NODEV, MS_NODEV),
        (os.ST_NOEXEC, MS_NOEXEC),
        (os.ST_NOATIME, MS_NOATIME),
        (os.ST_NODIRATIME, MS_NODIRATIME),
        (os.ST_RELATIME, MS_RELATIME),
    ):
        if st.f_flag & st_flag:
            keep |= ms_flag
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


def _unescape(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def host_mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of this namespace, parents first, each point once."""
    seen: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            # A point mounted over again: the last one is what a path there reaches.
            seen[_unescape(fields[4])] = fields[sep + 1]
    # In a chroot that is not a mount point, / is not listed; it is overlaid all the same.
    seen.setdefault("/", "")
    return sorted(seen.items(), key=lambda kv: (kv[0] != "/", kv[0].count("/"), kv[0]))


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def build_root(plan: dict[str, object]) -> tuple[str, dict[str, str]]:
    """Mount the container's root under the scratch tmpfs; return it and its mounts' kinds."""
    scratch = str(plan["scratch"])
    userns = bool(plan.get("userns"))
    _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    root = os.path.join(scratch, "root")
    os.mkdir(root)
    mounts: dict[str, str] = {}  # target -> "overlay" | "bind" | "fresh"
    skip: list[str] = [scratch]
    read_only: list[str] = []
    # In a user namespace the kernel locks the mounts it was given: one with mounts below it
    # can only be bound together with them (and those are then not made again one by one).
    bind = MS_BIND | MS_REC if userns else MS_BIND
    for n, (point, fstype) in enumerate(host_mounts()):
        if any(_under(point, s) for s in skip):
            continue
        target = root + point if point != "/" else root
        if not os.path.isdir(target):
            continue  # a file mount point, or hidden under another mount
        if point == "/proc" or fstype == "proc":
            skip.append(point)
            if point == "/proc" and plan.get("newProc", True):
                _mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                mounts[target] = "fresh"
            else:
                _mount(point, target, None, MS_BIND | MS_REC)
                mounts[target] = "bind"
            continue
        if point == "/dev/shm":
            _mount("shm", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
            mounts[target] = "fresh"
            continue
        if fstype in PSEUDO or fstype.startswith("fuse") or any(c in point for c in ",:\\"):
            _mount(point, target, None, bind)
            if userns:
                skip.append(point)  # its mounts came along
            mounts[target] = "bind"
            if fstype in READ_ONLY_PSEUDO:
                read_only.append(target)
            continue
        upper, work = os.path.join(scratch, "u", str(n)), os.path.join(scratch, "w", str(n))
        os.makedirs(upper)
        os.makedirs(work)
        opts = f"lowerdir={point},upperdir={upper},workdir={work}"
        try:
            _mount("overlay", target, "overlay", 0, opts + (",userxattr" if userns else ""))
            mounts[target] = "overlay"
        except OSError as exc:
            if point == "/" and userns:
                # In a user namespace the kernel refuses an overlay of a mount with locked
                # mounts below it, as / has; its entries are overlaid one by one instead.
                _root_by_entries(root, scratch, mounts, plan)
                continue
            if point == "/":
                raise SetupError(f"cannot make an overlay of / ({exc.strerror})") from None
            # Bound instead; the probe at start names such paths in a warning.
            _mount(point, target, None, bind)
            if userns:
                skip.append(point)
            if plan.get("report"):
                print("bound", point)
            mounts[target] = "bind"
    for target in read_only:
        _remount_ro(target)
    return root, mounts


def _root_by_entries(
    root: str, scratch: str, mounts: dict[str, str], plan: dict[str, object]
) -> None:
    """The new root made entry by entry: in a user namespace the kernel refuses an overlay of
    a directory with mounts below it that it locked (as / has), so such a directory is made
    again in the scratch tmpfs, and each of its entries is overlaid (a directory), copied (a
    symbolic link) or bound read-only (a file); a directory with locked mounts below it in
    turn is made the same way. Mount points are left empty for the loop over the host's
    mounts."""
    _mount(root, root, None, MS_BIND)  # pivot_root needs a mount point
    mounts[root] = "top"
    points = {point for point, _ in host_mounts()}
    todo = [("/", root)]
    n = 0
    while todo:
        directory, made = todo.pop()
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue  # removed meanwhile (a shared /tmp changes under us)
        for name in names:
            src, target = os.path.join(directory, name), os.path.join(made, name)
            try:
                st = os.lstat(src)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), target)
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    open(target, "a").close()
                    _mount(src, target, None, MS_BIND)
                    _remount_ro(target)
                    continue
            except FileNotFoundError:
                continue
            os.mkdir(target)
            os.chmod(target, stat.S_IMODE(st.st_mode))
            if src in points:
                continue
            n += 1
            upper, work = os.path.join(scratch, "u", f"e{n}"), os.path.join(scratch, "w", f"e{n}")
            os.makedirs(upper)
            os.makedirs(work)
            try:
                opts = f"lowerdir={src},upperdir={upper},workdir={work},userxattr"
                _mount("overlay", target, "overlay", 0, opts)
                mounts[target] = "overlay"
            except OSError:
                todo.append((src, target))


def _bind(root: str, src: str, dst: str, read_only: bool) -> None:
    target = root + dst
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()
    _mount(src, target, None, MS_BIND)
    if read_only:
        _remount_ro(target)


def _bind_keeping(
    root: str,
    scratch: str,
    bind: tuple[str, str, bool],
    keep: list[str],
    mounts: dict[str, str],
) -> None:
    """Bind ``src`` at ``dst``; paths of ``keep`` below ``dst`` stay as they were.

    A volume mounted at ``/tmp`` would hide a run dir under the host's ``/tmp`` (its volumes,
    where translated paths point) or a checkout under a volume at ``/work``. Each such path is
    bound aside first, then shown again at its place on a small tmpfs, mounted on a directory
    made in the volume (as a cluster makes mount points of nested mounts there); nothing else
    of the volume is hidden. Records the mounts it makes in ``mounts``.
    """
    src, dst, read_only = bind
    target = root + dst
    hidden: list[str] = []
    for k in sorted(set(keep), key=len):
        inside = k != dst and _under(k, dst) and not any(_under(k, h) for h in hidden)
        if inside and os.path.isdir(root + k):
            hidden.append(k)
    aside: list[tuple[str, str, str]] = []  # (path, where it is bound aside, its kind)
    for k in hidden:
        stage = os.path.join(scratch, "keep", str(len(mounts)), str(len(aside)))
        os.makedirs(stage)
        _mount(root + k, stage, None, MS_BIND | MS_REC)
        nearest = max((t for t in mounts if _under(root + k, t)), key=len, default="")
        aside.append((k, stage, mounts.get(nearest, "bind")))
    _bind(root, src, dst, read_only)
    covered = {t: kind for t, kind in mounts.items() if t != target and _under(t, target)}
    for t in covered:
        del mounts[t]
    mounts[target] = "bind"
    shims: list[str] = []
    for k, stage, kind in aside:
        shim = os.path.join(target, os.path.relpath(k, dst).split("/")[0])
        if shim not in shims:
            os.makedirs(shim, exist_ok=True)
            _mount("tmpfs", shim, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
            shims.append(shim)
            mounts[shim] = "bind"
        os.makedirs(root + k, exist_ok=True)
        _mount(stage, root + k, None, MS_BIND | MS_REC)
        # An overlay shown again stays one: readOnlyRootFilesystem and traverse apply to it.
        mounts[root + k] = kind
        # What was mounted below it came along (MS_REC).
        mounts.update((t, c) for t, c in covered.items() if _under(t, root + k))
    for shim in shims:
        _remount_ro(shim)


def _traverse(root: str, paths: list[str], mounts: dict[str, str]) -> None:
    """Give every directory above ``paths`` the search bit, where an overlay holds it.

    A directory whose nearest mount is bound (a volume, a kernel filesystem) is the host's
    own and is left alone; in an overlay the change is copied up into the container's layer.
    """
    done: set[str] = set()
    for path in paths:
        if not path.startswith("/"):
            continue
        d = root
        for part in ["", *os.path.normpath(path).split("/")[1:-1]]:
            d = os.path.join(d, part) if part else d
            if d in done:
                continue
            done.add(d)
            nearest = max((t for t in mounts if _under(d, t)), key=len, default="")
            if mounts.get(nearest) != "overlay":
                continue
            try:
                st = os.stat(d)
                # Group too: a user whose group is the directory's (gid 0 without
                # runAsGroup, under root's 0700 home) is judged by the group bits.
                if st.st_mode & 0o011 != 0o011:
                    os.chmod(d, (st.st_mode & 0o7777) | 0o011)
            except OSError:
                continue


def _own_stdio(uid: int, gid: int) -> None:
    """Give the container's user its stdin/stdout/stderr pipes, as a container runtime does,
    so that opening ``/dev/stdout`` (``/proc/self/fd/1``) works for a user other than root.
    Terminals and files such as ``/dev/null`` are left alone."""
    for fd in (0, 1, 2):
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                os.fchown(fd, uid, gid)
        except OSError:
            continue


def _default_signals() -> None:
    """Every signal this process ignores back to its default action (by the system call:
    the C library's wrapper refuses the signals it reserves)."""
    with open("/proc/self/status") as f:
        ignored = next((int(ln.split()[1], 16) for ln in f if ln.startswith("SigIgn:")), 0)
    nr = SYS_RT_SIGACTION.get(os.uname().machine)
    default = ctypes.create_string_buffer(32)  # handler SIG_DFL, no flags, empty mask
    for sig in range(1, 65):
        if not ignored >> (sig - 1) & 1 or (
            nr is not None and _libc.syscall(nr, sig, default, None, 8) == 0
        ):
            continue
        try:  # noqa: SIM105 (contextlib costs a few ms of every container's start)
            _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):  # reserved here; it stays as it is
            pass


def pivot(root: str) -> None:
    nr = SYS_PIVOT_ROOT.get(os.uname().machine)
    os.chdir(root)
    if nr is not None and _libc.syscall(nr, b".", b".") == 0:
        _libc.umount2(b".", MNT_DETACH)
    else:
        os.chroot(".")
    os.chdir("/")


def main(argv: list[str]) -> None:
    plan = marshal.loads(bytes.fromhex(argv[1]))
    command = argv[3:] if len(argv) > 3 and argv[2] == "--" else []
    if not command:
        raise SetupError("no command given")
    root, mounts = build_root(plan)
    binds = [(str(s), str(d), bool(r)) for s, d, r in plan.get("binds", [])]
    keep = [str(k) for k in plan.get("keep", [])]
    for src, dst, read_only in binds:
        _bind_keeping(root, str(plan["scratch"]), (src, dst, read_only), keep, mounts)
    if plan.get("traverse"):
        _traverse(root, [str(p) for p in plan["traverse"]], mounts)
    if plan.get("readOnlyRoot"):
        for target, kind in mounts.items():
            if kind in ("overlay", "top") and not _under(target, root + "/dev"):
                _remount_ro(target)
    pivot(root)
    try:
        os.chdir(str(plan.get("cwd") or "/"))
    except OSError as exc:
        what = f"cannot enter working directory {plan.get('cwd')!r} ({exc.strerror})"
        raise SetupError(what) from None
    gid, uid = plan.get("gid"), plan.get("uid")
    # Before the user changes: dropping from the bounding set needs CAP_SETPCAP.
    for cap in plan.get("capDrop", []):
        _libc.prctl(PR_CAPBSET_DROP, int(cap), 0, 0, 0)
    if uid is not None or gid is not None:
        _own_stdio(-1 if uid is None else int(uid), -1 if gid is None else int(gid))
    if "groups" in plan:
        os.setgroups([int(g) for g in plan["groups"]])
    if gid is not None:
        os.setgid(int(gid))
    if uid is not None:
        os.setuid(int(uid))
    if plan.get("noNewPrivs"):
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # An ignored signal stays ignored through an exec: Python ignores SIGPIPE and SIGXFSZ,
    # a shell that started in the background SIGINT and SIGQUIT, and a parent may ignore
    # others (glibc's own 32 and 33 included, which its sigaction refuses to touch). A
    # container's process starts with every signal at its default, as a runtime gives it.
    _default_signals()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"{command[0]}: {exc.strerror}\n")
        sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)


def run(argv: list[str]) -> None:
    """``main`` with its failures as one line on stderr and exit code 126."""
    try:
        main(argv)
    except (SetupError, OSError) as exc:
        what = str(exc) if isinstance(exc, SetupError) else f"{exc.filename}: {exc.strerror}"
        sys.stderr.write(f"sidekick: cannot set up the container: {what}\n")
        sys.exit(126)


if __name__ == "__main__":
    run(sys.argv)
