"""Process limits a long-running program raises for itself at start.

A container often starts with a soft open-file limit of 1024 under a hard limit many times
higher; a program that tails thousands of files should use what it is allowed, so the soft
limit is raised to the hard one. What is left out: raising the hard limit (that takes
privileges and is the operator's decision).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("sidekick.limits")

# What the kernel allows at most when the hard limit says "unlimited" (fs.nr_open default).
_NR_OPEN = "/proc/sys/fs/nr_open"


def raise_open_files_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:
        try:
            with open(_NR_OPEN) as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = soft
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.debug("Could not raise the open-file limit from %d to %d (%s).", soft, target, exc)
            return soft
        log.debug("Raised the open-file limit from %d to %d (hard limit %d).", soft, target, hard)
        return target
    log.debug("Open-file limit is %d (hard limit %d).", soft, hard)
    return soft


def open_files_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` (a large number if unlimited)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
