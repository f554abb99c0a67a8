"""The sync loop: resolve the ref, fetch, check out, publish, clean up, repair, retry.

One sync, in order: make sure ``--root`` holds a sound repository (re-initialise it, clear
stale locks); resolve ``--ref`` with ``git ls-remote`` (a full commit hash needs no lookup);
if the link already shows that commit in an intact worktree, stop (an idle poll costs one
``ls-remote`` and no other subprocess); otherwise fetch exactly that commit at ``--depth``,
build its worktree, swap the link, remove stale worktrees, and let git gc. Anything it finds
broken on the way (a missing link, a damaged worktree) is repaired, logged once and counted,
while the last good revision stays published.

Triggers (the period, ``POST /sync``, SIGHUP) only set an event, so any number of them
during a sync coalesce into one more sync. A sync asked for by ``POST /sync`` or SIGHUP starts
no sooner than ``trigger_min_interval`` after the previous sync a trigger started (periodic
polls do not count, so a webhook right after a poll is not held back), so a flood of requests
costs at most one triggered sync per interval: one sync runs, one is pending, the rest join it.

Failures follow git-sync: the next attempt comes after ``--period`` (or a back-off, when
``backoff_max`` is set), and the process exits with 1 once ``--max-failures`` syncs in a row
have failed. Left unset, that limit is git-sync's 0 until the first sync succeeds (a bad ref
fails the init container or restarts the Pod) and -1 afterwards (a later outage leaves the
last good revision served).

It leaves out HTTP and process wiring (``app``), the on-disk layout (``publish``), talking to
the remote repository: credentials, ``ls-remote`` and the fetch (``remote``), and the
``--touch-file`` and ``--error-file`` that report each outcome (``status_files``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from sidekick.core.backoff import Backoff
from sidekick.core.errors import SidekickError, TemporaryError
from sidekick.core.runtime import Shutdown
from sidekick.sync.config import SyncConfig
from sidekick.sync.git import Git, Redactor, remaining
from sidekick.sync.hooks import HookRunner
from sidekick.sync.metrics import SyncMetrics
from sidekick.sync.publish import SHA, Tree, parse_patterns
from sidekick.sync.remote import Remote
from sidekick.sync.status_files import StatusFiles, owned_names

log = logging.getLogger("sidekick.sync")

Outcome = Literal["published", "unchanged"]


def default_link(repo: str) -> str:
    """git-sync's default link name: the last ``/``-separated part of the repository URL,
    as it is (``site.git`` stays ``site.git``), so a consumer written for git-sync finds it."""
    return repo.strip("/").rsplit("/", 1)[-1] or "repo"


class Syncer:
    """Keeps ``cfg.ref`` of ``cfg.repo`` published under ``cfg.root``."""

    def __init__(
        self,
        cfg: SyncConfig,
        *,
        git: Git,
        metrics: SyncMetrics | None = None,
        hooks: list[HookRunner] | None = None,
        refresh_credentials: Callable[[float], Awaitable[None]] | None = None,
        pre_publish: Callable[[str, Path], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.git = git
        self.redact: Redactor = git.redact
        self.metrics = metrics or SyncMetrics()
        self.hooks = hooks if hooks is not None else []
        # Called at the start of every sync with its deadline (a GitHub App token); its
        # failure fails the sync.
        self.refresh_credentials = refresh_credentials
        # Called with the new revision and its worktree before the link is swapped to it
        # (--pre-publish-exechook-command); its failure fails the sync, nothing is published.
        self.pre_publish = pre_publish
        root = Path(cfg.root).absolute()
        link_name = cfg.link or default_link(cfg.repo)
        link = Path(link_name) if os.path.isabs(link_name) else root / link_name
        self.tree = Tree(root, link, git, owned=owned_names(cfg))
        self.remote = Remote(cfg, git=git, tree=self.tree, metrics=self.metrics)
        # Trees the first sync found checked out for other settings or edited.
        self._outdated: set[Path] = set()
        self.status_files = StatusFiles(cfg, self.tree.root)
        self.published: tuple[str, Path] | None = None
        self.consecutive_failures = 0
        self.backoff = Backoff(initial=cfg.backoff_initial, maximum=cfg.backoff_max)
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        # Whether a sync of this process has succeeded: until then the failure limit and the
        # period are the init ones, and the touch file is touched even on an idle poll.
        self.succeeded_once = False
        self._gc_pending = False
        self.repo_shown = self.redact(cfg.repo)

    # ---- readiness --------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Ready once a revision is published; stays ready while later syncs fail."""
        if self.published is None:
            return False, "no revision published yet" + (
                f" (last error: {self.last_error})" if self.last_error else ""
            )
        return True, f"serving {self.published[0]}"

    # ---- triggers and the loop ----------------------------------------------------------

    def trigger(self, source: str) -> None:
        """Ask for a sync as soon as possible; requests made during a sync coalesce."""
        self.metrics.triggers.labels(source).inc()
        self._wake.set()

    def failure_limit(self) -> int:
        """Failed syncs in a row that end the process (-1: never), as ``--max-failures``."""
        if not self.succeeded_once and self.cfg.init_max_failures is not None:
            return self.cfg.init_max_failures
        if self.cfg.max_failures is not None:
            return self.cfg.max_failures
        return -1 if self.succeeded_once else 0

    def _period(self) -> float:
        """The wait before the next sync: ``--init-period`` until a sync has succeeded."""
        if not self.succeeded_once and self.cfg.init_period:
            return self.cfg.init_period
        return self.cfg.period

    def _giving_up(self) -> bool:
        limit = self.failure_limit()
        return limit >= 0 and self.consecutive_failures >= limit

    async def run(self, shutdown: Shutdown) -> int:
        """Sync until shutdown; return an exit code for ``--one-time`` and ``--max-failures``.

        As git-sync: ``--one-time`` exits 0 after the first successful sync; a failure, with
        or without ``--one-time``, is retried after the period until ``--max-failures`` syncs
        in a row have failed, and then the exit code is 1.
        """
        loop = asyncio.get_running_loop()
        # Start of the last sync a trigger started: only those count for the minimum interval,
        # so a webhook right after a periodic poll is not held back.
        last_triggered = -math.inf
        triggered = False
        pinned = False
        delay: float | None
        while not shutdown.is_requested:
            self._wake.clear()
            if triggered:
                last_triggered = loop.time()
            try:
                await self.sync_once()
            except Exception as exc:
                if self._giving_up():
                    log.error(
                        "Giving up after %d failed sync(s) in a row (limit %d%s).",
                        self.consecutive_failures,
                        self.failure_limit(),
                        "" if self.succeeded_once else " until the first successful sync",
                    )
                    return 1
                delay = self.backoff.next_delay() if self.cfg.backoff_max > 0 else self._period()
                # A failed pre-publish hook is retried after its own back-off, as in git-sync.
                delay = getattr(exc, "retry_after", None) or delay
                self.metrics.retry_delay.set(delay)
                log.info("Retrying in %.1fs.", delay)
            else:
                if self.cfg.one_time:
                    return 0
                delay = self.cfg.period
                if SHA.match(self.cfg.ref):
                    # git-sync stops syncing once a commit hash is published ("ref appears
                    # to be a git hash, no further sync needed"): it cannot change. POST
                    # /sync and the signals still sync (and repair) on request.
                    if not pinned:
                        log.info(
                            "--ref is a commit hash; no further periodic syncs (POST /sync "
                            "or SIGHUP still syncs)."
                        )
                        pinned = True
                    delay = None
            triggered = False
            if not await self._sleep(delay, shutdown):
                self.metrics.triggers.labels("period").inc()
            elif not shutdown.is_requested:
                # Woken by a trigger: it waits until the interval since the last triggered sync
                # has passed, and triggers meanwhile join it.
                triggered = True
                hold = last_triggered + self.cfg.trigger_min_interval - loop.time()
                if hold > 0:
                    await self._sleep_until_shutdown(hold, shutdown)
        return 0

    async def _sleep_until_shutdown(self, delay: float, shutdown: Shutdown) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shutdown.requested.wait(), delay)

    async def _sleep(self, delay: float | None, shutdown: Shutdown) -> bool:
        """Wait ``delay`` seconds (None: until woken); True if woken by a trigger or shutdown."""
        wake = asyncio.ensure_future(self._wake.wait())
        stop = asyncio.ensure_future(shutdown.requested.wait())
        try:
            done, _ = await asyncio.wait({wake, stop}, timeout=delay, return_when="FIRST_COMPLETED")
        finally:
            wake.cancel()
            stop.cancel()
        return bool(done)

    # ---- one sync -----------------------------------------------------------------------

    async def sync_once(self) -> Outcome:
        """Run one sync now (waiting for one in progress); raise on failure."""
        async with self._lock:
            started = time.monotonic()
            deadline = started + self.cfg.sync_timeout
            try:
                async with asyncio.timeout(self.cfg.sync_timeout + 5):
                    outcome = await self._sync(deadline)
            except Exception as exc:
                self._failed(exc, time.monotonic() - started)
                raise
            seconds = time.monotonic() - started
            self.metrics.sync_done(outcome, seconds)
            self.metrics.last_success.set(time.time())
            self.metrics.consecutive_failures.set(0)
            self.metrics.retry_delay.set(0)
            self.metrics.worktrees.set(self.tree.worktree_count())
            if self.consecutive_failures:
                log.info("Sync succeeded again after %d failure(s).", self.consecutive_failures)
            self.consecutive_failures = 0
            self.last_error = None
            self.backoff.reset()
            self.status_files.succeeded(touch=outcome == "published" or not self.succeeded_once)
            self.succeeded_once = True
            return outcome

    def _failed(self, exc: BaseException, seconds: float) -> None:
        self.consecutive_failures += 1
        self.metrics.sync_done("error", seconds)
        self.metrics.consecutive_failures.set(self.consecutive_failures)
        if isinstance(exc, TimeoutError):
            message = (
                f"sync of {self.repo_shown} did not finish within "
                f"{self.cfg.sync_timeout:g}s; raise --sync-timeout or check the network"
            )
        else:
            message = self.redact(str(exc))
        self.last_error = message
        self.status_files.failed(
            message,
            giving_up=self._giving_up(),
            fail_count=self.consecutive_failures,
            max_failures=self.failure_limit(),
        )
        serving = f"; still serving {self.published[0][:12]}" if self.published else ""
        if isinstance(exc, SidekickError | OSError | TimeoutError):
            log.error("Sync failed: %s%s.", message.rstrip("."), serving)
        else:
            log.error("Sync failed unexpectedly: %s%s.", message, serving, exc_info=exc)

    def _recovered(self, kind: str, message: str, *args: object) -> None:
        self.metrics.recoveries.labels(kind).inc()
        log.warning(message, *args)

    async def _sync(self, deadline: float) -> Outcome:
        look = self.consecutive_failures > 0 or not self.succeeded_once
        for kind in await self.tree.ensure_repo(self.cfg.repo, deadline, look_for_partial=look):
            self.metrics.recoveries.labels(kind).inc()
        if self.refresh_credentials is not None:
            await self.refresh_credentials(deadline)
        env = await self.remote.env(deadline)
        sha = await self.remote.resolve(deadline, env)
        cur = self.tree.current()
        # A link to a tree outside .worktrees (git-sync v3's <root>/<sha>) is a change, as
        # in git-sync v4: the revision moves into .worktrees and the old tree goes.
        if (
            cur is not None
            and cur[0] == sha
            and self.tree.in_layout(cur[1])
            and await self._reusable(cur[1], sha, deadline)
        ):
            if not self.remote.fetched_once:
                # A restart: fetch once anyway, so a new --depth applies now, not with the
                # next commit (git-sync fetches on its first sync too).
                await self.remote.fetch(sha, deadline, env)
            if self.published is None or self.published != cur:
                # First sync of this process over a tree already published (a restart).
                self._set_published(sha, cur[1])
            await self._cleanup(cur[1], deadline, gc_now=True)
            return "unchanged"

        if self.published is not None:
            psha, ppath = self.published
            if cur is None:
                self._recovered("link", "Link %s is missing; recreating it.", self.tree.link)
            if not self.tree.is_complete(ppath, psha):
                self._recovered(
                    "worktree", "Worktree %s is missing or damaged; rebuilding it.", ppath
                )
        candidate = (
            self.published[1]
            if self.published is not None and self.published[0] == sha
            else self.tree.worktrees / sha
        )
        if await self._reusable(candidate, sha, deadline):
            path = candidate
        else:
            # Always fetch: asking git first whether it has the commit costs a process on
            # every publish to save one only when going back to an old revision.
            await self.remote.fetch(sha, deadline, env)
            path = await self._build(sha, deadline, env)
        # A whole tree of this revision checked out again for today's settings (sparse
        # patterns, submodules, edited files): git-sync configures its tree in place then,
        # the link does not change and its pre-publish hook does not run. A damaged tree is
        # a change for it, and the hook runs.
        reconfigured = (
            cur is not None
            and cur[0] == sha
            and self.tree.in_layout(cur[1])
            and self.tree.is_complete(cur[1], sha)
        )
        if self.pre_publish is not None and not reconfigured:
            await self.pre_publish(sha, path)
        self.tree.swap(path)
        if cur is not None and cur[1] != path:
            # --stale-worktree-timeout counts from now, when it stops being the current one.
            self.tree.mark_stale(cur[1])
            if not self.tree.in_layout(cur[1]):
                await self.tree.remove_old_layout(cur[1], deadline)
        if path.name != sha:
            path = await self._rebuild_under_its_hash(sha, path, deadline, env)
        log.info("Published %s (%s of %s).", sha[:12], self.cfg.ref, self.repo_shown)
        self._set_published(sha, path)
        await self._cleanup(path, deadline, gc_now=self.cfg.one_time)
        return "published"

    async def _rebuild_under_its_hash(
        self, sha: str, repair: Path, deadline: float, env: dict[str, str]
    ) -> Path:
        """git-sync's contract: the leaf of the link's target is the hash. A repair built
        beside a damaged tree the link pointed at (``<sha>-1``) is published first, so
        readers always have a whole tree; the damaged tree, no longer the link's, then makes
        room for the revision built again under its own name, and the link moves there."""
        path = await self._build(sha, deadline, env)
        self.tree.swap(path)
        self.tree.mark_stale(repair)
        return path

    async def _build(self, sha: str, deadline: float, env: dict[str, str]) -> Path:
        return await self.tree.build(
            sha,
            deadline=deadline,
            submodules=self.cfg.submodules,
            depth=self.cfg.depth,
            sparse_patterns=self._sparse_patterns(),
            env=env,
        )

    async def _reusable(self, path: Path, sha: str, deadline: float) -> bool:
        """Whether the tree at ``path`` can stand for ``sha``: complete, and on the first
        sync of a process also checked out with today's sparse patterns, with the
        submodules today's --submodules checks out and with its tracked files unchanged,
        as git-sync configures the current worktree again on its first sync (a restart
        with another --sparse-checkout-file, with submodules turned on, or after files of
        the tree were edited, builds the revision anew)."""
        if not self.tree.is_complete(path, sha):
            return False
        if self.remote.fetched_once:
            return True
        if path in self._outdated:  # already found so by this sync (current and candidate)
            return False
        if self.tree.sparse_patterns(path) != self._sparse_patterns() or (
            await self.tree.lacks_submodules(path, self.cfg.submodules, deadline)
        ):
            self._outdated.add(path)
            return False
        if await self.tree.is_modified(path, deadline):
            log.warning("Tracked files in %s were changed; checking it out again.", path)
            self._outdated.add(path)
            return False
        return True

    def _set_published(self, sha: str, path: Path) -> None:
        self.published = (sha, path)
        self.metrics.set_revision(sha)
        for hook in self.hooks:
            hook.notify(sha, path)

    async def _cleanup(self, current: Path, deadline: float, *, gc_now: bool) -> None:
        """git-sync's cleanup after every successful sync: remove what ``.worktrees`` holds
        besides the current worktree once stale for ``--stale-worktree-timeout`` (at once
        by default), and when something was removed, let git gc.

        After a publish, gc waits for the next poll that finds nothing new (with
        ``--one-time``, it runs at once): the old worktree's files are gone already, and a
        commit pushed right after another is published without waiting for a gc.
        """
        removed = await self.tree.remove_stale(current, self.cfg.stale_worktree_timeout, deadline)
        if removed:
            log.debug("Removed %d stale worktree(s).", removed)
            self._gc_pending = True
        if gc_now and self._gc_pending:
            await self._gc(deadline)
            self._gc_pending = False

    async def _gc(self, deadline: float) -> None:
        mode = self.cfg.git_gc
        if mode == "off":
            return
        args = ["gc"]
        if mode == "auto":
            args.append("--auto")
        elif mode == "aggressive":
            args.append("--aggressive")
        # Old revisions are unreachable once their worktree is gone; with depth 1 nothing
        # else refers to them, so prune them now rather than after git's two weeks. gc must
        # not detach: a background gc races the next fetch over .git/shallow, fails, and
        # its gc.log then stops every later "gc --auto" for a day.
        gc_log = self.tree.gitdir / "gc.log"
        if gc_log.exists():
            gc_log.unlink()
        await self.git.run(
            *args,
            cwd=self.tree.root,
            timeout=remaining(deadline),
            config=[("gc.pruneExpire", "now"), ("gc.autoDetach", "false")],
        )

    # ---- inputs read on every sync ------------------------------------------------------

    def _sparse_patterns(self) -> list[str] | None:
        path = self.cfg.sparse_checkout_file
        if path is None:
            return None
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TemporaryError(
                f"--sparse-checkout-file {path!r} cannot be read ({exc.strerror}); check the path"
            ) from None
        return parse_patterns(text)

    def aclose(self) -> None:
        self.remote.aclose()

    async def wait_idle(self) -> None:
        """Wait for a sync in progress to finish (used on shutdown)."""
        async with self._lock:
            pass


__all__ = ["Syncer", "default_link"]
