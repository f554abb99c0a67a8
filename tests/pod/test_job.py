"""``kind: Job`` under the real ``sidekick up``: the Job controller's counting, deadline and
conditions, the refusals, and how sidecars end with the Job's Pod."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SIDEKICK
from tests.pod.conftest import Up, read_times


def job_status(up: Up, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((up.run_dir / name / "status.json").read_text())
    return data


def conditions(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["type"], c["reason"]) for c in status["job"]["conditions"]]


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_job_completes_and_up_exits_0_with_the_complete_condition(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        """
        apiVersion: batch/v1
        kind: Job
        metadata: {name: report}
        spec:
          template:
            spec:
              restartPolicy: Never
              containers:
                - name: main
                  image: busybox
                  command: [sh, -c, 'echo "job $JOB done"']
                  env:
                    - name: JOB
                      valueFrom: {fieldRef: {fieldPath: "metadata.labels['job-name']"}}
        """
    )
    assert up.wait_exit() == 0, up.err
    assert "report/main | job report done" in up.out
    status = job_status(up, "report")
    assert status["phase"] == "Succeeded"
    assert status["ended"] is True
    assert conditions(status) == [
        ("SuccessCriteriaMet", "CompletionsReached"),
        ("Complete", "CompletionsReached"),
    ]
    assert (status["job"]["succeeded"], status["job"]["failed"]) == (1, 0)
    assert "completionTime" in status["job"] and "startTime" in status["job"]
    assert "Job report complete (CompletionsReached): succeeded 1, failed 0." in up.err


def test_never_policy_replaces_failed_pods_until_more_than_backoff_limit_failed(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    up = start_up(
        f"""
        apiVersion: batch/v1
        kind: Job
        metadata: {{name: flaky}}
        spec:
          backoffLimit: 2
          template:
            spec:
              restartPolicy: Never
              volumes: [{{name: count, hostPath: {{path: {tmp_path}}}}}]
              containers:
                - name: main
                  command: [sh, -c, "echo run >> /count/runs; echo attempt failing; exit 3"]
                  volumeMounts: [{{name: count, mountPath: /count}}]
        """
    )
    assert up.wait_exit(30) == 1, up.err
    # backoffLimit 2: the Job fails at the third failed Pod, and no fourth is started.
    assert runs(counter) == 3
    status = job_status(up, "flaky")
    assert conditions(status) == [
        ("FailureTarget", "BackoffLimitExceeded"),
        ("Failed", "BackoffLimitExceeded"),
    ]
    assert status["job"]["conditions"][-1]["message"] == (
        "Job has reached the specified backoff limit"
    )
    assert (status["job"]["succeeded"], status["job"]["failed"]) == (0, 3)
    assert "Job flaky Failed (BackoffLimitExceeded)" in up.err
    # Each Pod is new (restartCount 0); the log file continues across them.
    assert status["containerStatuses"][0]["restartCount"] == 0
    logs = subprocess.run(
        [*SIDEKICK, "logs", "flaky", "--run-dir", str(up.run_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert logs.stdout.count("attempt failing") == 3


def test_a_later_pod_succeeds_with_fresh_volumes(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    up = start_up(
        f"""
        apiVersion: batch/v1
        kind: Job
        metadata: {{name: retry}}
        spec:
          backoffLimit: 4
          template:
            spec:
              restartPolicy: Never
              volumes:
                - {{name: count, hostPath: {{path: {tmp_path}}}}}
                - {{name: scratch, emptyDir: {{}}}}
              containers:
                - name: main
                  command:
                    - sh
                    - -c
                    - |
                      if [ -e /scratch/left-over ]; then echo "emptyDir not fresh"; exit 9; fi
                      touch /scratch/left-over
                      echo run >> /count/runs
                      [ "$(wc -l < /count/runs)" -ge 3 ]
                  volumeMounts:
                    - {{name: count, mountPath: /count}}
                    - {{name: scratch, mountPath: /scratch}}
        """
    )
    assert up.wait_exit(30) == 0, up.err
    assert runs(counter) == 3
    assert "emptyDir not fresh" not in up.out
    status = job_status(up, "retry")
    assert (status["job"]["succeeded"], status["job"]["failed"]) == (1, 2)
    assert conditions(status)[-1] == ("Complete", "CompletionsReached")


def test_on_failure_container_restarts_count_toward_backoff_limit(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    up = start_up(
        f"""
        apiVersion: batch/v1
        kind: Job
        metadata: {{name: crash}}
        spec:
          backoffLimit: 2
          template:
            spec:
              restartPolicy: OnFailure
              volumes: [{{name: count, hostPath: {{path: {tmp_path}}}}}]
              containers:
                - name: main
                  command: [sh, -c, "echo run >> /count/runs; exit 1"]
                  volumeMounts: [{{name: count, mountPath: /count}}]
        """
    )
    assert up.wait_exit(30) == 1, up.err
    status = job_status(up, "crash")
    # One Pod whose container was restarted in place: the restarts are the failures.
    assert status["containerStatuses"][0]["restartCount"] == 2
    assert status["job"]["failed"] == 0
    assert conditions(status)[-1] == ("Failed", "BackoffLimitExceeded")
    assert status["phase"] == "Failed"
    # The third run was being started when the limit was reached; there is no fourth.
    assert 2 <= runs(counter) <= 3


def test_active_deadline_stops_the_pod_gracefully_and_fails_the_job(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        """
        apiVersion: batch/v1
        kind: Job
        metadata: {name: slow}
        spec:
          activeDeadlineSeconds: 2
          template:
            spec:
              restartPolicy: Never
              terminationGracePeriodSeconds: 10
              containers:
                - name: main
                  command: [sh, -c, "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.1; done"]
        """
    )
    assert up.wait_exit(30) == 1, up.err
    elapsed = time.monotonic() - up.started
    assert elapsed >= 2.0
    assert "slow/main | got TERM" in up.out
    status = job_status(up, "slow")
    assert conditions(status) == [
        ("FailureTarget", "DeadlineExceeded"),
        ("Failed", "DeadlineExceeded"),
    ]
    assert status["job"]["conditions"][-1]["message"] == (
        "Job was active longer than specified deadline"
    )
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")
    assert "Job slow Failed (DeadlineExceeded)" in up.err


def test_status_shows_the_running_job(start_up: Callable[..., Up]) -> None:
    up = start_up(
        """
        apiVersion: batch/v1
        kind: Job
        metadata: {name: long}
        spec:
          template:
            spec:
              restartPolicy: Never
              terminationGracePeriodSeconds: 2
              containers:
                - name: main
                  command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
        """
    )
    up.wait_for(lambda: up.container("main")["state"] == "Running", what="main running")
    pod = up.status()["pods"][0]
    assert pod["job"]["active"] == 1
    assert pod["job"]["conditions"] == []
    assert pod["name"] == "long"
    # Stopped from outside, the Job is still active, as when up ends: exit 0, no condition.
    assert up.stop(signal.SIGTERM) == 0
    assert job_status(up, "long")["job"]["conditions"] == []


def test_sidecar_stops_after_main_completes_and_its_exit_code_does_not_fail_the_job(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        """
        apiVersion: batch/v1
        kind: Job
        metadata: {name: withside}
        spec:
          template:
            spec:
              restartPolicy: Never
              terminationGracePeriodSeconds: 2
              initContainers:
                - name: side
                  restartPolicy: Always
                  command: [sleep, "1000"]
              containers:
                - name: main
                  command: [sh, -c, "sleep 0.3; echo main done"]
        """
    )
    assert up.wait_exit(30) == 0, up.err
    status = job_status(up, "withside")
    side = status["initContainerStatuses"][0]
    # `sleep` is PID 1 of its container without a handler: SIGTERM is ignored, as in a
    # cluster, and SIGKILL ends it after the grace period.
    assert (side["state"], side["exitCode"]) == ("Terminated", 137)
    assert status["phase"] == "Succeeded"
    assert conditions(status)[-1] == ("Complete", "CompletionsReached")


def test_a_log_shipping_sidecar_prints_the_jobs_line_then_is_killed_after_the_grace_period(
    start_up: Callable[..., Up],
) -> None:
    # The shape of the documentation's Job with a sidecar: the main container writes a line to
    # a shared file and exits; the sidecar's `tail` (exec'ed by sh) is PID 1 of its container
    # without a SIGTERM handler, so, as in a cluster, it keeps printing until SIGKILL ends it
    # at the end of the grace period, and the Job still completes.
    up = start_up(
        """
        apiVersion: batch/v1
        kind: Job
        metadata: {name: shipjob}
        spec:
          template:
            spec:
              restartPolicy: Never
              terminationGracePeriodSeconds: 3
              volumes:
                - name: logs
                  emptyDir: {}
              initContainers:
                - name: shipper
                  image: busybox:1.36
                  restartPolicy: Always
                  command: ["sh", "-c", "tail -F /var/log/job.log"]
                  volumeMounts:
                    - name: logs
                      mountPath: /var/log
              containers:
                - name: worker
                  image: busybox:1.36
                  command: ["sh", "-c", "echo 'job step finished' >> /var/log/job.log"]
                  volumeMounts:
                    - name: logs
                      mountPath: /var/log
        """
    )
    assert up.wait_exit(60) == 0, up.err
    assert "shipjob/shipper | job step finished" in up.out
    assert "did not stop within the grace period of 3s; sending SIGKILL" in up.err
    status = job_status(up, "shipjob")
    shipper = status["initContainerStatuses"][0]
    assert (shipper["state"], shipper["exitCode"]) == ("Terminated", 137)
    assert status["containerStatuses"][0]["exitCode"] == 0
    assert status["phase"] == "Succeeded"
    assert conditions(status)[-1] == ("Complete", "CompletionsReached")


def test_sidecar_prestop_runs_at_once_and_its_signal_waits_for_the_main_container(
    start_up: Callable[..., Up],
) -> None:
    def ev(name: str) -> str:
        return f"echo {name} $$(date +%s.%N) >> /ts/events"

    up = start_up(
        f"""
        apiVersion: batch/v1
        kind: Job
        metadata: {{name: order}}
        spec:
          template:
            spec:
              restartPolicy: Never
              terminationGracePeriodSeconds: 10
              volumes: [{{name: ts, emptyDir: {{}}}}]
              initContainers:
                - name: side
                  restartPolicy: Always
                  command: [sh, -c, "trap '{ev("side-term")}; exit 0' TERM; while true; do sleep 0.05; done"]
                  lifecycle:
                    preStop: {{exec: {{command: [sh, -c, "{ev("side-prestop")}"]}}}}
                  volumeMounts: [{{name: ts, mountPath: /ts}}]
              containers:
                - name: main
                  command:
                    - sh
                    - -c
                    - "trap '{ev("main-term")}; sleep 1.5; {ev("main-exit")}; exit 0' TERM; touch /ts/up; while true; do sleep 0.05; done"
                  volumeMounts: [{{name: ts, mountPath: /ts}}]
        """
    )
    up.wait_for(lambda: (up.run_dir / "order/volumes/ts/up").exists(), what="main running")
    assert up.stop(signal.SIGTERM, timeout=30) == 0, up.err
    t = read_times(up.run_dir / "order/volumes/ts/events")
    # The kubelet starts every container's stop together: the sidecar's preStop does not
    # wait for the main container, but its SIGTERM does.
    assert t["side-prestop"] < t["main-exit"]
    assert t["side-term"] >= t["main-exit"]


JOB = """
apiVersion: batch/v1
kind: Job
metadata: {{name: j}}
spec:
  {field}
  template:
    spec:
      restartPolicy: {policy}
      containers: [{{name: main, command: ["true"]}}]
