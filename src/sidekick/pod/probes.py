"""Probes and lifecycle hooks: run one action, and the kubelet's probe loop.

An action is ``exec`` (a host process with the container's environment, working directory and
path translation; exit code 0 is success), ``httpGet`` (for a probe any status from 200 to 399
is success, redirects are followed on the same host only and one to another host counts as
success; for a hook any answer is success; at most 10 KiB of the body is read; HTTPS
certificates are not verified; all as the kubelet does), ``tcpSocket``
(the connection opens) or, for hooks only, ``sleep``. A probe passes after ``successThreshold``
consecutive successes and fails after ``failureThreshold`` consecutive failures, checked every
``periodSeconds`` after ``initialDelaySeconds``, each attempt limited to ``timeoutSeconds``.
gRPC probes are refused when the manifest is read.

Timeouts use ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11, a
``wait_for`` whose awaitable has just finished returns its result even when the task was
cancelled at that moment, and a probe that swallowed its cancellation kept probing a stopped
container forever, so ``up`` hung until its shutdown timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from sidekick.pod.expand import expand
from sidekick.pod.hygiene import Tracker, kill_group, spawn
from sidekick.pod.manifest import (
    Action,
    ExecAction,
    HTTPGetAction,
    Probe,
    TCPSocketAction,
)
from sidekick.pod.paths import Translator

log = logging.getLogger("sidekick.up")


@dataclass
class ActionContext:
    """What an action of one container needs to run like that container."""

    env: dict[str, str]
    expand_env: dict[str, str]
    cwd: str | None
    translate: Translator
    ports: dict[str, int]
    tracker: Tracker
    session: Callable[[], aiohttp.ClientSession]
    host: str = "127.0.0.1"
    extra: dict[str, str] = field(default_factory=dict)
    # Wraps an exec command to run inside the container (sidekick.pod.isolation), if isolated.
    enter: Callable[[list[str], str | None], list[str]] | None = None


def _port(port: int | str, ctx: ActionContext) -> int:
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    if port not in ctx.ports:
        raise _NoPort(f"port name {port!r} is not in the container's ports")
    return ctx.ports[port]


class _NoPort(Exception):
    pass


async def run_action(
    action: Action, ctx: ActionContext, timeout: float | None, *, hook: bool = False
) -> tuple[bool, str]:
    """Run ``action`` once, as a probe or (``hook``) a lifecycle hook, within ``timeout``
    seconds (None: no limit); return (succeeded, a short reason)."""
    try:
        if isinstance(action, ExecAction):
            return await _exec(action, ctx, timeout)
        if isinstance(action, HTTPGetAction):
            async with asyncio.timeout(timeout):
                return await (_http_hook(action, ctx) if hook else _http(action, ctx))
        if isinstance(action, TCPSocketAction):
            async with asyncio.timeout(timeout):
                return await _tcp(action, ctx)
        await asyncio.sleep(action.seconds)
        return True, f"slept {action.seconds:g}s"
    except TimeoutError:
        return False, f"timed out after {timeout or 0:g}s"
    except _NoPort as exc:
        return False, str(exc)


async def _exec(action: ExecAction, ctx: ActionContext, timeout: float | None) -> tuple[bool, str]:
    argv = [ctx.translate(expand(a, ctx.expand_env)) for a in action.command]
    if not argv:
        return False, "exec command is empty"
    if ctx.enter is not None:
        argv = ctx.enter(argv, ctx.cwd)
    try:
        proc, reader, pipe = await spawn(ctx.tracker, argv, ctx.env, ctx.cwd or None)
    except OSError as exc:
        return False, f"exec {argv[0]!r} failed: {exc.strerror}"
    out = b""
    try:
        async with asyncio.timeout(timeout):
            await proc.wait()
    except TimeoutError:
        return False, f"command timed out after {timeout or 0:g}s"
    finally:
        try:
            kill_group(proc.pid, signal.SIGKILL)  # on timeout, and anything left in its group
            if proc.returncode is None:
                # Reaped at once after SIGKILL; a cancellation arriving meanwhile propagates.
                await asyncio.shield(proc.wait())
            # Whatever it printed is in the pipe already; a lingering grandchild may keep
            # it open, so do not wait for the end of the output.
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(0.2):
                    out = await reader.read(4096)
        finally:
            ctx.tracker.own.discard(proc.pid)
            pipe.close()
    text = out.decode(errors="replace").strip()[:200]
    if proc.returncode == 0:
        return True, text
    return False, f"exit code {proc.returncode}" + (f": {text}" if text else "")


# The kubelet reads at most this much of an answer's body (pkg/probe/http, and
# discardHTTPRespBody for hooks); the status alone decides.
_BODY_LIMIT = 10 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)


def _request(action: HTTPGetAction, ctx: ActionContext, agent: str) -> tuple[str, dict[str, str]]:
    host = action.host or ctx.host
    scheme = "https" if action.scheme == "HTTPS" else "http"
    path = action.path if action.path.startswith("/") else "/" + action.path
    url = f"{scheme}://{host}:{_port(action.port, ctx)}{path}"
    # NewRequestForHTTPGetAction's headers: kube-probe/<version> or kube-lifecycle/<version>.
    headers = {"User-Agent": f"{agent}/1.33", "Accept": "*/*"}
    headers.update(dict(action.headers))
    return url, headers


async def _get(
    ctx: ActionContext, url: str, headers: dict[str, str], *, follow: bool
) -> tuple[int, str | None]:
    """One GET (redirects followed if ``follow``): its status and Location header."""
    async with ctx.session().get(url, headers=headers, ssl=False, allow_redirects=follow) as r:
        read = 0
        while read < _BODY_LIMIT:
            chunk = await r.content.read(_BODY_LIMIT - read)
            if not chunk:
                break
            read += len(chunk)
        return r.status, r.headers.get("Location")


async def _http(action: HTTPGetAction, ctx: ActionContext) -> tuple[bool, str]:
    """A probe's GET, as the kubelet's prober does it: redirects are followed only to the
    same host name (up to 10 requests); a redirect to another host is not followed and
    counts as success ("Probe terminated redirects", a warning)."""
    url, headers = _request(action, ctx, "kube-probe")
    current = url
    try:
        for request in range(1, 11):
            status, location = await _get(ctx, current, headers, follow=False)
            if status not in _REDIRECTS or not location:
                return 200 <= status < 400, f"GET {url}: HTTP {status}"
            target = urllib.parse.urljoin(current, location)
            if urllib.parse.urlsplit(target).hostname != urllib.parse.urlsplit(url).hostname:
                return True, f"GET {url}: HTTP {status} to another host, not followed"
            if request == 10:
                return False, f"GET {url}: stopped after 10 redirects"
            current = target
    except aiohttp.ClientError as exc:
        return False, f"GET {url}: {exc or type(exc).__name__}"
    except (OSError, ValueError) as exc:
        return False, f"GET {url}: {getattr(exc, 'strerror', None) or exc}"
    raise AssertionError("unreachable")


async def _http_hook(action: HTTPGetAction, ctx: ActionContext) -> tuple[bool, str]:
    """A lifecycle hook's GET, as the kubelet's runHTTPHandler does it: any answer is
    success (the status is not looked at), redirects are followed, and an HTTPS request
    that an HTTP server answers is made again over HTTP without Authorization."""
    url, headers = _request(action, ctx, "kube-lifecycle")
    try:
        try:
            status, _ = await _get(ctx, url, headers, follow=True)
        except aiohttp.ClientSSLError:
            if not url.startswith("https://"):
                raise
            url = "http://" + url.removeprefix("https://")
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            status, _ = await _get(ctx, url, headers, follow=True)
        return True, f"GET {url}: HTTP {status}"
    except aiohttp.ClientError as exc:
        return False, f"GET {url}: {exc or type(exc).__name__}"
    except OSError as exc:
        return False, f"GET {url}: {exc.strerror or exc}"


async def _tcp(action: TCPSocketAction, ctx: ActionContext) -> tuple[bool, str]:
    host = action.host or ctx.host
    port = _port(action.port, ctx)
    try:
        _reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return False, f"dial tcp {host}:{port}: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, f"connected to {host}:{port}"


ProbeKind = str  # "startup" | "readiness" | "liveness"


class ProbeWorker:
    """Runs one probe of one container instance; calls ``on_change(ok, reason)`` on a flip.

    ``result`` starts as the kubelet's initial value: failure for readiness, success for
    liveness, unknown (None) for startup.

    The first attempt runs as soon as the container has started (after ``initialDelaySeconds``),
    as the kubelet runs it when it sees the new container. Later attempts come on the ticks of
    a ``periodSeconds`` clock that started with the Pod (``epoch``, a loop time): the kubelet's
    probe worker and its ticker start when the Pod is added, before its containers, and keep
    running across restarts. So a readiness probe that failed because a server was not yet
    listening is tried again at the next tick, less than a period later. Without ``epoch`` the
    clock starts at the first attempt. A tick missed during a long attempt runs right after it
    (a Go ticker holds one).
    """

    def __init__(
        self,
        kind: ProbeKind,
        probe: Probe,
        ctx: ActionContext,
        on_change: Callable[[bool, str], None],
        epoch: float | None = None,
    ) -> None:
        self.kind = kind
        self.probe = probe
        self.ctx = ctx
        self.on_change = on_change
        self.epoch = epoch
        self.result: bool | None = {"readiness": False, "liveness": True}.get(kind)
        self.successes = 0
        self.failures = 0
        self.last_reason = ""

    async def run(self) -> None:
        p = self.probe
        if p.initial_delay:
            await asyncio.sleep(p.initial_delay)
        loop = asyncio.get_running_loop()
        epoch = loop.time() if self.epoch is None else self.epoch
        while True:
            begun = loop.time()
            ok, reason = await run_action(p.action, self.ctx, p.timeout)
            this = asyncio.current_task()
            if this is not None and this.cancelling():
                # Cancelled while the attempt was ending: stop now, report nothing.
                raise asyncio.CancelledError
            self.last_reason = reason
            if ok:
                self.successes += 1
                self.failures = 0
                if self.result is not True and self.successes >= p.success_threshold:
                    self.result = True
                    self.on_change(True, reason)
            else:
                self.failures += 1
                self.successes = 0
                if self.result is not False and self.failures >= p.failure_threshold:
                    self.result = False
                    self.on_change(False, reason)
            tick = epoch + (math.floor((begun - epoch) / p.period) + 1) * p.period
            await asyncio.sleep(max(0.0, tick - loop.time()))
