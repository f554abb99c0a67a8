"""Wires ``sidekick sync`` together: git environment, syncer, hooks, admin server, signals.

The root tasks (see ``SyncApp.main``) are the sync loop and one task per configured hook;
the admin server runs beside them. ``POST /sync`` and SIGHUP only trigger the loop. It
leaves out flag parsing (``sidekick.cli.sync``), the checks before the first sync
(``preflight``), the git runner's settings (``git_setup``) and the sync logic itself
(``syncer``).

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
import signal
import sys
import threading
import traceback
from collections import ChainMap
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from sidekick.core.addr import HostPort
from sidekick.core.admin import AdminServer
from sidekick.core.ratelog import RateLimitedLog
from sidekick.core.runtime import Shutdown, TaskOwner, run
from sidekick.sync import github_app
from sidekick.sync.config import Credential, SyncConfig
from sidekick.sync.credentials import FileRedactor, PrivateDir
from sidekick.sync.git_setup import build_git, is_ssh_url
from sidekick.sync.hooks import HookRunner, PrePublish, exechook, webhook
from sidekick.sync.metrics import SyncMetrics
from sidekick.sync.preflight import _read_secret, add_user, parse_signal, preflight
from sidekick.sync.syncer import Syncer

log = logging.getLogger("sidekick.sync")

REFUSED_LOG_INTERVAL = 60.0  # seconds between two log lines about refused POST /sync


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
        git = build_git(cfg, self.env, self.redact, credentials)
        self.syncer = Syncer(
            cfg,
            git=git,
            metrics=self.metrics,
            hooks=self.hooks,
            refresh_credentials=app_token.refresh if app_token is not None else None,
        )
        # What exechooks run with: this process's environment, the sync's git set-up and
        # the last sync's credentials for --repo (which a git run by git-sync's hooks finds
        # in git's credential cache).
        self.hook_env: Mapping[str, str] = ChainMap(
            self.syncer.remote.hook_credentials, git.hook_env(self.env)
        )
        if cfg.pre_publish_exechook_command:
            self.syncer.pre_publish = PrePublish(
                cfg.pre_publish_exechook_command,
                cfg.pre_publish_exechook_timeout,
                cfg.pre_publish_exechook_backoff,
                self.hook_env,
                self.metrics,
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
                    exechook(cfg.exechook_command, cfg.exechook_timeout, self.hook_env),
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
        # As git-sync, whatever umask was inherited: 022, or 002 with --group-write. This
        # process only writes the synced tree, so a process-wide umask is the simplest way
        # to make git and the worktrees readable by a consumer running as another user
        # (and group-writable when asked).
        os.umask(0o002 if self.cfg.group_write else 0o022)
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
