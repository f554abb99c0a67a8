"""A ``kind: Job`` run as the Job controller would run it, one Pod at a time.

A Job is its ``spec.template`` run as a Pod named after the Job, with the labels the Job
controller adds (``job-name``, ``batch.kubernetes.io/job-name``, ``controller-uid``, ...), until
one Pod succeeds (``completions: 1``). Failures count the controller's way:

* ``restartPolicy: Never``: each failed Pod is a failure; a new Pod (fresh emptyDirs, the log
  file continued) is started after the controller's back-off (10 s doubling, at most 10 min;
  ``--fast-backoff``: 0.1 s doubling to 2 s) until more than ``backoffLimit`` (default 6) Pods
  failed;
* ``restartPolicy: OnFailure``: the kubelet restarts containers in place, and the restarts of
  every container of the running Pod (sidecars included) count; once they reach
  ``backoffLimit`` (any restart when it is 0) the Pod is stopped and the Job fails.

``activeDeadlineSeconds`` counts from the Job's start, back-off included; when it passes the
running Pod is stopped gracefully and the Job fails with reason DeadlineExceeded.

The Job ends with the controller's conditions: SuccessCriteriaMet and Complete (reason
CompletionsReached), or FailureTarget and Failed (reason BackoffLimitExceeded or
DeadlineExceeded). They are in ``status.json`` and ``/status`` under ``job``, and logged.

What needs several Pods (``parallelism`` or ``completions`` above 1, Indexed completion,
``podFailurePolicy``, ``successPolicy``, per-index back-off) or no Pod at all (``suspend``) is
refused; a CronJob is refused with how to run its job once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidekick.core.backoff import Backoff
from sidekick.core.durations import format_duration
from sidekick.pod.container import BackoffPolicy
from sidekick.pod.hygiene import Tracker
from sidekick.pod.manifest import Manifests, Pod
from sidekick.pod.output import Printer
from sidekick.pod.runner import PodRunner

log = logging.getLogger("sidekick.up")

DEFAULT_BACKOFF_LIMIT = 6
# The Job controller's back-off before a failed Pod is replaced.
POD_FAILURE_BACKOFF = (10.0, 600.0)
FAST_POD_FAILURE_BACKOFF = (0.1, 2.0)

# Fields that need more than one Pod, or none, with the fix for each.
_REFUSED = {
    "podFailurePolicy": "remove it; every failed Pod counts toward backoffLimit here",
    "successPolicy": "remove it; the Job succeeds when its one Pod succeeds",
    "backoffLimitPerIndex": "remove it and use backoffLimit",
    "maxFailedIndexes": "remove it and use backoffLimit",
}
_WARNED = {
    "ttlSecondsAfterFinished": "nothing is deleted after the Job ends here",
    "selector": "the Job's Pod is the template's, whatever the selector",
    "manualSelector": "the Job's Pod is the template's, whatever the selector",
    "managedBy": "sidekick up runs the Job itself",
}


@dataclass
class JobSpec:
    name: str
    uid: str
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    active_deadline: float | None = None  # seconds, from the Job's start


def cronjob_problem(origin: str, doc: dict[str, Any]) -> str:
    name = str((doc.get("metadata") or {}).get("name") or "NAME")
    return (
        f"{origin}: a CronJob runs on a schedule, which sidekick up does not do; to run its job "
        f"once, write a Job (apiVersion: batch/v1, kind: Job, metadata: {{name: {name}}}) whose "
        "spec is this CronJob's spec.jobTemplate.spec, and run that file"
    )


def job_pod(
    origin: str, doc: dict[str, Any], namespace: str, problems: list[str]
) -> tuple[dict[str, Any], JobSpec]:
    """The Pod document of a (schema-checked) Job, and its Job settings; problems appended."""
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    name = str(meta.get("name") or "")
    uid = str(meta.get("uid") or uuid.uuid4())

    def refuse(text: str) -> None:
        problems.append(f"{origin}: {text}")

    for key in ("parallelism", "completions"):
        value = spec.get(key)
        if value is not None and value != 1:
            what = "starts no Pod" if value == 0 else "needs several Pods"
            refuse(
                f"spec.{key}: {value} {what}; sidekick up runs a Job as one Pod to one "
                f"completion, so set {key}: 1 or remove it"
            )
    mode = spec.get("completionMode")
    if mode not in (None, "NonIndexed"):
        refuse(
            f"spec.completionMode: {mode!r} is not supported by sidekick up (one Pod, no "
            "completion index); remove it or use NonIndexed"
        )
    for key, fix in _REFUSED.items():
        if spec.get(key) is not None:
            refuse(f"spec.{key} is not supported by sidekick up; {fix}")
    if spec.get("suspend"):
        refuse("spec.suspend: true starts no Pod; remove it or set it to false to run the Job")
    for key, why in _WARNED.items():
        if spec.get(key) is not None:
            log.warning("%s: spec.%s is ignored: %s.", origin, key, why)
    template = spec.get("template") or {}
    tspec = template.get("spec") or {}
    policy = tspec.get("restartPolicy")
    if policy not in ("Never", "OnFailure"):
        refuse(
            f"spec.template.spec.restartPolicy: {policy or 'Always (the default)'!r} is not "
            "allowed in a Job; set it to Never or OnFailure"
        )
    tmeta = dict(template.get("metadata") or {})
    labels = {str(k): str(v) for k, v in (tmeta.get("labels") or {}).items()}
    labels.update(
        {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
    )
    tmeta["labels"] = labels
    tmeta["name"] = name
    tmeta["namespace"] = namespace or "default"
    deadline = spec.get("activeDeadlineSeconds")
    job = JobSpec(
        name=name,
        uid=uid,
        backoff_limit=int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)),
        active_deadline=None if deadline is None else float(deadline),
    )
    return {"metadata": tmeta, "spec": tspec}, job


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class JobStatus:
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    start_time: float | None = None
    completion_time: float | None = None
    conditions: list[dict[str, str]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """Complete, Failed, or empty while the Job runs."""
        for c in self.conditions:
            if c["type"] in ("Complete", "Failed"):
                return c["type"]
        return ""

    def finish(self, kind: str, reason: str, message: str) -> None:
        now = time.time()
        interim = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        for t in (interim, kind):
            self.conditions.append(
                {
                    "type": t,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": _rfc3339(now),
                }
            )
        if kind == "Complete":
            self.completion_time = now

    def json(self, spec: JobSpec, attempt: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": spec.name,
            "active": self.active,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "backoffLimit": spec.backoff_limit,
            "attempt": attempt,
            "conditions": self.conditions,
        }
        if spec.active_deadline is not None:
            out["activeDeadlineSeconds"] = spec.active_deadline
        if self.start_time is not None:
            out["startTime"] = _rfc3339(self.start_time)
        if self.completion_time is not None:
            out["completionTime"] = _rfc3339(self.completion_time)
        return out


class _JobPod(PodRunner):
    """One Pod of the Job: its status carries the Job's, and it has ended when the Job has."""

    def __init__(self, job: JobRunner, pod: Pod) -> None:
        self.job = job
        super().__init__(
            pod, job.manifests, job.run_dir, job.tracker, job.printer, job.backoff, job.changed
        )

    def status_json(self) -> dict[str, Any]:
        out = super().status_json()
        out["ended"] = self.job.ended
        out["job"] = self.job.status.json(self.job.spec, self.job.attempts)
        return out


