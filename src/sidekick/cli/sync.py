"""`sidekick sync`: flags and environment variables, named like git-sync v4's.

Every flag reads ``SIDEKICK_SYNC_<NAME>``, ``GITSYNC_<NAME>`` and git-sync v3's
``GIT_SYNC_<NAME>`` (git-sync's older names overriding its newer ones as there, see ``env``),
so a manifest written for git-sync works by changing the image and the command. git-sync's deprecated v3 flags (``--branch``, ``--rev``, ``--dest``, ``--wait``,
``--timeout``, ``--max-sync-failures``, ``--sync-hook-command``, ``--v``) act as they do
there, read only from git-sync's own variable names. An unknown ``GITSYNC_*`` or
``GIT_SYNC_*`` variable is reported with one warning line each, since a misspelt variable
would otherwise be silently ignored. ``docs/sync.md`` has the table of every git-sync v4 flag
and what this command does with it; a test keeps the table and this module in step.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import click
import msgspec
from click.core import ParameterSource

from sidekick import __version__
from sidekick.cli.common import admin_addr, common_options, init_logging, overrides
from sidekick.core.addr import HostPort
from sidekick.core.config import build_config, load_yaml_file
from sidekick.core.durations import parse_duration
from sidekick.core.errors import ConfigError, UserError
from sidekick.sync.config import Credential, SyncConfig
from sidekick.sync.status_files import export_refused_setting

log = logging.getLogger("sidekick.sync")

# git-sync's boolean cookie flag names this file.
COOKIE_FILE_DEFAULT = "/etc/git-secret/cookie_file"
_TRUE = {"1", "t", "true", "yes", "y", "on"}
_FALSE = {"0", "f", "false", "no", "n", "off"}
# Set by sidekick sync itself for its hooks; not a setting.
_NOT_SETTINGS = {"GITSYNC_HASH"}


# Settings git-sync v4 still reads from v3's GIT_SYNC_<NAME> too (its main.go).
_V3_NAMES = frozenset(
    {
        *("REPO", "ROOT", "LINK", "DEPTH", "SUBMODULES", "SPARSE_CHECKOUT_FILE", "ERROR_FILE"),
        *("PERIOD", "SYNC_TIMEOUT", "ONE_TIME", "SYNC_ON_SIGNAL", "MAX_FAILURES", "TOUCH_FILE"),
        *("ADD_USER", "GROUP_WRITE", "EXECHOOK_COMMAND", "EXECHOOK_TIMEOUT", "EXECHOOK_BACKOFF"),
        *("WEBHOOK_URL", "WEBHOOK_METHOD", "WEBHOOK_SUCCESS_STATUS", "WEBHOOK_TIMEOUT"),
        *("WEBHOOK_BACKOFF", "USERNAME", "PASSWORD", "PASSWORD_FILE", "SSH_KEY_FILE"),
        *("SSH_KNOWN_HOSTS_FILE", "COOKIE_FILE", "ASKPASS_URL", "GIT", "GIT_CONFIG", "GIT_GC"),
        *("HTTP_BIND", "HTTP_METRICS", "HTTP_PPROF"),
    }
)
# GITSYNC_<NAME> -> the older names git-sync reads for the same setting, in its order.
OLDER_NAMES: dict[str, tuple[str, ...]] = {}


def env(name: str, *older: str) -> list[str]:
    """The variables of a setting, the first one set winning: sidekick's own name, then
    git-sync's, where (as git-sync reads them) an older name set beside ``GITSYNC_<NAME>``
    overrides it, the last of git-sync's list first. ``GIT_SYNC_<NAME>`` for a setting
    git-sync reads only from ``GITSYNC_<NAME>`` is sidekick's own and ranks last."""
    v3 = f"GIT_SYNC_{name}"
    names = ((v3,) if name in _V3_NAMES else ()) + older
    OLDER_NAMES[f"GITSYNC_{name}"] = names
    last = () if name in _V3_NAMES else (v3,)
    return [f"SIDEKICK_SYNC_{name}", *reversed(names), f"GITSYNC_{name}", *last]


class _Whole(click.ParamType[str]):
    """A string whose environment variable is one value (JSON), not split at white space."""

    name = "text"

    def split_envvar_value(self, rv: str) -> list[str]:
        return [rv]


