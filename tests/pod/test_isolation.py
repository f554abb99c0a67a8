"""Containers run isolated as in a cluster: PID 1 of their own PID namespace, their
securityContext user and groups, a private writable root, readOnlyRootFilesystem."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidekick.pod.nsinit import SYS_RT_SIGACTION
from tests.conftest import SIDEKICK
from tests.pod.conftest import Up

STUBBORN = """
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 2
  containers:
    - name: loop
      command: [sh, -c, "echo pid=$$$$; while true; do sleep 0.1; done"]
"""


def _stop_timed(up: Up) -> float:
    up.wait_for(lambda: "pid=" in up.out, what="the container's first line")
    began = time.monotonic()
    assert up.stop(signal.SIGTERM) == 0, up.err
    return time.monotonic() - began


def test_shell_as_pid_1_ignores_sigterm_and_is_killed_after_the_grace_period(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(STUBBORN)
    took = _stop_timed(up)
    assert "pid=1" in up.out
    assert "did not stop within the grace period of 2s; sending SIGKILL" in up.err
    assert "Terminated (Error, exit code 137)" in up.err
    assert took >= 2.0


def test_without_isolation_the_same_shell_dies_of_sigterm_at_once(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(STUBBORN, "--isolation=off")
    took = _stop_timed(up)
    assert "pid=1\n" not in up.out
    assert "Terminated (Error, exit code 143)" in up.err
    assert took < 2.0


def test_stop_signal_reaches_the_containers_pid_1_and_its_exit_code_is_reported(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: trap}
        spec:
          terminationGracePeriodSeconds: 20
          containers:
            - name: quit
              lifecycle: {stopSignal: SIGQUIT}
              command: [sh, -c, "trap 'echo got QUIT; exit 7' QUIT; echo pid=$$$$; while true; do sleep 0.1; done"]
        """
    )
    took = _stop_timed(up)
    assert "got QUIT" in up.out
    assert "Terminated (Error, exit code 7)" in up.err
    assert took < 10


def test_processes_of_a_container_see_only_their_own_namespace(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: apart}
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 1  # the sleep is PID 1: SIGTERM does not stop it
          volumes: [{name: out, emptyDir: {}}]
          initContainers:
            - name: side
              restartPolicy: Always
              command: [sh, -c, "exec sleep 30"]
          containers:
            - name: main
              command: [sh, -c, "ls /proc | grep -c '^[0-9]' > /out/count; ps -eo comm= > /out/ps"]
              volumeMounts: [{name: out, mountPath: /out}]
        """
    )
    assert up.wait_exit(30) == 0, up.err
    out = up.run_dir.resolve() / "apart" / "volumes" / "out"
    assert "sleep" not in (out / "ps").read_text().split()
    assert int((out / "count").read_text()) <= 3  # sh, ls, grep


def test_share_process_namespace_lets_containers_see_each_other(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: shared}
        spec:
          restartPolicy: Never
          shareProcessNamespace: true
          volumes: [{name: out, emptyDir: {}}]
          initContainers:
            - name: side
              restartPolicy: Always
              command: [sh, -c, "exec sleep 31"]
          containers:
            - name: main
              command: [sh, -c, "echo $$$$ > /out/pid; ps -eo args= > /out/ps"]
              volumeMounts: [{name: out, mountPath: /out}]
        """
    )
    assert up.wait_exit(30) == 0, up.err
    out = up.run_dir.resolve() / "shared" / "volumes" / "out"
    assert "sleep 31" in (out / "ps").read_text()
    assert (out / "pid").read_text().strip() != "1"  # PID 1 is the Pod's, as with pause


USERS = """
apiVersion: v1
kind: Pod
metadata: {name: users}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 10001, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
  volumes: [{name: data, emptyDir: {}}]
  containers:
    - name: pod-level
      command: [sh, -c, "id > /data/pod-level; echo x > /data/from-pod-level"]
      volumeMounts: [{name: data, mountPath: /data}]
    - name: own
      securityContext: {runAsUser: 10002, runAsGroup: 3001}
      command: [sh, -c, "id > /data/own"]
      volumeMounts: [{name: data, mountPath: /data}]
"""


