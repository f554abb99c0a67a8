"""Read-only mounts for host processes: a private mount namespace per container.

A container's ``readOnly: true`` mounts, and every ConfigMap and Secret volume (read-only in
Kubernetes whatever the mount says), are backed by ordinary directories under the run dir that
other containers of the Pod write to. To make them read-only for this container alone, its
command is started as::

    unshare --mount --propagation private -- /bin/sh -c SCRIPT MOUNT N PATH... COMMAND...

SCRIPT bind-mounts each PATH onto itself and remounts it read-only, in the new mount namespace
only, then ``exec``s the command: the pid, environment and process group stay the container's,
and the mounts vanish with its last process. Writes fail with EROFS, as in a Pod.

This needs the right to create a mount namespace (root, or CAP_SYS_ADMIN), checked once by
doing it. Without it the paths stay writable and ``sidekick up`` says so once per Pod. Exec
probes and hooks run outside the namespace.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import subprocess
import tempfile

# $0 is mount(8); the container's own PATH may not lead to it.
_SCRIPT = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    '"$0" --bind "$1" "$1" && "$0" -o remount,bind,ro "$1" "$1" || exit 126; '
    "shift; n=$((n-1)); done; "
    'exec "$@"'
)


@functools.cache
def _tools() -> tuple[str, str] | None:
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    return (unshare, mount) if unshare and mount else None


def _prefix(paths: list[str]) -> list[str]:
    tools = _tools()
    assert tools is not None, "wrap() is only used when available()"
    unshare, mount = tools
    namespace = [unshare, "--mount", "--propagation", "private", "--"]
    return [*namespace, "/bin/sh", "-c", _SCRIPT, mount, str(len(paths)), *paths]


@functools.cache
def available() -> bool:
    """Whether read-only mounts can be made here (tried once, on a scratch directory)."""
    if _tools() is None:
        return False
    with tempfile.TemporaryDirectory(prefix="sidekick-ro-") as d:
        try:
            result = subprocess.run(
                [*_prefix([d]), "/bin/sh", "-c", '[ ! -w "$1" ]', "sh", d],
                capture_output=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0


def wrap(argv: list[str], paths: list[str]) -> list[str]:
    """``argv`` started with ``paths`` read-only."""
    return [*_prefix(paths), *argv]


def check_runnable(command: str, path: str | None, cwd: str | None) -> None:
    """Raise the ``OSError`` that exec'ing ``command`` directly would raise, if any.

    Started through the wrapper, a missing or non-executable command would only show as the
    shell's exit code 127 or 126; checking first keeps the error a clear StartError.
    """
    if "/" in command:
        found = os.path.join(cwd or os.getcwd(), command)
        if not os.path.exists(found):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
        if not os.access(found, os.X_OK) or os.path.isdir(found):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), command)
        return
    if shutil.which(command, path=path if path is not None else os.defpath) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
