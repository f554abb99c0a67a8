"""terminationMessagePath and terminationMessagePolicy, in status.json, /status and the log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.pod.conftest import Up
from tests.pod.examples import example, run_to_end

POD = "termination-demo"


def test_message_file_and_log_fallback_are_in_the_status(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("termination-message.yaml"))
    assert done.code == 1, done.err  # custom-path and fallback fail
    default = done.container(POD, "termination-demo-container")
    assert (default["reason"], default["message"]) == ("Completed", "Sleep expired\n")
    custom = done.container(POD, "custom-path")
    assert custom["exitCode"] == 3
    assert custom["message"] == "disk full\nsecond line"
    assert custom["lastState"]["message"] == "disk full\nsecond line"
    # The end of the log: its last 80 lines (20..99), within 2048 bytes.
    fallback = done.container(POD, "fallback")
    lines = fallback["message"].splitlines()
    assert lines == [f"line {i}" for i in range(20, 100)]
    # A container that succeeds gets no message from its log.
    assert "message" not in done.container(POD, "fallback-success")
    # The status line shows the message on one line.
    assert (
        "termination-demo/custom-path Terminated (Error, exit code 3): disk full second line"
        in (done.err)
    )
    # The container wrote the run dir's file, not this machine's /dev/termination-log.
    host = done.run_dir / POD / "state" / "termination-demo-container" / "termination-log"
    assert host.read_text() == "Sleep expired\n"


def test_message_is_cut_to_4096_bytes_and_the_log_tail_to_2048(tmp_path: Path) -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: big}
spec:
  restartPolicy: Never
  containers:
    - name: long-message
      image: busybox
      command: [sh, -c, 'head -c 10000 /dev/zero | tr "\\0" a > /dev/termination-log']
    - name: long-lines
      image: busybox
      terminationMessagePolicy: FallbackToLogsOnError
      command: [sh, -c, 'for i in 1 2 3 4 5 6 7 8 9 10; do head -c 500 /dev/zero | tr "\\0" b; echo; done; exit 2']
"""
    done = run_to_end(tmp_path, text)
    assert done.code == 1, done.err
    assert done.container("big", "long-message")["message"] == "a" * 4096
    tail = done.container("big", "long-lines")["message"]
    assert len(tail.encode()) <= 2048
    assert tail.endswith("b" * 500 + "\n")


def test_message_is_served_on_status_while_the_pod_runs(start_up: Callable[..., Up]) -> None:
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: msg}
        spec:
          restartPolicy: Never
          containers:
            - name: done
              image: busybox
              command: [sh, -c, 'echo "finished: 42 rows" > /dev/termination-log']
            - name: still-running
              image: busybox
              command: [sh, -c, 'trap "exit 0" TERM; echo trapped; while true; do sleep 0.2; done']
        """
    )
    status = up.wait_for(
        lambda: (c := up.container("done")).get("state") == "Terminated" and c,
        what="container done terminated",
    )
    assert status["message"] == "finished: 42 rows\n"
    # SIGTERM only once the shell has its trap: before that, as PID 1 it ignores the signal
    # and the stop waits out the grace period.
    up.wait_for(lambda: "trapped" in up.out, what="the still-running container's trap")
    assert up.stop() == 0


def test_each_restart_starts_with_an_empty_message(tmp_path: Path) -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: again}
spec:
  restartPolicy: OnFailure
  volumes: [{name: state, emptyDir: {}}]
  containers:
    - name: twice
      image: busybox
      volumeMounts: [{name: state, mountPath: /state}]
      command:
        - sh
        - -c
        - if [ -e /state/ran ]; then exit 0; fi; touch /state/ran; echo first > /dev/termination-log; exit 1
"""
    done = run_to_end(tmp_path, text)
    assert done.code == 0, done.err
    c = done.container("again", "twice")
    assert c["restartCount"] == 1
    assert "message" not in c
    assert c["lastState"] == {k: c["lastState"][k] for k in ("exitCode", "reason", "finishedAt")}
