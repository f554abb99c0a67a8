"""Prometheus metrics of ``sidekick sync`` (all named ``sidekick_sync_*``).

Labels carry only fixed words and commit hashes, never URLs or error text, so no secret can
reach a scrape. It leaves out per-git-command timings: the sync duration covers them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.syncs = Counter(
            "sidekick_sync_syncs",
            "Sync attempts by outcome: published (a new revision), unchanged, error.",
            ["outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "sidekick_sync_duration_seconds",
            "Time one sync attempt took, by outcome.",
            ["outcome"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.fetches = Counter("sidekick_sync_fetches", "git fetch calls made.", registry=r)
        self.last_success = Gauge(
            "sidekick_sync_last_success_timestamp_seconds",
            "Unix time of the last successful sync (published or unchanged).",
            registry=r,
        )
        self.revision = Gauge(
            "sidekick_sync_revision_info",
            "The published revision, as the label 'revision' (value always 1).",
            ["revision"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "sidekick_sync_consecutive_failures",
            "Failed syncs since the last successful one.",
            registry=r,
        )
        self.retry_delay = Gauge(
            "sidekick_sync_retry_delay_seconds",
            "Delay before the next attempt after a failure (0 when the last sync succeeded).",
            registry=r,
        )
        self.recoveries = Counter(
            "sidekick_sync_recoveries",
            "Repairs made to the local state, by kind: lock, worktree, link, repository.",
            ["kind"],
            registry=r,
        )
        self.worktrees = Gauge(
            "sidekick_sync_worktrees", "Worktrees on disk under --root.", registry=r
        )
        self.hooks = Counter(
            "sidekick_sync_hook_runs",
            "Post-publish hook runs by hook (exechook, webhook) and outcome (success, error).",
            ["hook", "outcome"],
            registry=r,
        )
        self.triggers = Counter(
            "sidekick_sync_triggers",
            "Sync requests by source: period, http, signal.",
            ["source"],
            registry=r,
        )
        for outcome in ("published", "unchanged", "error"):
            self.syncs.labels(outcome)
        self._revision: str | None = None

    def set_revision(self, sha: str) -> None:
        if self._revision == sha:
            return
        if self._revision is not None:
            self.revision.remove(self._revision)
        self.revision.labels(sha).set(1)
        self._revision = sha
