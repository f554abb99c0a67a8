"""``emptyDir`` with ``medium: Memory``: a tmpfs, as the kubelet mounts one.

The volume's directory under the run dir becomes a tmpfs of ``sizeLimit`` bytes (without one,
this machine's memory size, as the kubelet sizes it to the node's allocatable memory), so its
files live in memory and a write past the limit fails with "No space left on device", as in
a Pod. Mounting needs root (CAP_SYS_ADMIN); elsewhere the volume is an ordinary directory and
``up`` says so. The tmpfs is unmounted when its Pod ends (its files are gone then, like a
deleted Pod's), and a tmpfs left behind by an ``up`` that was killed is unmounted when the
run dir is prepared again.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path


def mount(path: Path, size: int) -> str:
    """Mount a tmpfs of ``size`` bytes on ``path``; return "" or why it could not be done."""
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if result.returncode != 0:
        return " ".join(result.stderr.split()) or f"mount exited with {result.returncode}"
    return ""


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or under ``root`` in this mount namespace, deepest first."""
    base = str(root.resolve())
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == base or point.startswith(base.rstrip("/") + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_under(root: Path) -> None:
    """Unmount every mount at or under ``root`` (lazily: a process may still hold a file)."""
    if not os.path.exists(root):
        return
    for point in mounts_under(root):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)
