"""Hooks run after each publish: a command (``--exechook-command``) and an HTTP call
(``--webhook-url``), both compatible with git-sync's.

Each hook has its own owned task so a slow hook never delays the next sync. It always works
on the newest published revision: if a hook is failing and a newer revision arrives, the
retry goes straight to the newer one (the older revision is no longer served, so notifying
about it is pointless). Failures are retried with back-off starting at ``--*-backoff`` and
doubling up to a minute. Hooks may run more than once per revision (after a restart, for
example), so they must be idempotent, as with git-sync.

It leaves out ordering between the two hooks: they run independently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp

from sidekick.core.backoff import Backoff
from sidekick.core.errors import TemporaryError
from sidekick.sync.git import Redactor, kill_group, last_lines, run_with_deadline
from sidekick.sync.metrics import SyncMetrics

log = logging.getLogger("sidekick.sync.hooks")

Hook = Callable[[str, Path], Awaitable[None]]


class HookError(TemporaryError):
    """A hook failed; it will be retried."""


class HookRunner:
    """Runs one hook for the newest revision it was told about, retrying failures."""

    def __init__(self, name: str, hook: Hook, backoff: float, metrics: SyncMetrics) -> None:
        self.name = name
        self.hook = hook
        self.metrics = metrics
        self.backoff = Backoff(initial=backoff, maximum=max(backoff, 60.0))
        self._latest: tuple[str, Path] | None = None
        self._wake = asyncio.Event()
        self.done: str | None = None

    def notify(self, sha: str, path: Path) -> None:
        self._latest = (sha, path)
        self._wake.set()

    async def attempt(self, sha: str, path: Path) -> bool:
        """Run the hook once now (``--one-time``); True on success."""
        try:
            await self.hook(sha, path)
        except Exception as exc:
            self.metrics.hook_done(self.name, ok=False)
            log.error("%s for %s failed: %s.", self.name, sha[:12], exc)
            return False
        self.done = sha
        self.metrics.hook_done(self.name, ok=True)
        log.info("%s for %s succeeded.", self.name, sha[:12])
        return True

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._latest is not None and self._latest[0] != self.done:
                sha, path = self._latest
                try:
                    await self.hook(sha, path)
                except Exception as exc:
                    delay = self.backoff.next_delay()
                    self.metrics.hook_done(self.name, ok=False)
                    log.warning(
                        "%s for %s failed: %s; retrying in %.1fs.", self.name, sha[:12], exc, delay
                    )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    self._wake.clear()
                else:
                    self.backoff.reset()
                    self.done = sha
                    self.metrics.hook_done(self.name, ok=True)
                    log.info("%s for %s succeeded.", self.name, sha[:12])


def exechook(command: str, timeout: float, env: Mapping[str, str], name: str = "exechook") -> Hook:
    """git-sync's exechook: ``command`` is one program, a path (relative ones from the new
    worktree) or a name looked up in ``PATH``, run with no arguments and no shell in the
    new worktree, with ``env`` and ``GITSYNC_HASH``."""

    async def run(sha: str, path: Path) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                command,
                cwd=path,
                env={**env, "GITSYNC_HASH": sha},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise HookError(f"{name} {command!r} could not start: {exc.strerror}") from None
        try:
            out, _ = await run_with_deadline(proc, timeout)
        except TimeoutError:
            kill_group(proc)
            raise HookError(f"{name} {command!r} did not finish within {timeout:g}s") from None
        if proc.returncode != 0:
            tail = last_lines(out.decode("utf-8", "replace"))
            raise HookError(f"{name} {command!r} exited with status {proc.returncode}: {tail}")

    return run


class PrePublishError(HookError):
    """The pre-publish hook failed: the revision is not published; retry after ``retry_after``."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


class PrePublish:
    """git-sync's ``--pre-publish-exechook-command``: run in the new worktree, before the link
    is swapped to it, with ``GITSYNC_HASH`` set to the new revision.

    The link is swapped only if the command succeeds; otherwise the sync fails (the previous
    revision stays published) and the next attempt comes ``backoff`` seconds later. It runs
    whenever the link is about to change, so also after a restart that finds a built but
    unpublished worktree, and not on polls that find the revision already published.
    """

    name = "pre-publish-exechook"

    def __init__(
        self,
        command: str,
        timeout: float,
        backoff: float,
        env: Mapping[str, str],
        metrics: SyncMetrics,
    ) -> None:
        self.hook = exechook(command, timeout, env, name=self.name)
        self.backoff = backoff
        self.metrics = metrics

    async def __call__(self, sha: str, path: Path) -> None:
        try:
            await self.hook(sha, path)
        except HookError as exc:
            self.metrics.hook_done(self.name, ok=False)
            raise PrePublishError(
                f"{exc}; {sha[:12]} is not published, retrying in {self.backoff:g}s",
                self.backoff,
            ) from None
        self.metrics.hook_done(self.name, ok=True)
        log.info("%s for %s succeeded.", self.name, sha[:12])


def webhook(
    session: aiohttp.ClientSession,
    url: str,
    *,
    method: str,
    timeout: float,
    success_status: int,
    redact: Redactor,
) -> Hook:
    """Calls ``url`` with the header ``Gitsync-Hash``; a status of 0 (or git-sync v3's -1)
    accepts any answer, though the call itself must still get one."""

    async def run(sha: str, path: Path) -> None:
        try:
            async with session.request(
                method,
                url,
                headers={"Gitsync-Hash": sha},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                status = resp.status
        except TimeoutError:
            raise HookError(f"webhook {redact(url)} did not answer within {timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise HookError(f"webhook {redact(url)} failed: {redact(str(exc))}") from None
        if success_status > 0 and status != success_status:
            raise HookError(f"webhook {redact(url)} answered {status}, expected {success_status}")

    return run