class _ColonList(click.ParamType[str]):
    """A string whose environment variable holds several values separated by ':'."""

    name = "path"

    def split_envvar_value(self, rv: str) -> list[str]:
        return [p for p in rv.split(":") if p]


# Settings an empty flag value leaves unset, as in git-sync.
_EMPTY_MEANS_UNSET = (
    "sparse_checkout_file",
    "touch_file",
    "error_file",
    "username",
    "password_file",
    "askpass_url",
    "exechook_command",
    "pre_publish_exechook_command",
    "webhook_url",
    "github_app_private_key_file",
)

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
    "init_period": "init_period",
    "init_max_failures": "init_max_failures",
    "pre_publish_exechook_command": "pre_publish_exechook_command",
    "pre_publish_exechook_timeout": "pre_publish_exechook_timeout",
    "pre_publish_exechook_backoff": "pre_publish_exechook_backoff",
    "github_base_url": "github_base_url",
    "github_app_private_key_file": "github_app_private_key_file",
    "github_app_client_id": "github_app_client_id",
    "github_app_application_id": "github_app_application_id",
    "github_app_installation_id": "github_app_installation_id",
    "add_user": "add_user",
    "http_pprof": "http_pprof",
    "sync_on_signal": "sync_on_signal",
}
DURATIONS = {
    "init_period",
    "pre_publish_exechook_timeout",
    "pre_publish_exechook_backoff",
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


def _opt(
    *names: str, env_name: str | None, extra_env: tuple[str, ...] = (), **kw: Any
) -> Callable[[F], F]:
    envvar = env(env_name, *extra_env) if env_name is not None else list(extra_env) or None
    return click.option(*names, envvar=envvar, show_envvar=False, **kw)


def _deprecated(name: str, *env_names: str, **kw: Any) -> Callable[[F], F]:
    """A git-sync v3 flag kept by v4, read from its own variables only."""
    return click.option(name, envvar=list(env_names) or None, hidden=True, **kw)


@click.command(context_settings={"help_option_names": ["-h", "--help", "-?"]})
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
    help="Failed syncs in a row before exiting with 1; -1 = never. [default: 0 until the first success, then -1]",
)
@_opt(
    "--stale-worktree-timeout",
    env_name="STALE_WORKTREE_TIMEOUT",
    help="How long a worktree is kept once it is no longer the current one. [default: 0]",
)
@_opt("--git", env_name="GIT", help="The git binary. [default: git]")
@_opt(
    "--git-gc",
    env_name="GIT_GC",
    type=click.Choice(["auto", "always", "aggressive", "off"]),
    help="git gc after a sync that removed a worktree. [default: always]",
)
@_opt(
    "--backoff-initial",
    env_name="BACKOFF_INITIAL",
    help="First retry delay after a failed sync, with --backoff-max. [default: 1s]",
)
@_opt(
    "--backoff-max",
    env_name="BACKOFF_MAX",
    help="Longest retry delay after failed syncs; 0 retries after --period. [default: 0]",
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
    extra_env=("GIT_ASKPASS_URL",),
    help="URL answering username= and password= lines, asked on every sync.",
)
@_opt(
    "--ssh-key-file",
    env_name="SSH_KEY_FILE",
    extra_env=("GIT_SSH_KEY_FILE",),
    type=_ColonList(),
    multiple=True,
    help="SSH private key; repeat for several (in the variable, separate them with ':'). [default: /etc/git-secret/ssh, if it exists]",
)
@_opt(
    "--ssh-known-hosts-file",
    env_name="SSH_KNOWN_HOSTS_FILE",
    extra_env=("GIT_SSH_KNOWN_HOSTS_FILE",),
    help="known_hosts file to verify the SSH server with. [default: /etc/git-secret/known_hosts, if it exists]",
)
@_opt(
    "--cookie-file",
    env_name="COOKIE_FILE",
    extra_env=("GIT_COOKIE_FILE",),
    is_flag=False,
    flag_value="true",
    help="Use git's http.cookieFile: true (or the bare flag) reads /etc/git-secret/cookie_file like git-sync; a path names another file.",
)
@_opt(
    "--credential",
    env_name="CREDENTIAL",
    type=_Whole(),
    multiple=True,
    help='git-sync\'s JSON credentials: {"url": ..., "username": ..., "password-file": ...} or a list of them; repeatable.',
)
@_opt(
    "--github-base-url",
    env_name="GITHUB_BASE_URL",
    help="GitHub API URL for GitHub App authentication. [default: https://api.github.com/]",
)
@_opt(
    "--github-app-private-key-file",
    env_name="GITHUB_APP_PRIVATE_KEY_FILE",
    help="PEM private key of the GitHub App; turns GitHub App authentication on.",
)
@_opt(
    "--github-app-private-key",
    env_name="GITHUB_APP_PRIVATE_KEY",
    hidden=True,
    help="The private key itself (git-sync reads it only from GITSYNC_GITHUB_APP_PRIVATE_KEY).",
)
@_opt("--github-app-client-id", env_name="GITHUB_APP_CLIENT_ID", help="GitHub App client ID.")
@_opt(
    "--github-app-application-id",
    env_name="GITHUB_APP_APPLICATION_ID",
    type=int,
    help="GitHub App application ID (instead of the client ID).",
)
@_opt(
    "--github-app-installation-id",
    env_name="GITHUB_APP_INSTALLATION_ID",
    type=int,
    help="GitHub App installation ID.",
)
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
    "--pre-publish-exechook-command",
    env_name="PRE_PUBLISH_EXECHOOK_COMMAND",
    help="Program run (no arguments, no shell) in the new worktree before the link is swapped to it, with GITSYNC_HASH set; if it fails, the revision is not published.",
)
@_opt(
    "--pre-publish-exechook-timeout",
    env_name="PRE_PUBLISH_EXECHOOK_TIMEOUT",
    help="Time the pre-publish hook may take. [default: 30s]",
)
@_opt(
    "--pre-publish-exechook-backoff",
    env_name="PRE_PUBLISH_EXECHOOK_BACKOFF",
    help="Delay before the next attempt after the pre-publish hook failed. [default: 3s]",
)
@_opt(
    "--init-period",
    env_name="INIT_PERIOD",
    help="Time between syncs until the first success. [default: --period]",
)
@_opt(
    "--init-max-failures",
    env_name="INIT_MAX_FAILURES",
    type=int,
    help="--max-failures until the first success; negative retries forever. [default: --max-failures]",
)
@_opt(
    "--exechook-command",
    env_name="EXECHOOK_COMMAND",
    help="Program run (no arguments, no shell) in the new worktree after each publish, with GITSYNC_HASH set.",
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
    help="Expected status; 0 (or -1) accepts any. [default: 200]",
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
    "--git-config-add",
    env_name=None,
    multiple=True,
    help="One more git setting as key:value; repeatable (applied after --git-config).",
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
    help="File touched when a revision is published (relative paths are under --root).",
)
@_opt(
    "--error-file",
    env_name="ERROR_FILE",
    help="File holding the last sync error as JSON, removed on success (relative paths are under --root).",
)
@_opt(
    "--sync-on-signal",
    env_name="SYNC_ON_SIGNAL",
    help="Signal (name or number) that triggers a sync, besides SIGHUP which always does.",
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
    extra_env=("GIT_SYNC_KNOWN_HOSTS", "GIT_KNOWN_HOSTS"),
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
    "--http-pprof",
    env_name="HTTP_PPROF",
    **BOOL,
    help="Serve the stacks of every thread and task at /debug/pprof/ (Go's profiles answer 501).",
)
@_opt(
    "--add-user",
    env_name="ADD_USER",
    **BOOL,
    help="Add an /etc/passwd entry for this UID if it has none (ssh needs one).",
)
@_opt(
    "-v",
    "--verbose",
    "verbose",
    env_name="VERBOSE",
    help="git-sync's log verbosity: 0 and 1 log at info, 2 and up at debug (--log-level wins).",
)
@_deprecated("--v", help="git-sync v3's -v.")
@_deprecated("--branch", "GIT_SYNC_BRANCH", help="git-sync v3's --branch: use --ref.")
@_deprecated("--rev", "GIT_SYNC_REV", help="git-sync v3's --rev: use --ref.")
@_deprecated("--dest", "GIT_SYNC_DEST", help="git-sync v3's --dest: use --link.")
@_deprecated("--wait", "GIT_SYNC_WAIT", type=float, help="git-sync v3's --wait: use --period.")
@_deprecated(
    "--timeout", "GIT_SYNC_TIMEOUT", type=int, help="git-sync v3's --timeout: use --sync-timeout."
)
@_deprecated(
    "--max-sync-failures",
    "GIT_SYNC_MAX_SYNC_FAILURES",
    type=int,
    help="git-sync v3's --max-sync-failures: use --max-failures.",
)
@_deprecated(
    "--sync-hook-command",
    "GIT_SYNC_HOOK_COMMAND",
    help="git-sync v3's --sync-hook-command: use --exechook-command.",
)
@_deprecated(
    "--change-permissions",
    "GIT_SYNC_PERMISSIONS",
    type=int,
    help="git-sync v3's --change-permissions: refused, use --group-write.",
)
@click.option("--version", "show_version", is_flag=True, help="Print the version and exit.")
@click.option("--man", "show_manual", is_flag=True, help="Print the full manual and exit.")
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the settings read from flags, variables and the config file as JSON (no secrets), and exit.",
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
    from sidekick.sync.pid1 import rerun_if_pid1

    # As git-sync: as PID 1, run as a child of a bare init that reaps orphans.
    rerun_if_pid1()
    if params.pop("show_version"):
        click.echo(__version__)
        ctx.exit(0)
    if params.pop("show_manual"):
        click.echo(ctx.get_help())
        click.echo("\nThe full manual is docs/sync.md in sidekick's source.")
        ctx.exit(0)
    verbose = _verbosity(ctx, params)
    if verbose is not None and ctx.get_parameter_source("log_level") == ParameterSource.DEFAULT:
        params["log_level"] = "debug" if verbose >= 2 else "info"
    init_logging(params)
    _warn_unknown_variables(ctx)
    _warn_older_variables()
    print_only = bool(params.pop("print_config"))
    over = overrides(ctx, FIELDS)
    for field in _EMPTY_MEANS_UNSET:
        # git-sync tests these against "" (`if *flWebhookURL != ""`), so a flag given an
        # empty value, as templates often give it, leaves the feature off.
        if over.get(field) == "":
            over[field] = None
    for param in DURATIONS:
        dotted = FIELDS[param]
        if dotted in over:
            over[dotted] = duration_option(
                go_duration(over[dotted]), "--" + param.replace("_", "-")
            )
    _apply_deprecated(ctx, params, over)
    if _given(ctx, "cookie_file"):
        over["cookie_file"] = _cookie_file(params["cookie_file"])
    configs = [c for c in (params.get("git_config"), *params["git_config_add"]) if c]
    if params["git_config_add"]:
        over["git_config"] = ",".join(configs)
    password = params.get("password")
    if password is not None and _given(ctx, "password"):
        over["password_file"] = _secret_file(password, print_only, "password")
    key = params.get("github_app_private_key")
    if key is not None and _given(ctx, "github_app_private_key"):
        if "github_app_private_key_file" in over:
            raise ConfigError(
                "GITSYNC_GITHUB_APP_PRIVATE_KEY and --github-app-private-key-file are both set; "
                "give only one of them"
            )
        over["github_app_private_key_file"] = _secret_file(key, print_only, "github-app-key")
    if params["credential"]:
        over["credentials"] = [
            msgspec.structs.asdict(c)
            for text in params["credential"]
            for c in parse_credentials(text, print_only)
        ]
    # The config file's `sync:` section is flat; its durations ("30s") are parsed here like
    # the flags', then flags and environment variables are laid over it.
    layered = _file_section(params.get("config_file"))
    layered.update(over)
    _move_url_credentials(layered, print_only)
    for field, flag in (("repo", "--repo"), ("root", "--root")):
        if field not in layered:
            raise ConfigError(
                f"{flag} is required; give it as a flag, as GITSYNC_{field.upper()} "
                f"or as sync.{field} in the config file"
            )
    try:
        code = _configure_and_run(ctx, params, layered, print_only)
    except UserError as exc:
        export_refused_setting(layered.get("root"), layered.get("error_file"), str(exc))
        raise
    ctx.exit(code)


