"""Prometheus metrics of ``sidekick sync``: its own ``sidekick_sync_*`` and git-sync v4's.

git-sync's families keep its names, labels, types and counting rules, so dashboards and
alerts written for it work unchanged: ``git_sync_count_total{status=success|noop|error}``
(a sync that changed the link, or the first successful sync of the process, is a success),
``git_sync_duration_seconds{status}`` (a summary), ``git_fetch_count_total`` (one per sync
that updated the link or was the first success, and per failed sync that had fetched; going
back to a revision whose worktree is still on disk counts one though no fetch is needed),
``git_sync_askpass_calls{status}``, ``git_sync_refresh_github_app_token_count{status}`` and
``git_sync_hook_run_count_total{name,status}``. The two git-sync counters whose names lack
``_total`` are exposed as untyped, because the Python client would append ``_total`` to a
counter's name; the samples, which is what queries see, have git-sync's exact names.

Labels carry only fixed words and commit hashes, never URLs or error text, so no secret can
reach a scrape. It leaves out per-git-command timings: the sync duration covers them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class PlainCounter(Collector):
    """A counter exposed under exactly ``name`` (no ``_total`` added), with labels."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, *labelvalues: str) -> None:
        self.values[labelvalues] = self.values.get(labelvalues, 0.0) + 1

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "unknown")
        for labelvalues, value in sorted(self.values.items()):
            metric.add_sample(
                self.name, dict(zip(self.labelnames, labelvalues, strict=True)), value
            )
        yield metric


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

        # git-sync v4's families, same names, labels and types.
        self.gs_duration = Summary(
            "git_sync_duration_seconds", "Summary of git_sync durations", ["status"], registry=r
        )
        self.gs_count = Counter(
            "git_sync_count_total",
            "How many git syncs completed, partitioned by state (success, error, noop)",
            ["status"],
            registry=r,
        )
        self.gs_fetches = Counter(
            "git_fetch_count_total", "How many git fetches were run", registry=r
        )
        self.gs_askpass = PlainCounter(
            "git_sync_askpass_calls",
            "How many git askpass calls completed, partitioned by state (success, error)",
            ("status",),
            r,
        )
        self.gs_app_token = PlainCounter(
            "git_sync_refresh_github_app_token_count",
            "How many times the GitHub app token was refreshed, partitioned by state (success, error)",
            ("status",),
            r,
        )
        self.gs_hooks = Counter(
            "git_sync_hook_run_count_total",
            "How many hook runs completed, partitioned by name and state (success, error)",
            ["name", "status"],
            registry=r,
        )
        self._succeeded_once = False
        self._fetches_seen = 0.0

    def sync_done(self, outcome: str, seconds: float) -> None:
        """Count one sync attempt (``published``, ``unchanged`` or ``error``) in both families."""
        self.syncs.labels(outcome).inc()
        self.duration.labels(outcome).observe(seconds)
        fetches = self.registry.get_sample_value("sidekick_sync_fetches_total") or 0.0
        fetched = fetches > self._fetches_seen
        self._fetches_seen = fetches
        if outcome == "error":
            status = "error"
        elif outcome == "published" or not self._succeeded_once:
            status = "success"
        else:
            status = "noop"
        # git-sync fetches on every sync but counts only those that go on to update (or are
        # the first success); a failed sync counts if it got as far as fetching.
        if fetched or status == "success":
            self.gs_fetches.inc()
        if outcome != "error":
            self._succeeded_once = True
        self.gs_count.labels(status).inc()
        self.gs_duration.labels(status).observe(seconds)

    def hook_done(self, name: str, ok: bool) -> None:
        """Count one hook run; ``name`` is git-sync's (exechook, webhook, pre-publish-exechook)."""
        outcome = "success" if ok else "error"
        self.hooks.labels(name, outcome).inc()
        self.gs_hooks.labels(name, outcome).inc()

    def set_revision(self, sha: str) -> None:
        if self._revision == sha:
            return
        if self._revision is not None:
            self.revision.remove(self._revision)
        self.revision.labels(sha).set(1)
        self._revision = sha
