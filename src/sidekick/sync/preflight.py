"""The start of ``sidekick sync``, before its first sync: the checks of its settings, and
git-sync's ``--add-user``.

``preflight`` checks the settings before anything runs: values out of range, flags that need
or exclude each other, files that must be readable, an empty ``--trigger-secret-file`` (an
empty secret would let anyone sign), commands that cannot be split, a ``--link`` that would
clash with the repository and a ``--sync-on-signal`` that stops the program. Each problem is
one ``ConfigError`` naming the flag, the value and the fix.

It leaves out reading the flags (``sidekick.cli.sync``) and what can only fail during a sync
(a ref that does not exist, an unreachable remote): ``syncer`` retries those.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
from pathlib import Path

from sidekick.core.errors import ConfigError
from sidekick.sync import github_app
from sidekick.sync.config import SyncConfig
from sidekick.sync.credentials import check_credentials
from sidekick.sync.git import Redactor
from sidekick.sync.publish import WORKTREES
from sidekick.sync.syncer import default_link

log = logging.getLogger("sidekick.sync")

# Signals that cannot trigger a sync: they stop the program, or cannot be caught.
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGSTOP}


def preflight(cfg: SyncConfig) -> None:
    """Check the inputs that need the filesystem; raise ConfigError naming the fix."""
    if not cfg.repo:
        raise ConfigError(
            "--repo is empty; give the repository URL, like --repo https://host/org/repo"
        )
    if cfg.period < 0.01:
        raise ConfigError(f"--period {cfg.period:g}s is too short; use at least 10ms")
    if cfg.sync_timeout < 0.01:
        raise ConfigError(f"--sync-timeout {cfg.sync_timeout:g}s is too short; use at least 10ms")
    if not cfg.ref.strip():
        raise ConfigError(
            "--ref is empty; give a branch, tag or commit hash, or leave it unset for HEAD"
        )
    if cfg.depth < 0:
        raise ConfigError(f"--depth {cfg.depth} is negative; use 0 for full history or 1 and up")
    link = cfg.link or default_link(cfg.repo)
    if os.path.basename(link.rstrip("/")) in ("", ".", "..", ".git", WORKTREES):
        raise ConfigError(
            f"--link {link!r} would clash with the repository under --root; choose a plain name like html"
        )
    if not re.fullmatch(r"[A-Za-z]+", cfg.webhook_method):
        raise ConfigError(
            f"--webhook-method {cfg.webhook_method!r} is not an HTTP method; use POST, PUT or GET"
        )
    if cfg.askpass_url is not None:
        if not cfg.askpass_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"--askpass-url {Redactor()(cfg.askpass_url)!r} is not an http(s) URL; use http:// or https://"
            )
        if cfg.password_file or cfg.username:
            # git-sync takes both: it stores --username's credential, then the answer of
            # --askpass-url for the same URL over it, so the answer is what git uses.
            log.warning(
                "--askpass-url is set beside --username/--password-file; its answer is used, "
                "as in git-sync, so drop --username and --password-file."
            )
    if cfg.username and not cfg.password_file:
        raise ConfigError("--username is set but --password-file is not; give both or neither")
    if cfg.password_file and not cfg.username:
        raise ConfigError("--password-file is set but --username is not; give both or neither")
    files = [
        ("--password-file", cfg.password_file),
        ("--ssh-known-hosts-file", cfg.ssh_known_hosts_file),
        ("--cookie-file", cfg.cookie_file),
        ("--sparse-checkout-file", cfg.sparse_checkout_file),
        ("--trigger-secret-file", cfg.trigger_secret_file),
        *(("--ssh-key-file", k) for k in cfg.ssh_key_files),
    ]
    for flag, path in files:
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"{flag} {path!r} does not exist or cannot be read; check the path")
    if cfg.trigger_secret_file is not None:
        try:
            secret = _read_secret(cfg.trigger_secret_file)
        except OSError as exc:
            raise ConfigError(
                f"--trigger-secret-file {cfg.trigger_secret_file!r} cannot be read "
                f"({exc.strerror}); check the path"
            ) from None
        if not secret:
            raise ConfigError(
                f"--trigger-secret-file {cfg.trigger_secret_file!r} is empty; put the shared "
                "secret in it, or leave the flag out to accept every POST /sync"
            )
    if cfg.trigger_min_interval < 0:
        raise ConfigError(
            f"--trigger-min-interval {cfg.trigger_min_interval:g}s is negative; use 0 or more"
        )
    if cfg.exechook_command is not None:
        _check_command("--exechook-command", cfg.exechook_command)
        _at_least_1s(("--exechook-timeout", cfg.exechook_timeout),
                     ("--exechook-backoff", cfg.exechook_backoff))  # fmt: skip
    if cfg.pre_publish_exechook_command is not None:
        _check_command("--pre-publish-exechook-command", cfg.pre_publish_exechook_command)
        _at_least_1s(("--pre-publish-exechook-timeout", cfg.pre_publish_exechook_timeout),
                     ("--pre-publish-exechook-backoff", cfg.pre_publish_exechook_backoff))  # fmt: skip
    if cfg.webhook_url is not None:
        _at_least_1s(("--webhook-timeout", cfg.webhook_timeout),
                     ("--webhook-backoff", cfg.webhook_backoff))  # fmt: skip
    if cfg.init_period is not None and cfg.init_period < 0.01:
        raise ConfigError(f"--init-period {cfg.init_period:g}s is too short; use at least 10ms")
    parse_signal(cfg.sync_on_signal)
    check_credentials(cfg.credentials)
    github_app.check(cfg)
    if cfg.webhook_url is not None and not cfg.webhook_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"--webhook-url {Redactor()(cfg.webhook_url)!r} is not an http(s) URL; use http:// or https://"
        )
    if cfg.webhook_url is not None and cfg.webhook_success_status < -1:
        raise ConfigError(
            f"--webhook-success-status {cfg.webhook_success_status} is not an HTTP status; "
            "give one like 200, or 0 to accept any answer"
        )
    root = Path(cfg.root)
    # A --root that is not a repository is emptied by the first sync, as git-sync does.
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--root {cfg.root!r} is not a directory; point it at a directory")


def _at_least_1s(*settings: tuple[str, float]) -> None:
    """A hook's timeout and back-off: git-sync refuses less than a second for either."""
    for name, value in settings:
        if value < 1:
            raise ConfigError(f"{name} {value:g}s is too short; use at least 1s")


