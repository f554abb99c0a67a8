"""readOnly mounts, ConfigMap and Secret volumes are read-only for the container mounting them."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sidekick.pod import readonly
from tests.pod.conftest import Up

POD = """
apiVersion: v1
kind: ConfigMap
metadata: {name: conf}
data: {app.conf: "level=info"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: ro}
spec:
  restartPolicy: Never
  volumes:
    - {name: shared, emptyDir: {}}
    - {name: out, emptyDir: {}}
    - {name: conf, configMap: {name: conf}}
    - {name: creds, secret: {secretName: creds}}
  initContainers:
    - name: writer
      command: [sh, -c, "echo first > /shared/a && echo wrote"]
      volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
    - name: reader
      command:
        - sh
        - -c
        - |
          try() { if (echo x > "$1") 2>/dev/null; then echo "$1 writable"; else echo "$1 refused"; fi; }
          cat /in/a /etc/app/app.conf /run/creds/token
          echo
          try /in/b; try /etc/app/new; try /run/creds/new; try /scratch/c
      volumeMounts:
        - {name: shared, mountPath: /in, readOnly: true}
        - {name: out, mountPath: /scratch}
        - {name: conf, mountPath: /etc/app}
        - {name: creds, mountPath: /run/creds}
"""


def test_read_only_mounts_refuse_writes_but_read_and_other_mounts_write(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(POD)
    assert up.wait_exit() == 0, up.err
    assert "not enforced" not in up.err
    pod = up.run_dir.resolve() / "ro"
    lines = (pod / "logs" / "reader.log").read_text().splitlines()
    assert lines[0] == "first"
    assert lines[1] == "level=infos3cret"
    shared = pod / "volumes" / "shared"
    assert lines[2:] == [
        f"{shared}/b refused",
        f"{pod}/configmaps/conf/reader/new refused",
        f"{pod}/volumes/creds/new refused",
        f"{pod}/volumes/out/c writable",
    ]
    assert not (shared / "b").exists() and (pod / "volumes" / "out" / "c").read_text() == "x\n"
    # The read-only view is the container's alone: nothing stays mounted on this machine.
    assert str(shared) not in Path("/proc/self/mountinfo").read_text()


def test_missing_command_behind_read_only_mounts_is_still_a_start_error(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(
        POD.replace(
            "    - name: reader\n      command:\n        - sh",
            "    - name: reader\n      command:\n        - no-such-command",
        )
    )
    assert up.wait_exit() == 1
    assert "cannot run 'no-such-command'" in up.err
    status = json.loads((up.run_dir / "ro" / "status.json").read_text())
    assert status["containerStatuses"][0]["reason"] == "StartError"


def test_a_read_only_mount_sharing_a_writable_ones_directory_stays_writable(
    start_up: Callable[..., Up],
) -> None:
    # Locally both mount paths are one host directory; read-only would break the writer.
    up = start_up(
        POD.replace("{name: out, mountPath: /scratch}", "{name: shared, mountPath: /scratch}")
    )
    assert up.wait_exit() == 0, up.err
    assert "mounts the directory of /in read-write too, so it stays writable there" in up.err
    lines = (up.run_dir / "ro" / "logs" / "reader.log").read_text().splitlines()
    shared = up.run_dir.resolve() / "ro" / "volumes" / "shared"
    assert f"{shared}/b writable" in lines and f"{shared}/c writable" in lines
    assert any(line.endswith("configmaps/conf/reader/new refused") for line in lines)


def test_a_read_only_sub_path_inside_a_writable_mount_stays_writable(
    start_up: Callable[..., Up],
) -> None:
    manifest = POD.replace(
        "{name: out, mountPath: /scratch}", "{name: shared, mountPath: /scratch}"
    ).replace(
        "{name: shared, mountPath: /in, readOnly: true}",
        "{name: shared, mountPath: /in, subPath: sub, readOnly: true}",
    )
    up = start_up(manifest)
    up.wait_exit()
    assert "mounts the directory of /in read-write too, so it stays writable there" in up.err


def test_check_runnable_raises_what_exec_would(tmp_path: Path) -> None:
    readonly.check_runnable("sh", "/usr/bin:/bin", None)
    with pytest.raises(FileNotFoundError) as missing:
        readonly.check_runnable("no-such-command", "/usr/bin:/bin", None)
    assert missing.value.errno == errno.ENOENT
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        readonly.check_runnable("./run.sh", None, str(tmp_path))
    script.chmod(0o755)
    readonly.check_runnable("./run.sh", None, str(tmp_path))
    with pytest.raises(FileNotFoundError):
        readonly.check_runnable("./other.sh", None, str(tmp_path))


def test_read_only_mounts_work_whatever_path_the_container_sets(
    start_up: Callable[..., Up],
) -> None:
    # unshare and mount are found by up, not through the container's own PATH.
    manifest = """
    apiVersion: v1
    kind: Pod
    metadata: {name: ro}
    spec:
      restartPolicy: Never
      volumes: [{name: d, emptyDir: {}}]
      containers:
        - name: app
          command: [/bin/sh, -c, "if (echo x > /d/f) 2>/dev/null; then echo writable; else echo refused; fi"]
          env: [{name: PATH, value: /nowhere}]
          volumeMounts: [{name: d, mountPath: /d, readOnly: true}]
    """
    up = start_up(manifest)
    assert up.wait_exit() == 0, up.err
    assert (up.run_dir / "ro" / "logs" / "app.log").read_text() == "refused\n"