def test_run_as_user_group_and_fs_group_are_applied(start_up: Callable[..., Up]) -> None:
    up = start_up(USERS)
    assert up.wait_exit(30) == 0, up.err
    data = up.run_dir.resolve() / "users" / "volumes" / "data"
    assert (data / "pod-level").read_text().split()[:3] == [
        "uid=10001",
        "gid=3000",
        "groups=3000,2000,4000",
    ]
    assert (data / "own").read_text().split()[:2] == ["uid=10002", "gid=3001"]
    st = data.stat()
    assert st.st_gid == 2000 and st.st_mode & 0o7777 == 0o2777
    made = (data / "from-pod-level").stat()
    assert (made.st_uid, made.st_gid) == (10001, 2000)  # the setgid directory's group


def test_without_isolation_the_security_context_is_named_once_per_pod(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(USERS, "--isolation=off")
    assert up.wait_exit(30) == 0, up.err
    warnings = [ln for ln in up.err.splitlines() if "not enforced here" in ln]
    assert len(warnings) == 1, up.err
    for field in ("spec.securityContext.runAsUser", "spec.securityContext.fsGroup"):
        assert field in warnings[0]
    assert "spec.containers[1].securityContext.runAsUser" in warnings[0]
    data = up.run_dir.resolve() / "users" / "volumes" / "data"
    assert (data / "own").read_text().startswith(f"uid={os.geteuid()}(")


def test_read_only_root_filesystem_leaves_only_volumes_writable(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: rootro}
        spec:
          restartPolicy: Never
          volumes: [{name: data, emptyDir: {}}]
          containers:
            - name: app
              securityContext: {readOnlyRootFilesystem: true}
              command:
                - sh
                - -c
                - |
                  try() { if (echo x > "$1") 2>/dev/null; then echo "$1 writable"; else echo "$1 refused"; fi; }
                  try /usr/share/sidekick-test; try /tmp/sidekick-test; try /data/ok
                  echo done > /dev/termination-log
              volumeMounts: [{name: data, mountPath: /data}]
        """
    )
    assert up.wait_exit(30) == 0, up.err
    data = up.run_dir.resolve() / "rootro" / "volumes" / "data"
    assert up.out.splitlines()[-3:] == [
        "rootro/app | /usr/share/sidekick-test refused",
        "rootro/app | /tmp/sidekick-test refused",
        f"rootro/app | {data}/ok writable",
    ]
    assert (data / "ok").read_text() == "x\n"


def test_writes_outside_volumes_stay_in_the_container(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    marker = f"sidekick-private-{os.getpid()}-{time.monotonic_ns()}"
    up = start_up(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: private}}
        spec:
          terminationGracePeriodSeconds: 2
          containers:
            - name: app
              command:
                - sh
                - -c
                - "echo hello > /usr/share/{marker}; touch /tmp/{marker}; echo bye > /dev/{marker};
                   echo written; trap 'exit 0' TERM; while true; do sleep 0.1; done"
              readinessProbe:
                exec: {{command: [cat, /tmp/{marker}, /usr/share/{marker}]}}
                periodSeconds: 1
        """
    )
    up.wait_for(lambda: up.container("app")["ready"], timeout=30, what="Ready from the probe")
    for path in (f"/usr/share/{marker}", f"/tmp/{marker}", f"/dev/{marker}"):
        assert not os.path.exists(path), path
    assert up.stop() == 0, up.err
    assert "written" in up.out