"""


def up_error(tmp_path: Path, manifest: str) -> str:
    (tmp_path / "job.yaml").write_text(manifest)
    result = subprocess.run(
        [*SIDEKICK, "up", "job.yaml", "--run-dir", "run"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sidekick: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("field", "policy", "expected"),
    [
        ("parallelism: 3", "Never", "spec.parallelism: 3 needs several Pods"),
        ("completions: 5", "Never", "set completions: 1 or remove it"),
        ("parallelism: 0", "Never", "spec.parallelism: 0 starts no Pod"),
        (
            "completionMode: Indexed",
            "Never",
            "spec.completionMode: 'Indexed' is not supported by sidekick up",
        ),
        (
            "podFailurePolicy: {rules: [{action: FailJob, onExitCodes: {operator: In, values: [42]}}]}",
            "Never",
            "spec.podFailurePolicy is not supported by sidekick up; remove it",
        ),
        ("suspend: true", "Never", "spec.suspend: true starts no Pod"),
        (
            "backoffLimit: 1",
            "Always",
            "spec.template.spec.restartPolicy: 'Always' is not allowed in a Job; set it to "
            "Never or OnFailure",
        ),
    ],
)
def test_unsupported_job_fields_are_refused_in_one_sentence(
    tmp_path: Path, field: str, policy: str, expected: str
) -> None:
    line = up_error(tmp_path, JOB.format(field=field, policy=policy))
    assert "job.yaml: Job 'j': " in line
    assert expected in line


def test_cronjob_is_refused_with_how_to_run_its_job_once(tmp_path: Path) -> None:
    line = up_error(
        tmp_path,
        """
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: main, command: ["true"]}]
""",
    )
    assert "CronJob 'nightly': a CronJob runs on a schedule" in line
    assert "kind: Job, metadata: {name: nightly}" in line
    assert "whose spec is this CronJob's spec.jobTemplate.spec, and run that file" in line


def test_the_cronjob_hint_followed_runs_its_job(tmp_path: Path) -> None:
    job = """
apiVersion: batch/v1
kind: Job
metadata: {name: nightly}
spec:
  template:
    spec:
      restartPolicy: OnFailure
      containers: [{name: main, command: [echo, nightly ran]}]
"""
    (tmp_path / "job.yaml").write_text(job)
    result = subprocess.run(
        [*SIDEKICK, "up", "job.yaml", "--run-dir", "run", "--admin-addr", "off"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "nightly/main | nightly ran" in result.stdout


def test_fields_with_no_meaning_here_are_named_in_a_warning(start_up: Callable[..., Up]) -> None:
    up = start_up(
        """
        apiVersion: batch/v1
        kind: Job
        metadata: {name: tidy}
        spec:
          ttlSecondsAfterFinished: 100
          template:
            spec:
              restartPolicy: Never
              containers: [{name: main, command: ["true"]}]
        """
    )
    assert up.wait_exit() == 0, up.err
    assert (
        "Job 'tidy': spec.ttlSecondsAfterFinished is ignored: nothing is deleted after the Job "
        "ends here." in up.err
    )