def _configure_and_run(
    ctx: click.Context, params: dict[str, Any], layered: dict[str, Any], print_only: bool
) -> int:
    """Build the settings from ``layered`` and run (or print them); the exit code."""
    from sidekick.sync.app import run_sync

    cfg = build_config(SyncConfig, overrides=layered, env_prefix="SIDEKICK_SYNC_")
    addr_text = params["admin_addr"]
    if (
        params.get("http_bind")
        and ctx.get_parameter_source("admin_addr") == ParameterSource.DEFAULT
    ):
        addr_text = params["http_bind"]
    addr = _listen_addr(addr_text)
    shutdown_timeout = parse_duration(params["shutdown_timeout"], name="--shutdown-timeout")
    if print_only:
        shown = {
            "sync": msgspec.to_builtins(cfg),
            "admin_addr": str(addr),
            "log_level": params["log_level"],
            "log_format": params["log_format"],
            "shutdown_timeout": shutdown_timeout,
        }
        click.echo(json.dumps(shown, indent=2, sort_keys=True))
        return 0
    return run_sync(cfg, addr, shutdown_timeout)


def go_duration(value: Any) -> Any:
    """A duration in every form Go's ``time.ParseDuration`` (git-sync's) reads: a number
    may leave out the digits before or after its point (``.5s``, ``1.s``)."""
    if not isinstance(value, str):
        return value
    value = re.sub(r"(?<![0-9])\.(?=[0-9])", "0.", value)
    return re.sub(r"(?<=[0-9])\.(?![0-9])", ".0", value)