def test_volumes_are_also_at_their_mount_paths_for_paths_built_at_run_time(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: built}
        spec:
          restartPolicy: Never
          volumes: [{name: data, emptyDir: {}}]
          initContainers:
            - name: write
              command: [sh, -c, "echo from-init > /srv/built-data/f"]
              volumeMounts: [{name: data, mountPath: /srv/built-data}]
          containers:
            - name: read
              # Translation cannot see this path: it is only put together by the shell.
              command: [sh, -c, 'p=/srv/built; cat "$$p-data/f"']
              volumeMounts: [{name: data, mountPath: /srv/built-data}]
        """
    )
    assert up.wait_exit(30) == 0, up.err
    assert "built/read  | from-init" in up.out
    assert not os.path.exists("/srv/built-data")


def test_an_empty_dir_at_tmp_is_writable_by_a_non_root_user_on_a_read_only_root(
    start_up: Callable[..., Up],
) -> None:
    # The run dir is under the host's /tmp (pytest's tmp_path), so the volume bound at /tmp
    # would hide the run dir's own volumes, where the translated /data points.
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: tmpvol}
        spec:
          restartPolicy: Never
          volumes: [{name: tmp, emptyDir: {}}, {name: data, emptyDir: {}}]
          containers:
            - name: app
              securityContext: {runAsUser: 10001, readOnlyRootFilesystem: true}
              command:
                - sh
                - -c
                - |
                  echo in-data > /data/f && cat /data/f
                  t=/t; echo in-tmp > "$$t"mp/built && cat "$$t"mp/built
                  mktemp -p "$$t"mp && id -u
              volumeMounts:
                - {name: tmp, mountPath: /tmp}
                - {name: data, mountPath: /data}
        """
    )
    assert up.wait_exit(30) == 0, up.err
    lines = [line.removeprefix("tmpvol/app | ") for line in up.out.splitlines()[-4:]]
    assert lines[0] == "in-data"
    assert lines[1] == "in-tmp"
    assert lines[2].startswith("/tmp/tmp.")
    assert lines[3] == "10001"
    volumes = up.run_dir.resolve() / "tmpvol" / "volumes"
    assert (volumes / "tmp" / "built").read_text() == "in-tmp\n"
    assert (volumes / "data" / "f").read_text() == "in-data\n"


def test_a_non_root_user_may_open_dev_stdout_and_dev_stderr(start_up: Callable[..., Up]) -> None:
    # nginx's `access_log /dev/stdout` as runAsUser: the runtime gives the user its pipes.
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: stdio}
        spec:
          restartPolicy: Never
          securityContext: {runAsUser: 10001, runAsGroup: 10001}
          containers:
            - name: app
              command: [sh, -c, "echo to-stdout > /dev/stdout && echo to-stderr > /dev/stderr"]
        """
    )
    assert up.wait_exit(30) == 0, up.err
    assert "stdio/app | to-stdout" in up.out
    assert "stdio/app | to-stderr" in up.out


def test_run_as_non_root_with_user_0_is_refused(tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import SIDEKICK

    (tmp_path / "pod.yaml").write_text(
        """
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  securityContext: {runAsNonRoot: true}
  containers:
    - name: app
      securityContext: {runAsUser: 0}
      command: [sleep, "1"]
"""
    )
    result = subprocess.run(
        [*SIDEKICK, "up", str(tmp_path / "pod.yaml"), "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "spec.containers[0].securityContext: runAsNonRoot is true but runAsUser is 0" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_container_starts_with_no_signal_ignored(start_up: Callable[..., Up]) -> None:
    # Python ignores SIGPIPE and SIGXFSZ; nsinit, a Python process, must not pass that on
    # through its exec (`yes | head -1` would then fail with EPIPE instead of ending quietly).
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: signals}
        spec:
          restartPolicy: Never
          containers:
            - name: app
              command: [grep, SigIgn, /proc/self/status]
        """
    )
    assert up.wait_exit(30) == 0, up.err
    assert "signals/app | SigIgn:\t0000000000000000" in up.out, up.out


# --- start-up cost -------------------------------------------------------------------------


