"""`sidekick sync`: flags and environment variables, named like git-sync v4's.

Every flag reads, in order, ``SIDEKICK_SYNC_<NAME>``, ``GITSYNC_<NAME>`` and git-sync v3's
``GIT_SYNC_<NAME>``, so a manifest written for git-sync works by changing the image and
the command. A few git-sync flags that make no difference here (``--ssh``,
``--http-metrics``, ``--add-user``, ``-v``) are accepted and ignored for that reason.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from sidekick.cli.common import admin_addr, common_options, init_logging, overrides
from sidekick.core.config import build_config, load_yaml_file
from sidekick.core.durations import parse_duration
from sidekick.core.errors import ConfigError
from sidekick.sync.config import SyncConfig


def env(name: str) -> list[str]:
    return [f"SIDEKICK_SYNC_{name}", f"GITSYNC_{name}", f"GIT_SYNC_{name}"]


# click parameter -> config field; durations are parsed to seconds before conversion.
FIELDS = {
    "repo": "repo",
    "root": "root",
    "link": "link",
    "ref": "ref",
    "period": "period",
    "sync_timeout": "sync_timeout",
    "depth": "depth",
    "filter": "filter",
    "submodules": "submodules",
    "sparse_checkout_file": "sparse_checkout_file",
    "one_time": "one_time",
    "max_failures": "max_failures",
    "stale_worktree_timeout": "stale_worktree_timeout",
    "git": "git",
    "git_gc": "git_gc",
    "git_config": "git_config",
    "group_write": "group_write",
    "touch_file": "touch_file",
    "error_file": "error_file",
    "backoff_initial": "backoff_initial",
    "backoff_max": "backoff_max",
    "username": "username",
    "password_file": "password_file",
    "askpass_url": "askpass_url",
    "ssh_key_file": "ssh_key_files",
    "ssh_known_hosts_file": "ssh_known_hosts_file",
    "ssh_known_hosts": "ssh_known_hosts",
    "cookie_file": "cookie_file",
    "trigger_secret_file": "trigger_secret_file",
    "trigger_min_interval": "trigger_min_interval",
    "exechook_command": "exechook_command",
    "exechook_timeout": "exechook_timeout",
    "exechook_backoff": "exechook_backoff",
    "webhook_url": "webhook_url",
    "webhook_method": "webhook_method",
    "webhook_success_status": "webhook_success_status",
    "webhook_timeout": "webhook_timeout",
    "webhook_backoff": "webhook_backoff",
}
DURATIONS = {
    "period",
    "sync_timeout",
    "stale_worktree_timeout",
    "backoff_initial",
    "backoff_max",
    "trigger_min_interval",
    "exechook_timeout",
    "exechook_backoff",
    "webhook_timeout",
    "webhook_backoff",
}


F = TypeVar("F", bound=Callable[..., Any])


# git-sync's boolean flags (pflag) accept --flag, --flag=true and --flag=false; so do these.
BOOL: dict[str, Any] = {"type": click.BOOL, "is_flag": False, "flag_value": True, "default": None}


def _opt(*names: str, env_name: str, **kw: Any) -> Callable[[F], F]:
    return click.option(*names, envvar=env(env_name), show_envvar=False, **kw)


@click.command()
@_opt(
    "--repo",
    env_name="REPO",
    help="Repository URL to sync (https://, ssh://, git@host:path, file://).",
)
@_opt(
    "--root",
    env_name="ROOT",
    help="Directory for the local repository and worktrees; created if missing.",
)
@_opt(
    "--link",
    env_name="LINK",
    help="Symlink name under --root (or absolute path) that always shows one whole revision. [default: the repo's leaf name]",
)
@_opt(
    "--ref",
    env_name="REF",
    help="Branch, tag or full commit hash to publish. [default: HEAD, the remote's default branch]",
)
@_opt("--period", env_name="PERIOD", help="How often to poll the remote. [default: 10s]")
@_opt(
    "--sync-timeout", env_name="SYNC_TIMEOUT", help="Time one whole sync may take. [default: 120s]"
)
@_opt(
    "--depth", env_name="DEPTH", type=int, help="Commits of history to fetch; 0 = all. [default: 1]"
)
@_opt("--filter", env_name="FILTER", help="Partial-clone filter, like blob:none.")
@_opt(
    "--submodules",
    env_name="SUBMODULES",
    type=click.Choice(["recursive", "shallow", "off"]),
    help="Submodule handling. [default: recursive]",
)
@_opt(
    "--sparse-checkout-file",
    env_name="SPARSE_CHECKOUT_FILE",
    help="File of sparse-checkout patterns.",
)
@_opt(
    "--one-time",
    env_name="ONE_TIME",
    **BOOL,
    help="Sync once and exit: 0 on success, 1 on failure.",
)
@_opt(
    "--max-failures",
    env_name="MAX_FAILURES",
    type=int,
    help="Consecutive failures before exiting; -1 = never (keep serving the last good revision). [default: -1]",
)
@_opt(
    "--stale-worktree-timeout",
    env_name="STALE_WORKTREE_TIMEOUT",
    help="How long revisions older than the previous one are kept. [default: 0]",
)
@_opt("--git", env_name="GIT", help="The git binary. [default: git]")
@_opt(
    "--git-gc",
    env_name="GIT_GC",
    type=click.Choice(["auto", "always", "aggressive", "off"]),
    help="git gc after each publish. [default: auto]",
)
@_opt(
    "--backoff-initial",
    env_name="BACKOFF_INITIAL",
    help="First retry delay after a failed sync. [default: 1s]",
)
@_opt(
    "--backoff-max",
    env_name="BACKOFF_MAX",
    help="Longest retry delay after failed syncs. [default: 5m]",
)
@_opt("--username", env_name="USERNAME", help="User name for HTTP(S) authentication.")
@_opt(
    "--password-file",
    env_name="PASSWORD_FILE",
    help="File holding the password or token; re-read on every sync.",
)
@_opt(
    "--password",
    env_name="PASSWORD",
    help="Password or token (prefer --password-file: flags are visible to other users).",
)
@_opt(
    "--askpass-url",
    env_name="ASKPASS_URL",
    help="URL answering username= and password= lines, asked on every sync.",
)
@_opt(
    "--ssh-key-file",
    env_name="SSH_KEY_FILE",
    multiple=True,
    help="SSH private key; repeat for several.",
)
@_opt(
    "--ssh-known-hosts-file",
    env_name="SSH_KNOWN_HOSTS_FILE",
    help="known_hosts file to verify the SSH server with.",
)
@_opt("--cookie-file", env_name="COOKIE_FILE", help="git http.cookieFile to authenticate with.")
@_opt(
    "--trigger-secret-file",
    env_name="TRIGGER_SECRET_FILE",
    help="Shared secret POST /sync must carry (GitHub HMAC signature, GitLab token or bearer token).",
)
@_opt(
    "--trigger-min-interval",
    env_name="TRIGGER_MIN_INTERVAL",
    help="Least time between two syncs asked for by POST /sync or SIGHUP; triggers in between join the pending sync. [default: 1s]",
)
@_opt(
    "--exechook-command",
    env_name="EXECHOOK_COMMAND",
    help="Command run in the new worktree after each publish, with GITSYNC_HASH set.",
)
@_opt(
    "--exechook-timeout",
    env_name="EXECHOOK_TIMEOUT",
    help="Time the exechook may take. [default: 30s]",
)
@_opt(
    "--exechook-backoff",
    env_name="EXECHOOK_BACKOFF",
    help="First delay before retrying a failed exechook. [default: 3s]",
)
@_opt(
    "--webhook-url",
    env_name="WEBHOOK_URL",
    help="URL called after each publish, with header Gitsync-Hash.",
)
@_opt(
    "--webhook-method",
    env_name="WEBHOOK_METHOD",
    help="HTTP method of the webhook. [default: POST]",
)
@_opt(
    "--webhook-success-status",
    env_name="WEBHOOK_SUCCESS_STATUS",
    type=int,
    help="Expected status; 0 accepts any. [default: 200]",
)
@_opt(
    "--webhook-timeout", env_name="WEBHOOK_TIMEOUT", help="Time the webhook may take. [default: 1s]"
)
@_opt(
    "--webhook-backoff",
    env_name="WEBHOOK_BACKOFF",
    help="First delay before retrying a failed webhook. [default: 3s]",
)
@_opt(
    "--git-config",
    env_name="GIT_CONFIG",
    help="Extra git settings as key:value pairs separated by commas (git-sync's syntax).",
)
@_opt(
    "--group-write",
    env_name="GROUP_WRITE",
    **BOOL,
    help="Make the repository and worktrees group-writable.",
)
@_opt(
    "--touch-file",
    env_name="TOUCH_FILE",
    help="File touched after every successful sync (relative paths are under --root).",
)
@_opt(
    "--error-file",
    env_name="ERROR_FILE",
    help="File holding the last sync error, removed on success (relative paths are under --root).",
)
@_opt(
    "--sync-on-signal",
    env_name="SYNC_ON_SIGNAL",
    help="Accepted for git-sync compatibility: SIGHUP always triggers a sync; other signals are refused.",
)
@_opt("--http-bind", env_name="HTTP_BIND", help="Alias of --admin-addr (git-sync's name).")
@_opt(
    "--ssh",
    env_name="SSH",
    **BOOL,
    hidden=True,
    help="Accepted for git-sync compatibility; SSH is used when the URL says so.",
)
@_opt(
    "--ssh-known-hosts",
    env_name="SSH_KNOWN_HOSTS",
    **BOOL,
    help="Verify SSH hosts (default); --ssh-known-hosts=false turns checking off.",
)
@_opt(
    "--http-metrics",
    env_name="HTTP_METRICS",
    **BOOL,
    hidden=True,
    help="Accepted for git-sync compatibility; metrics are always served.",
)
@_opt(
    "--add-user",
    env_name="ADD_USER",
    **BOOL,
    hidden=True,
    help="Accepted for git-sync compatibility; ignored.",
)
@click.option(
    "-v",
    "--verbose",
    type=int,
    hidden=True,
    help="Accepted for git-sync compatibility; use --log-level.",
)
@common_options()
@click.pass_context
def sync(ctx: click.Context, /, **params: Any) -> None:
    """Keep a git ref published into a directory, atomically.

    Each revision is checked out into ROOT/.worktrees/<hash> and ROOT/LINK, a relative
    symlink, is switched to it with one rename, so readers always see one whole revision.
    Syncs every --period, on POST /sync to the admin server and on SIGHUP.
    """
    from sidekick.cli.common import duration_option
    from sidekick.sync.app import run_sync

    init_logging(params)
    signame = params.get("sync_on_signal")
    if signame and signame.upper().removeprefix("SIG") not in ("HUP", "1"):
        raise ConfigError(
            f"--sync-on-signal {signame!r} is not supported; sidekick sync syncs on SIGHUP, "
            "so use SIGHUP or leave the flag out"
        )
    over = overrides(ctx, FIELDS)
    for param in DURATIONS:
        dotted = FIELDS[param]
        if dotted in over:
            over[dotted] = duration_option(over[dotted], "--" + param.replace("_", "-"))
    password = params.get("password")
    if password is not None and ctx.get_parameter_source("password") in (
        ParameterSource.COMMANDLINE,
        ParameterSource.ENVIRONMENT,
    ):
        over["password_file"] = _private_file(password)
    # The config file's `sync:` section is flat; its durations ("30s") are parsed here like
    # the flags', then flags and environment variables are laid over it.
    layered = _file_section(params.get("config_file"))
    layered.update(over)
    for field, flag in (("repo", "--repo"), ("root", "--root")):
        if field not in layered:
            raise ConfigError(
                f"{flag} is required; give it as a flag, as GITSYNC_{field.upper()} "
                f"or as sync.{field} in the config file"
            )
    cfg = build_config(SyncConfig, overrides=layered, env_prefix="SIDEKICK_SYNC_")
    addr_text = params["admin_addr"]
    if (
        params.get("http_bind")
        and ctx.get_parameter_source("admin_addr") == ParameterSource.DEFAULT
    ):
        addr_text = params["http_bind"]
    shutdown_timeout = parse_duration(params["shutdown_timeout"], name="--shutdown-timeout")
    ctx.exit(run_sync(cfg, admin_addr(addr_text), shutdown_timeout))


def _file_section(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    loaded = load_yaml_file(path) or {}
    section = loaded.get("sync") if isinstance(loaded, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path!r}: 'sync' must be a mapping of field names")
    out = dict(section)
    for field in DURATIONS:
        if isinstance(out.get(field), str):
            out[field] = parse_duration(out[field], name=f"sync.{field} in {path}")
    return out


def _private_file(secret: str) -> str:
    """Keep a password given inline in a 0600 file, so it reaches git only through askpass."""
    fd, path = tempfile.mkstemp(prefix="sidekick-sync-password-")
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")

    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    atexit.register(remove)
    return path