def _given(ctx: click.Context, param: str) -> bool:
    return ctx.get_parameter_source(param) in (
        ParameterSource.COMMANDLINE,
        ParameterSource.ENVIRONMENT,
    )


def _verbosity(ctx: click.Context, params: dict[str, Any]) -> int | None:
    """git-sync's ``-v N``: pflag also takes ``-v=N``, which click hands over as ``=N``."""
    value = params.get("verbose") if _given(ctx, "verbose") else None
    if value is None and params.get("v") is not None:
        value = params["v"]
    if value is None:
        return None
    text = str(value).removeprefix("=")
    try:
        return int(text, 0)
    except ValueError:
        raise ConfigError(
            f"-v {text!r} is not a number; give a verbosity level like -v=2"
        ) from None


def _apply_deprecated(ctx: click.Context, params: dict[str, Any], over: dict[str, Any]) -> None:
    """git-sync v3's flags, applied over their v4 names as git-sync v4 applies them."""
    if params.get("change_permissions"):
        raise ConfigError(
            f"--change-permissions {params['change_permissions']} is no longer supported "
            "(git-sync v4 dropped it); use --group-write"
        )
    branch, rev = params.get("branch"), params.get("rev")
    if branch and rev and rev != "HEAD":
        raise ConfigError("--branch and --rev are both set; give the ref once, with --ref")
    moves: list[tuple[str, str, Any]] = []
    if branch:
        moves.append(("--branch", "ref", branch))
    elif rev:
        moves.append(("--rev", "ref", rev))
    if params.get("dest"):
        moves.append(("--dest", "link", params["dest"]))
    if params.get("wait"):
        moves.append(("--wait", "period", float(params["wait"])))
    if params.get("timeout"):
        moves.append(("--timeout", "sync_timeout", float(params["timeout"])))
    if params.get("max_sync_failures"):
        moves.append(("--max-sync-failures", "max_failures", params["max_sync_failures"]))
    if params.get("sync_hook_command"):
        moves.append(("--sync-hook-command", "exechook_command", params["sync_hook_command"]))
    for flag, field, value in moves:
        log.warning(
            "%s is deprecated (git-sync v3); using it as --%s.", flag, field.replace("_", "-")
        )
        over[field] = value


