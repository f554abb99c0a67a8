"""The typed configuration of ``sidekick sync``.

One tree, built once by the CLI from the config file's ``sync:`` section, ``SIDEKICK_SYNC_*``
and ``GITSYNC_*`` environment variables and flags, then passed down unchanged. Durations are
seconds (floats) after parsing; "unset" is ``None`` or an empty list and says so per field.
It leaves out validation that needs the filesystem or the network (the syncer does that).
"""

from __future__ import annotations

from typing import Literal

import msgspec

Submodules = Literal["recursive", "shallow", "off"]


class SyncConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    repo: str
    """The repository URL (``https://``, ``ssh://``, ``git@host:path``, ``file://`` or a path)."""
    root: str
    """Directory holding the local repository, the worktrees and (by default) the link."""
    link: str = ""
    """Name of the symlink, relative to ``root`` or absolute; empty means the repo's leaf name."""
    ref: str = "HEAD"
    """Branch, tag or full commit hash; ``HEAD`` is the remote's default branch."""
    period: float = 10.0
    """Seconds between polls of the remote."""
    sync_timeout: float = 120.0
    """Seconds one whole sync may take; each git call gets what is left of it."""
    depth: int = 1
    """Commits of history to fetch; 0 fetches the full history."""
    filter: str = ""
    """Partial-clone filter (``blob:none``); empty fetches everything."""
    submodules: Submodules = "recursive"
    sparse_checkout_file: str | None = None
    """File of sparse-checkout patterns (non-cone mode); unset checks out every file."""
    one_time: bool = False
    max_failures: int = -1
    """Consecutive failed syncs tolerated before exiting; -1 retries forever, 0 exits at once."""
    stale_worktree_timeout: float = 0.0
    """Seconds a worktree older than the previous revision is kept before removal."""
    git: str = "git"
    """The git binary (looked up on PATH)."""
    git_gc: Literal["auto", "always", "aggressive", "off"] = "auto"
    git_config: str = ""
    """Extra git settings, git-sync style: ``key:value,key2:value2`` (see ``gitconfig``)."""
    group_write: bool = False
    """Make everything written group-writable (umask 002, core.sharedRepository=group)."""
    touch_file: str | None = None
    """File touched after every successful sync; relative paths are under ``root``."""
    error_file: str | None = None
    """File holding the last sync error, removed on success; relative paths are under ``root``."""
    backoff_initial: float = 1.0
    """First retry delay after a failed sync, in seconds; doubles per failure."""
    backoff_max: float = 300.0
    """Longest retry delay after failed syncs, in seconds."""
    # Credentials. None of these values are logged.
    username: str | None = None
    password_file: str | None = None
    """File holding the password or token; read again on every sync so rotation just works."""
    askpass_url: str | None = None
    """URL answering ``username=``/``password=`` lines, asked on every sync (git-sync's)."""
    ssh_key_files: list[str] = msgspec.field(default_factory=list)
    ssh_known_hosts_file: str | None = None
    """known_hosts to verify the server with; unset uses ssh's defaults."""
    ssh_known_hosts: bool = True
    """False turns SSH host key checking off (git-sync's --ssh-known-hosts=false)."""
    cookie_file: str | None = None
    # POST /sync.
    trigger_secret_file: str | None = None
    """Shared secret for POST /sync; unset accepts every request."""
    trigger_min_interval: float = 1.0
    """Least seconds between the starts of two syncs asked for by POST /sync or SIGHUP;
    triggers inside it join the one pending sync. 0 syncs at once on every trigger."""
    # Hooks after each publish.
    exechook_command: str | None = None
    """Command (split like a shell would, but run without one) run in the new worktree."""
    exechook_timeout: float = 30.0
    exechook_backoff: float = 3.0
    webhook_url: str | None = None
    webhook_method: str = "POST"
    webhook_success_status: int = 200
    """Expected status; 0 accepts any response (fire and forget)."""
    webhook_timeout: float = 1.0
    webhook_backoff: float = 3.0