class JobRunner:
    """Runs a Job's Pods; looks like a PodRunner (the current Pod's) to the rest of ``up``."""

    def __init__(
        self,
        pod: Pod,
        manifests: Manifests,
        run_dir: Path,
        tracker: Tracker,
        printer: Printer,
        backoff: BackoffPolicy,
        on_change: Callable[[], None],
    ) -> None:
        assert pod.job is not None
        self.pod = pod
        self.spec: JobSpec = pod.job
        self.manifests = manifests
        self.run_dir = run_dir
        self.tracker = tracker
        self.printer = printer
        self.backoff = backoff
        self.on_change = on_change
        fast = backoff.initial < BackoffPolicy().initial
        initial, maximum = FAST_POD_FAILURE_BACKOFF if fast else POD_FAILURE_BACKOFF
        self._pod_backoff = Backoff(initial=initial, maximum=maximum, jitter=0)
        self.status = JobStatus()
        self.ended = False
        self.attempts = 0
        self._stopped = False
        self._wake = asyncio.Event()
        self.attempt = self._new_attempt()

    # --- what app.py sees ------------------------------------------------------------------

    @property
    def runners(self) -> dict[str, Any]:
        return self.attempt.runners

    @property
    def ready(self) -> bool:
        return self.attempt.ready

    def status_json(self) -> dict[str, Any]:
        return self.attempt.status_json()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self.attempt.stop()

    # --- the Job ---------------------------------------------------------------------------

    def _new_attempt(self) -> _JobPod:
        """A new Pod of the Job: fresh volumes, a new uid, the log files continued."""
        self.attempts += 1
        root = self.run_dir / self.pod.name
        kept = self.run_dir / f".{self.pod.name}.logs"
        if (root / "logs").is_dir():
            if kept.exists():
                for f in kept.iterdir():
                    f.unlink()
                kept.rmdir()
            (root / "logs").rename(kept)
        attempt = _JobPod(self, dataclasses.replace(self.pod, uid=str(uuid.uuid4())))
        if kept.is_dir():
            for f in kept.iterdir():
                f.rename(attempt.dirs.logs / f.name)
            kept.rmdir()
        return attempt

    def changed(self) -> None:
        if (
            self.pod.restart_policy == "OnFailure"
            and not self.status.outcome
            and self.attempt.phase in ("Pending", "Running")
        ):
            restarts = sum(r.status.restarts for r in self.attempt.runners.values())
            limit = self.spec.backoff_limit
            if (restarts > 0) if limit == 0 else (restarts >= limit):
                self._fail("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        self.on_change()

    def _fail(self, reason: str, message: str) -> None:
        if self.status.outcome:
            return
        self.status.finish("Failed", reason, message)
        self._wake.set()
        self.attempt.stop()

    async def _deadline(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._fail("DeadlineExceeded", "Job was active longer than specified deadline")

    async def run(self) -> int:
        """Run Pods until one succeeds or the Job fails; 0 when complete or stopped, else 1."""
        self.status.start_time = time.time()
        timer = (
            asyncio.create_task(
                self._deadline(self.spec.active_deadline), name=f"deadline job {self.spec.name}"
            )
            if self.spec.active_deadline is not None
            else None
        )
        try:
            while True:
                self.status.active = 1
                await self.attempt.run()
                self.status.active = 0
                if self.status.outcome == "Failed":
                    # The controller deleted this Pod; it ends Failed with the Job's reason.
                    self.attempt.phase = "Failed"
                    self.attempt.reason = self.status.conditions[-1]["reason"]
                    break
                if self._stopped:
                    return 0  # stopped from outside: the Job stays active, as when up ends
                if self.attempt.phase == "Succeeded":
                    self.status.succeeded += 1
                    self.status.finish(
                        "Complete",
                        "CompletionsReached",
                        "Job has reached the specified number of completions",
                    )
                    break
                self.status.failed += 1
                if self.status.failed > self.spec.backoff_limit:
                    self._fail(
                        "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                    )
                    break
                delay = self._pod_backoff.next_delay()
                log.info(
                    "Job %s: pod failed (failures %d, backoffLimit %d); starting a new pod in %s.",
                    self.spec.name,
                    self.status.failed,
                    self.spec.backoff_limit,
                    format_duration(delay),
                )
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                if self._stopped or self.status.outcome:
                    break
                self.attempt = self._new_attempt()
        finally:
            if timer is not None:
                timer.cancel()
            self.ended = True
            self.status.active = 0
            with contextlib.suppress(OSError):
                self.attempt.write_status()
            self.on_change()
        outcome = self.status.outcome
        if outcome == "Complete":
            log.info(
                "Job %s complete (CompletionsReached): succeeded %d, failed %d.",
                self.spec.name,
                self.status.succeeded,
                self.status.failed,
            )
        elif outcome == "Failed":
            cond = self.status.conditions[-1]
            log.error(
                "Job %s Failed (%s): %s; succeeded %d, failed %d.",
                self.spec.name,
                cond["reason"],
                cond["message"],
                self.status.succeeded,
                self.status.failed,
            )
        return 1 if outcome == "Failed" else 0