def test_the_isolation_probe_runs_in_the_background_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidekick.pod.isolation import Isolation

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # read TMPDIR again
    try:
        probe = Isolation.start_probe(True)
        # Started, not finished: the caller reads the manifests meanwhile.
        assert probe._proc is not None and probe._proc.poll() is None
        names = [p.name for p in tmp_path.iterdir()]
        assert len(names) == 1 and names[0].startswith("sidekick-ns-"), names
        iso = probe.result()
        assert iso.mode == "root", iso.why_not
        assert list(tmp_path.iterdir()) == []
        assert probe.result() is iso

        cancelled = Isolation.start_probe(True)
        proc = cancelled._proc
        assert proc is not None
        cancelled.cancel()
        assert proc.returncode is not None
        assert list(tmp_path.iterdir()) == []
        assert not cancelled.result().on
    finally:
        tempfile.tempdir = None


def test_a_manifest_error_ends_the_isolation_probe_and_removes_its_directory(
    tmp_path: Path,
) -> None:
    from tests.conftest import SIDEKICK

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n"
        "    - name: app\n      command: [sleep, '1']\n      restartPolicy: Sometimes\n"
    )
    result = subprocess.run(
        [*SIDEKICK, "up", str(tmp_path / "pod.yaml"), "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert result.returncode == 2, result.stderr
    assert list(scratch.iterdir()) == []


def test_nsinit_is_imported_so_its_bytecode_is_cached(tmp_path: Path) -> None:
    import importlib.util

    from sidekick.pod.isolation import NSINIT, Isolation

    cached = Path(importlib.util.cache_from_source(NSINIT))
    cached.unlink(missing_ok=True)
    assert Isolation.probe(True).mode == "root"
    # Written by the isolated start itself (a script run is compiled and never cached).
    assert cached.exists()


def _ignore_signals() -> None:
    # SIGQUIT and SIGUSR1 by the C library, 32 (reserved by glibc) by the system call.
    import ctypes

    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    act = ctypes.create_string_buffer(32)
    act[0] = 1  # SIG_IGN
    nr = SYS_RT_SIGACTION[os.uname().machine]
    assert ctypes.CDLL(None).syscall(nr, 32, act, None, 8) == 0


def test_signals_ignored_where_up_was_started_are_not_ignored_in_the_container(
    tmp_path: Path,
) -> None:
    """A parent that ignores signals (a shell's background job, a CI runner) passes that on
    through every exec; a container still starts with every signal at its default."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: signals}\nspec:\n"
        "  restartPolicy: Never\n  containers:\n"
        "    - {name: app, command: [grep, SigIgn, /proc/self/status]}\n"
    )
    up = ["up", str(manifest), "--run-dir", str(tmp_path / "run"), "--no-color"]
    run = subprocess.run(
        [*SIDEKICK, *up, "--admin-addr", "127.0.0.1:0"],
        preexec_fn=_ignore_signals,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "signals/app | SigIgn:\t0000000000000000" in run.stdout, run.stdout


def test_a_sub_path_of_an_empty_dir_is_writable_by_a_non_root_user(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: subdirs}
        spec:
          restartPolicy: Never
          securityContext: {runAsUser: 10001, runAsGroup: 3000}
          volumes: [{name: data, emptyDir: {}}]
          containers:
            - name: app
              command: [sh, -c, "echo hi > /logs/app.log && echo wrote"]
              volumeMounts: [{name: data, mountPath: /logs, subPath: app/logs}]
        """
    )
    assert up.wait_exit(30) == 0, up.err
    assert "subdirs/app | wrote" in up.out, up.out
    data = up.run_dir.resolve() / "subdirs" / "volumes" / "data"
    for made in (data / "app", data / "app" / "logs"):
        assert made.stat().st_mode & 0o7777 == 0o777  # the emptyDir's own mode
    assert (data / "app" / "logs" / "app.log").read_text() == "hi\n"