def _listen_addr(text: str) -> HostPort:
    """``--admin-addr``/``--http-bind``; ``:PORT`` is every interface, IPv6 included, as
    Go's ``net.Listen(":PORT")`` in git-sync (an empty host makes the server listen on
    every address family the machine has)."""
    addr = admin_addr(text)
    return HostPort("", addr.port) if text.strip().startswith(":") else addr


def _move_url_credentials(layered: dict[str, Any], print_only: bool) -> None:
    """git-sync's handling of ``https://user:password@host/...``: the user and password
    leave the URL and reach git as ``--username`` and a password file, so neither is in an
    argv or in ``.git/config`` on the shared volume. As in git-sync, only http(s) URLs, and
    only when no other credentials are given (a URL with only a user name is left as is)."""
    repo = layered.get("repo")
    if not isinstance(repo, str):
        return
    parts = urllib.parse.urlsplit(repo)
    if parts.scheme not in ("http", "https") or parts.password is None:
        return
    if layered.get("username"):
        raise ConfigError(
            "--repo holds a user name and password and --username is set too; give the "
            "credentials once, with --username and --password-file"
        )
    if any(layered.get(k) for k in ("password_file", "askpass_url", "github_app_private_key_file")):
        return
    host = parts.netloc.rpartition("@")[2]
    layered["repo"] = urllib.parse.urlunsplit(parts._replace(netloc=host))
    layered["username"] = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password)
    layered["password_file"] = _secret_file(password, print_only, "password")


