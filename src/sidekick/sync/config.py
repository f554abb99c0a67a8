"""The typed configuration of ``sidekick sync``.

One tree, built once by the CLI from the config file's ``sync:`` section, ``SIDEKICK_SYNC_*``
and ``GITSYNC_*`` environment variables and flags, then passed down unchanged. Durations are
seconds (floats) after parsing; "unset" is ``None`` or an empty list and says so per field.
It leaves out validation that needs the filesystem or the network (``preflight`` and the
syncer do that).
"""

from __future__ import annotations

from typing import Literal

import msgspec

Submodules = Literal["recursive", "shallow", "off"]

GITHUB_API = "https://api.github.com/"


class Credential(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One entry of git-sync's ``--credential``: a user and password for URLs under ``url``."""

    url: str
    username: str
    password_file: str
    """File holding the password; an inline password is moved into a private file by the CLI."""


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
    max_failures: int | None = None
    """Failed syncs in a row that end the process (exit 1), counted as git-sync counts them;
    -1 never exits. Unset: 0 until the first successful sync (git-sync's default), -1 after."""
    init_period: float | None = None
    """Seconds between syncs until the first success (git-sync's --init-period); unset: period."""
    init_max_failures: int | None = None
    """``max_failures`` until the first success; unset: ``max_failures`` applies throughout."""
    stale_worktree_timeout: float = 0.0
    """Seconds a worktree is kept once it is no longer the current one; 0 removes it at once."""
    git: str = "git"
    """The git binary (looked up on PATH)."""
    git_gc: Literal["auto", "always", "aggressive", "off"] = "always"
    """git gc after a sync that removed a worktree; git-sync's modes and default."""
    git_config: str = ""
    """Extra git settings, git-sync style: ``key:value,key2:value2`` (see ``gitconfig``)."""
    group_write: bool = False
    """Make everything written group-writable (umask 002, core.sharedRepository=group)."""
    touch_file: str | None = None
    """File touched after every successful sync; relative paths are under ``root``."""
    error_file: str | None = None
    """File holding the last sync error, removed on success; relative paths are under ``root``."""
    backoff_initial: float = 1.0
    """First retry delay after a failed sync, in seconds, when ``backoff_max`` is set."""
    backoff_max: float = 0.0
    """Longest retry delay after failed syncs, in seconds; 0 retries after the period as
    git-sync does, above 0 the delay doubles from ``backoff_initial`` up to this."""
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
    credentials: list[Credential] = msgspec.field(default_factory=list)
    """git-sync's ``--credential`` list, offered to git by URL (most specific first)."""
    # GitHub App authentication: an installation token, refreshed before it expires.
    github_base_url: str = GITHUB_API
    github_app_private_key_file: str | None = None
    """PEM RSA private key of the app; unset means no GitHub App authentication."""
    github_app_client_id: str = ""
    github_app_application_id: int = 0
    github_app_installation_id: int = 0
    add_user: bool = False
    """Add an /etc/passwd entry for this UID if it has none (ssh refuses to run without one)."""
    http_pprof: bool = False
    """Serve stack dumps under /debug/pprof/ on the admin server."""
    sync_on_signal: str = ""
    """Signal name or number that triggers a sync, besides SIGHUP; empty: only SIGHUP."""
    # POST /sync.
    trigger_secret_file: str | None = None
    """Shared secret for POST /sync; unset accepts every request."""
    trigger_min_interval: float = 1.0
    """Least seconds between the starts of two syncs asked for by POST /sync or SIGHUP;
    triggers inside it join the one pending sync. 0 syncs at once on every trigger."""
    # A command run in the new worktree before the link is swapped; its failure fails the sync.
    pre_publish_exechook_command: str | None = None
    pre_publish_exechook_timeout: float = 30.0
    pre_publish_exechook_backoff: float = 3.0
    # Hooks after each publish.
    exechook_command: str | None = None
    """Command (split like a shell would, but run without one) run in the new worktree."""
    exechook_timeout: float = 30.0
    exechook_backoff: float = 3.0
    webhook_url: str | None = None
    webhook_method: str = "POST"
    webhook_success_status: int = 200
    """Expected status; 0 (or git-sync v3's -1) accepts any response (fire and forget)."""
    webhook_timeout: float = 1.0
    webhook_backoff: float = 3.0