def parse_signal(text: str) -> signal.Signals | None:
    """git-sync's ``--sync-on-signal``: a name (``SIGUSR1``, ``USR1``) or a number."""
    if not text:
        return None
    try:
        sig = signal.Signals(int(text, 0))
    except ValueError:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            sig = signal.Signals[name]
        except KeyError:
            raise ConfigError(
                f"--sync-on-signal {text!r} is not a signal; give a name like SIGHUP or SIGUSR1, "
                "or a number"
            ) from None
    if sig in _STOP_SIGNALS:
        raise ConfigError(
            f"--sync-on-signal {text!r} cannot trigger syncs ({sig.name} stops the program or "
            "cannot be caught); use SIGHUP, SIGUSR1 or SIGUSR2"
        )
    return sig


def add_user(uid: int, gid: int, home: str, passwd: str = "/etc/passwd") -> bool:
    """git-sync's ``--add-user``: give this UID an entry in ``passwd`` if it has none, since
    ssh refuses to run for a UID without one; True if an entry was added."""
    try:
        with open(passwd, encoding="utf-8") as f:
            for line in f:
                fields = line.split(":")
                if len(fields) > 2 and fields[2] == str(uid):
                    return False
        with open(passwd, "a", encoding="utf-8") as f:
            f.write(f"git-sync:x:{uid}:{gid}::{home}:/sbin/nologin\n")
    except OSError as exc:
        raise ConfigError(
            f"--add-user cannot add UID {uid} to {passwd} ({exc.strerror}); make the file "
            "writable for this user or drop --add-user"
        ) from None
    return True


def _read_secret(path: str) -> bytes:
    return Path(path).read_bytes().strip()


__all__ = ["add_user", "parse_signal", "preflight"]


def _check_command(flag: str, command: str) -> None:
    """A hook command is one program run with no arguments, as in git-sync.

    A value that is a program followed by arguments (which earlier versions split into
    words) names no program: git-sync would fail it on every run, so it is refused here,
    naming the fix. A path holding spaces is taken whole when it exists.
    """
    words = command.split()
    if not words:
        raise ConfigError(f"{flag} is empty; give a command or leave it unset")
    if command == words[0] or shutil.which(command) is not None:
        return
    if shutil.which(words[0]) is not None:
        raise ConfigError(
            f"{flag} {command!r} names no program: it is run as one program with no "
            "arguments and no shell, as in git-sync; put the command line in a script and "
            "give the script's path"
        )
