"""The git runner every sync uses: its settings, built once from the flags.

Each setting holds for the life of the process and reaches git as ``-c`` or in the
environment: no credential helper from the system (only the askpass script and the
URL-scoped helpers of ``credentials`` answer git), ``--git-config`` pairs parsed as git-sync
parses them, ``--group-write``, ``--cookie-file``, and for SSH a ``GIT_SSH_COMMAND`` with the
keys and known hosts, git-sync's files under ``/etc/git-secret`` when the repository is
reached over SSH and no flag names others; a ``GIT_SSH_COMMAND`` the user set is kept and
given those options, as git-sync does.

It leaves out the credentials read again on every sync (``remote``) and the checks of the
flags before the first sync (``preflight``).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping

from sidekick.core.errors import ConfigError
from sidekick.sync.config import Credential, SyncConfig
from sidekick.sync.credentials import helper_config
from sidekick.sync.git import Git, Redactor

# git-sync's defaults for SSH: used when the repository is reached over SSH, no flag names
# other files and these exist (git-sync passes them to ssh even when they do not).
SSH_KEY_DEFAULT = "/etc/git-secret/ssh"
SSH_KNOWN_HOSTS_DEFAULT = "/etc/git-secret/known_hosts"


def is_ssh_url(repo: str) -> bool:
    return repo.startswith("ssh://") or bool(re.match(r"^[\w.-]+@[\w.-]+:", repo))


def build_git(
    cfg: SyncConfig,
    env: Mapping[str, str],
    redact: Redactor,
    credentials: list[Credential] | None = None,
) -> Git:
    """The git runner with transport settings that hold for every sync.

    ``credentials`` are ``--credential`` plus any the program adds (the GitHub App token).
    """
    # An empty helper resets any helper configured system-wide, so no helper stores our
    # password; credentials come only from the askpass script and the URL-scoped helpers.
    config: list[tuple[str, str]] = [("credential.helper", "")]
    config += helper_config(cfg.credentials if credentials is None else credentials)
    config += parse_git_config(cfg.git_config)
    if cfg.group_write:
        config.append(("core.sharedRepository", "group"))
    if cfg.cookie_file:
        config.append(("http.cookieFile", os.path.abspath(cfg.cookie_file)))
    git_env = dict(env)
    key_files = list(cfg.ssh_key_files)
    known_hosts_file = cfg.ssh_known_hosts_file
    if is_ssh_url(cfg.repo):
        if not key_files and os.path.isfile(SSH_KEY_DEFAULT):
            key_files = [SSH_KEY_DEFAULT]
        if known_hosts_file is None and os.path.isfile(SSH_KNOWN_HOSTS_DEFAULT):
            known_hosts_file = SSH_KNOWN_HOSTS_DEFAULT
    if key_files or known_hosts_file or not cfg.ssh_known_hosts:
        ssh = ["-o", "BatchMode=yes"]
        if key_files:
            ssh += ["-o", "IdentitiesOnly=yes"]
            for key in key_files:
                ssh += ["-i", os.path.abspath(key)]
        if not cfg.ssh_known_hosts:
            ssh += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        elif known_hosts_file:
            ssh += [
                "-o",
                f"UserKnownHostsFile={os.path.abspath(known_hosts_file)}",
                "-o",
                "StrictHostKeyChecking=yes",
            ]
        # As git-sync: a GIT_SSH_COMMAND already set (a port, a proxy) is kept and given
        # these options; git runs it through the shell, so it is extended as text.
        base = env.get("GIT_SSH_COMMAND", "").strip() or "ssh"
        git_env["GIT_SSH_COMMAND"] = f"{base} {shlex.join(ssh)}"
    return Git(cfg.git, env=git_env, redact=redact, config=config)


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', ",": ",", "\\": "\\"}


def parse_git_config(text: str) -> list[tuple[str, str]]:
    """git-sync's ``--git-config``: ``key:value`` pairs separated by commas.

    Keys and values may be double-quoted (a key holding a colon must be); ``\\n``, ``\\t``,
    ``\\"``, ``\\,`` and ``\\\\`` are escapes; an unquoted value must escape its commas.
    """
    pairs: list[tuple[str, str]] = []
    key: str | None = None
    cur: list[str] = []
    quoted = False
    i = 0

    def finish() -> None:
        nonlocal key, cur
        item = "".join(cur)
        if key is None:
            if item.strip():
                raise ConfigError(
                    f"--git-config {text!r}: {item.strip()!r} has no ':'; write key:value pairs "
                    "separated by commas"
                )
        else:
            pairs.append((key.strip(), item))
        key, cur = None, []

    while i < len(text):
        c = text[i]
        if c == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in _ESCAPES:
                raise ConfigError(
                    f"--git-config {text!r}: unknown escape '\\{nxt}'; use \\n, \\t, \\\", \\, or \\\\"
                )
            cur.append(_ESCAPES[nxt])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ":" and not quoted and key is None:
            key, cur = "".join(cur), []
        elif c == "," and not quoted:
            finish()
        else:
            cur.append(c)
        i += 1
    if quoted:
        raise ConfigError(f"--git-config {text!r} has an unclosed quote; close it")
    finish()
    return pairs


__all__ = ["build_git", "is_ssh_url", "parse_git_config"]
