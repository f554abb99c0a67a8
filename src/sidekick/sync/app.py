"""Wires ``sidekick sync`` together: git environment, syncer, hooks, admin server, signals.

The root tasks (see ``SyncApp.main``) are the sync loop and one task per configured hook;
the admin server runs beside them. ``POST /sync`` and SIGHUP only trigger the loop. It
leaves out flag parsing (``sidekick.cli.sync``) and the sync logic itself (``syncer``).

``POST /sync`` may require a shared secret (``--trigger-secret-file``): GitHub's
``X-Hub-Signature-256`` (HMAC-SHA256 of the body), GitLab's ``X-Gitlab-Token`` or
``Authorization: Bearer <secret>`` are accepted; anything else gets 401. Refused requests
are counted and logged once a minute with a count, so a flood of them cannot flood the log;
an empty secret file is refused at start (and answered 503 if it becomes empty later), since
an empty secret would let anyone sign.

``GET /`` (and any other GET path the server does not otherwise serve) is git-sync's health
endpoint: 503 until the first successful sync, 200 from then on, also while later syncs fail.
``--http-pprof`` serves, instead of Go's profiles, the stacks of every thread and asyncio task
at ``/debug/pprof/`` and ``/debug/pprof/goroutine``; the other profile names answer 501.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import os
import re
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Mapping
from pathlib import Path

import aiohttp
from aiohttp import web

from sidekick.core.addr import HostPort
from sidekick.core.admin import AdminServer
from sidekick.core.errors import ConfigError
from sidekick.core.ratelog import RateLimitedLog
from sidekick.core.runtime import Shutdown, TaskOwner, run
from sidekick.sync import github_app
from sidekick.sync.config import Credential, SyncConfig
from sidekick.sync.credentials import FileRedactor, PrivateDir, check_credentials, helper_config
from sidekick.sync.git import Git, Redactor
from sidekick.sync.hooks import HookRunner, PrePublish, exechook, webhook
from sidekick.sync.metrics import SyncMetrics
from sidekick.sync.publish import WORKTREES
from sidekick.sync.syncer import Syncer, default_link

log = logging.getLogger("sidekick.sync")

REFUSED_LOG_INTERVAL = 60.0  # seconds between two log lines about refused POST /sync

# git-sync's defaults for SSH: used when the repository is reached over SSH, no flag names
# other files and these exist (git-sync passes them to ssh even when they do not).
SSH_KEY_DEFAULT = "/etc/git-secret/ssh"
SSH_KNOWN_HOSTS_DEFAULT = "/etc/git-secret/known_hosts"
# Signals that cannot trigger a sync: they stop the program, or cannot be caught.
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGSTOP}


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
        ssh = ["ssh", "-o", "BatchMode=yes"]
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
        git_env["GIT_SSH_COMMAND"] = shlex.join(ssh)
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
            raise ConfigError(
                "--askpass-url supplies the user name and password; drop --username and --password-file"
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
        try:
            argv = shlex.split(cfg.exechook_command)
        except ValueError as exc:
            raise ConfigError(
                f"--exechook-command {cfg.exechook_command!r} cannot be split ({exc}); fix the quoting"
            ) from None
        if not argv:
            raise ConfigError("--exechook-command is empty; give a command or leave it unset")
    if cfg.pre_publish_exechook_command is not None:
        flag = "--pre-publish-exechook-command"
        try:
            argv = shlex.split(cfg.pre_publish_exechook_command)
        except ValueError as exc:
            raise ConfigError(
                f"{flag} {cfg.pre_publish_exechook_command!r} cannot be split ({exc}); fix the quoting"
            ) from None
        if not argv:
            raise ConfigError(f"{flag} is empty; give a command or leave it unset")
        for name, value in (
            ("--pre-publish-exechook-timeout", cfg.pre_publish_exechook_timeout),
            ("--pre-publish-exechook-backoff", cfg.pre_publish_exechook_backoff),
        ):
            if value < 1:
                raise ConfigError(f"{name} {value:g}s is too short; use at least 1s")
    if cfg.init_period is not None and cfg.init_period < 0.01:
        raise ConfigError(f"--init-period {cfg.init_period:g}s is too short; use at least 10ms")
    parse_signal(cfg.sync_on_signal)
    check_credentials(cfg.credentials)
    github_app.check(cfg)
    if cfg.webhook_url is not None and not cfg.webhook_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"--webhook-url {Redactor()(cfg.webhook_url)!r} is not an http(s) URL; use http:// or https://"
        )
    root = Path(cfg.root)
    # A --root that is not a repository is emptied by the first sync, as git-sync does.
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--root {cfg.root!r} is not a directory; point it at a directory")


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


def stack_dump() -> str:
    """The stacks of every thread and asyncio task, for ``/debug/pprof/goroutine``."""
    out = io.StringIO()
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.write(f"thread {names.get(ident, ident)}:\n")
        out.write("".join(traceback.format_stack(frame)))
        out.write("\n")
    for task in asyncio.all_tasks():
        out.write(f"task {task.get_name()}:\n")
        task.print_stack(file=out)
        out.write("\n")
    return out.getvalue()


def _read_secret(path: str) -> bytes:
    return Path(path).read_bytes().strip()


def verify_trigger(secret: bytes, headers: Mapping[str, str], body: bytes) -> bool:
    """Accept GitHub's HMAC signature, GitLab's token or a bearer token."""
    signature = headers.get("X-Hub-Signature-256")
    if signature is not None:
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.strip().encode(), expected.encode())
    token = headers.get("X-Gitlab-Token")
    if token is None:
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
    return token is not None and hmac.compare_digest(token.strip().encode(), secret)


class SyncApp:
    def __init__(
        self, cfg: SyncConfig, admin_addr: HostPort, env: Mapping[str, str] | None = None
    ) -> None:
        self.cfg = cfg
        self.env = dict(os.environ if env is None else env)
        self.redact = FileRedactor(files=[c.password_file for c in cfg.credentials])
        self.metrics = SyncMetrics()
        self.owner = TaskOwner()
        self.hooks: list[HookRunner] = []
        self.session: aiohttp.ClientSession | None = None
        self.secrets: PrivateDir | None = None
        credentials = list(cfg.credentials)
        app_token: github_app.AppToken | None = None
        if github_app.enabled(cfg) and not is_ssh_url(cfg.repo):
            self.secrets = PrivateDir()
            token_file = self.secrets.write("github-app-token", "")
            app_token = github_app.AppToken(cfg, token_file, self.metrics, self.redact)
            credentials.append(
                Credential(
                    url=cfg.repo, username=github_app.TOKEN_USER, password_file=str(token_file)
                )
            )
        pre_publish = None
        if cfg.pre_publish_exechook_command:
            pre_publish = PrePublish(
                cfg.pre_publish_exechook_command,
                cfg.pre_publish_exechook_timeout,
                cfg.pre_publish_exechook_backoff,
                self.env,
                self.metrics,
            )
        self.syncer = Syncer(
            cfg,
            git=build_git(cfg, self.env, self.redact, credentials),
            metrics=self.metrics,
            hooks=self.hooks,
            refresh_credentials=app_token.refresh if app_token is not None else None,
            pre_publish=pre_publish,
        )
        self.admin = AdminServer(
            admin_addr, self.metrics.registry, healthy=self.owner.alive, ready=self.syncer.ready
        )
        self.admin.add_route("POST", "/sync", self._post_sync)
        if cfg.http_pprof:
            self.admin.add_route("GET", "/debug/pprof/", self._pprof)
            self.admin.add_route("GET", "/debug/pprof/{name}", self._pprof)
        # git-sync answers its health on every path it does not otherwise serve.
        self.admin.add_route("GET", "/{tail:.*}", self._git_sync_health)
        self._trigger_log = RateLimitedLog(log, REFUSED_LOG_INTERVAL)
        self._signal = parse_signal(cfg.sync_on_signal)

    async def _git_sync_health(self, request: web.Request) -> web.Response:
        """git-sync's ``/``: 503 until the first successful sync, then 200 for good."""
        ok, _reason = self.syncer.ready()
        if ok:
            return web.Response(status=200)
        return web.Response(status=503, text="repo is not ready\n")

    async def _pprof(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "")
        if name in ("", "goroutine"):
            return web.Response(text=stack_dump())
        return web.Response(
            status=501,
            text=f"profile {name!r} is not available: sidekick sync is a Python program; "
            "/debug/pprof/goroutine shows the stacks of its threads and tasks\n",
        )

    def on_signal(self) -> None:
        name = self._signal.name if self._signal is not None else "signal"
        log.info("Received %s, syncing now.", name)
        self.syncer.trigger("signal")

    def on_hup(self) -> None:
        log.info("Received SIGHUP, syncing now.")
        self.syncer.trigger("signal")

    async def _post_sync(self, request: web.Request) -> web.Response:
        self._trigger_log.flush()
        body = await request.read()
        if self.cfg.trigger_secret_file is not None:
            # Read per request so a rotated secret takes effect without a restart.
            try:
                secret = await asyncio.to_thread(_read_secret, self.cfg.trigger_secret_file)
            except OSError as exc:
                problem = f"cannot be read ({exc.strerror})"
                secret = b""
            else:
                problem = "is empty"
            if not secret:
                self.metrics.triggers.labels("refused").inc()
                self._trigger_log.error(
                    "unavailable",
                    "--trigger-secret-file %s; refusing POST /sync until it holds the secret.",
                    problem,
                )
                return web.Response(status=503, text="trigger secret unavailable\n")
            if not verify_trigger(secret, request.headers, body):
                self.metrics.triggers.labels("refused").inc()
                self._trigger_log.warning(
                    "refused",
                    "Refused POST /sync from %s: bad or missing signature.",
                    request.remote,
                )
                return web.Response(status=401, text="bad or missing signature\n")
        self.syncer.trigger("http")
        return web.json_response({"status": "sync requested"}, status=202)

    def _make_hooks(self) -> None:
        cfg = self.cfg
        if cfg.exechook_command:
            self.hooks.append(
                HookRunner(
                    "exechook",
                    exechook(cfg.exechook_command, cfg.exechook_timeout, self.env),
                    cfg.exechook_backoff,
                    self.metrics,
                )
            )
        if cfg.webhook_url:
            self.session = aiohttp.ClientSession()
            self.hooks.append(
                HookRunner(
                    "webhook",
                    webhook(
                        self.session,
                        cfg.webhook_url,
                        method=cfg.webhook_method.upper(),
                        timeout=cfg.webhook_timeout,
                        success_status=cfg.webhook_success_status,
                        redact=self.redact,
                    ),
                    cfg.webhook_backoff,
                    self.metrics,
                )
            )

    async def main(self, shutdown: Shutdown) -> int:
        preflight(self.cfg)
        if self.cfg.add_user and add_user(
            os.getuid(), os.getgid(), self.env.get("HOME") or os.getcwd()
        ):
            log.info("Added UID %d to /etc/passwd (--add-user).", os.getuid())
        event_loop = asyncio.get_running_loop()
        if self._signal is not None and self._signal != signal.SIGHUP:
            event_loop.add_signal_handler(self._signal, self.on_signal)
        if self.cfg.group_write:
            # This process only writes the synced tree, so a process-wide umask is the
            # simplest way to make git and the worktrees group-writable.
            os.umask(0o002)
        self._make_hooks()
        # --one-time is an init container: nothing probes it, so no admin server.
        if not self.cfg.one_time:
            await self.admin.start()
        try:
            if self.cfg.one_time:
                return await self._one_time(shutdown)
            # Root tasks: the sync loop, and one task per hook so a slow hook never
            # holds up the next sync.
            loop = self.owner.spawn("sync loop", self.syncer.run(shutdown))
            for hook in self.hooks:
                self.owner.spawn(f"hook {hook.name}", hook.run())
            log.info(
                "Syncing %s (ref %s) into %s every %gs.",
                self.syncer.repo_shown,
                self.cfg.ref,
                self.syncer.tree.link,
                self.cfg.period,
            )
            await self.owner.wait_until(shutdown)
            code = loop.result() if loop.done() and not loop.cancelled() else 0
            return int(code)
        finally:
            await self.owner.cancel_all(5.0)
            await self.admin.aclose()
            for key in ("refused", "unavailable"):
                self._trigger_log.forget(key)  # logs the count still held back, if any
            if self.session is not None:
                await self.session.close()
            if self._signal is not None and self._signal != signal.SIGHUP:
                event_loop.remove_signal_handler(self._signal)
            if self.secrets is not None:
                self.secrets.aclose()
            self.syncer.aclose()

    async def _one_time(self, shutdown: Shutdown) -> int:
        code = await self.syncer.run(shutdown)
        if code != 0 or self.syncer.published is None:
            return code or 1
        sha, path = self.syncer.published
        for hook in self.hooks:
            if not await hook.attempt(sha, path):
                return 1
        return 0


def run_sync(cfg: SyncConfig, admin_addr: HostPort, shutdown_timeout: float) -> int:
    app = SyncApp(cfg, admin_addr)
    return run(app.main, shutdown_timeout=shutdown_timeout, on_hup=app.on_hup)
