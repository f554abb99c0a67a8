"""emptyDir medium: Memory is a tmpfs of sizeLimit bytes, unmounted when the Pod ends."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sidekick.pod.tmpfs import mounts_under
from tests.pod.conftest import Up
from tests.pod.examples import example, run_to_end


def test_memory_volume_is_a_sized_tmpfs_and_writes_past_the_limit_fail(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "mounting a tmpfs needs root; the test machine runs as root"
    done = run_to_end(tmp_path, example("emptydir-memory.yaml"))
    assert done.code == 0, done.err
    out = "\n".join(done.lines("test-pd/test-container"))
    assert "tmpfs" in out and "size=2048k" in out
    assert "No space left on device" in out
    assert "2097152" in out  # the file stops at the limit
    assert "is an ordinary directory" not in done.err
    # Gone with the Pod.
    assert mounts_under(done.run_dir) == []


def test_tmpfs_left_by_a_killed_run_is_unmounted_by_the_next(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    manifest = """
        apiVersion: v1
        kind: Pod
        metadata: {name: mem}
        spec:
          containers:
            - name: c
              image: busybox
              command: [sh, -c, 'echo x > /cache/f; trap "exit 0" TERM; while true; do sleep 0.2; done']
              volumeMounts: [{name: cache, mountPath: /cache}]
          volumes: [{name: cache, emptyDir: {medium: Memory}}]
        """
    first = start_up(manifest)
    volume = first.run_dir / "mem" / "volumes" / "cache"
    first.wait_for(lambda: (volume / "f").exists(), timeout=40, what="file in the memory volume")
    assert mounts_under(volume) == [str(volume.resolve())]
    first.kill()  # SIGKILL: no chance to unmount
    assert mounts_under(volume) == [str(volume.resolve())]
    (first.run_dir / "admin-port").unlink()  # the killed run's; wait for the next one's
    second = start_up(manifest)
    second.wait_for(
        lambda: second.container("c")["state"] == "Running", timeout=40, what="running again"
    )
    assert mounts_under(volume) == [str(volume.resolve())]  # one mount, not two
    assert second.stop(timeout=60) == 0
    assert mounts_under(tmp_path) == []