def _cookie_file(value: str) -> str | None:
    """git-sync's ``--cookie-file`` is a boolean naming a fixed file; a path is accepted too."""
    word = value.strip().lower()
    if word in _TRUE:
        return COOKIE_FILE_DEFAULT
    if word in _FALSE or not word:
        return None
    return value


def parse_credentials(text: str, print_only: bool = False) -> list[Credential]:
    """git-sync's ``--credential``: one JSON object or a list of them."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--credential is not valid JSON ({exc.msg} at character {exc.pos}); give "
            '{"url": "https://host/org", "username": "u", "password-file": "/path"}'
        ) from None
    items = data if isinstance(data, list) else [data]
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ConfigError(
                "--credential must be a JSON object or a list of objects; give "
                '{"url": ..., "username": ..., "password-file": ...}'
            )
        unknown = sorted(set(item) - {"url", "username", "password", "password-file"})
        if unknown:
            raise ConfigError(
                f"--credential has an unknown field {unknown[0]!r}; the fields are url, "
                "username, password and password-file"
            )
        url, username = str(item.get("url") or ""), str(item.get("username") or "")
        password, password_file = item.get("password"), item.get("password-file")
        if not url:
            raise ConfigError("--credential has no url; give the URL the credential is for")
        if not username:
            raise ConfigError(f"--credential for {_shown(url)} has no username; give one")
        if bool(password) == bool(password_file):
            raise ConfigError(
                f"--credential for {_shown(url)} needs exactly one of password and "
                "password-file; give one of them"
            )
        if password:
            password_file = _secret_file(str(password), print_only, "credential")
        out.append(Credential(url=url, username=username, password_file=str(password_file)))
    return out


def _shown(url: str) -> str:
    from sidekick.core.redact import redact_url

    return redact_url(url)


def _known_variables(ctx: click.Context) -> set[str]:
    names = set(_NOT_SETTINGS)
    for param in ctx.command.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
        elif envvar:
            names.update(envvar)
    return names


def _warn_older_variables() -> None:
    """git-sync's warnings for its older variable names: each one set is deprecated, and the
    one read overrides ``GITSYNC_<NAME>`` and any other set beside it."""
    for key, older in OLDER_NAMES.items():
        given = [name for name in (key, *older) if os.environ.get(name)]
        for name in given:
            if name != key:
                log.warning("%s is deprecated (git-sync v3); use %s.", name, key)
        if len(given) > 1:
            others = ", ".join(given[:-1])
            log.warning("%s is overridden by %s, as in git-sync; set only one.", others, given[-1])


def _warn_unknown_variables(ctx: click.Context) -> None:
    known = _known_variables(ctx)
    for name in sorted(os.environ):
        if name.startswith(("GITSYNC_", "GIT_SYNC_")) and name not in known:
            log.warning(
                "Ignoring environment variable %s: sidekick sync has no such setting "
                "(check the spelling against docs/sync.md).",
                name,
            )


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
            out[field] = parse_duration(go_duration(out[field]), name=f"sync.{field} in {path}")
    return out


def _secret_file(secret: str, print_only: bool, kind: str) -> str:
    """Keep a secret given inline in a 0600 file, so it reaches git only through a helper."""
    if print_only:
        return f"(inline {kind}, not shown)"
    fd, path = tempfile.mkstemp(prefix=f"sidekick-sync-{kind}-")
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")

    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    atexit.register(remove)
    return path
