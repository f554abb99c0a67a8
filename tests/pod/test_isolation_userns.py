"""Isolation without root: ``sidekick up`` run by a user other than root, with user
namespaces, still runs each container as PID 1 of its own PID namespace with a private
root (a user namespace maps that user to the container's root).

The test starts ``up`` as uid 1000 in a user namespace of its own (``unshare --map-user``),
which is what running it as an ordinary user looks like to the kernel: no capabilities
outside, mounts it did not make are locked. (Its files are still the test's own, so the
checkout and the virtualenv are readable wherever they are.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
import uuid
from pathlib import Path

from tests.pod.conftest import SIDEKICK

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: rootless}}
spec:
  restartPolicy: Never
  containers:
    - name: main
      command:
        - sh
        - -c
        - 'echo "pid=$$$$ uid=$(id -u)"; echo private > {path} && cat {path}; ls /etc/hostname'
      securityContext: {{runAsUser: 1000}}
    - name: ro
      command:
        - sh
        - -c
        - >-
          for d in /etc /tmp /; do
          touch $d/sidekick-ro-test 2>/dev/null && echo "$d writable" || echo "$d read-only";
          done
      securityContext: {{readOnlyRootFilesystem: true}}
"""


def test_a_user_with_user_namespaces_gets_pid_1_and_a_private_root(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux unshare is needed (scripts/system-deps.sh)"
    # /tmp itself, not the working directory (which containers see as it is).
    private = Path("/tmp") / f"sidekick-userns-{uuid.uuid4().hex}"
    (tmp_path / "pod.yaml").write_text(textwrap.dedent(POD.format(path=private)))
    userns = [unshare, "--user", "--map-user=1000", "--map-group=1000", "--"]
    up = ["up", str(tmp_path / "pod.yaml"), "--run-dir", str(tmp_path / "run"), "--no-color"]
    run = subprocess.run(
        [*userns, *SIDEKICK, *up, "--admin-addr", "127.0.0.1:0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stderr
    assert "are not isolated" not in run.stderr
    assert "rootless/main | pid=1 uid=0" in run.stdout, run.stdout
    assert "rootless/main | private" in run.stdout
    assert "rootless/main | /etc/hostname" in run.stdout  # the host's files are below
    assert not private.exists(), "the container wrote the host's /tmp"
    for d in ("/etc", "/tmp", "/"):
        assert re.search(rf"rootless/ro +\| {d} read-only\n", run.stdout), run.stdout
    # runAsUser cannot be honoured: only the user that ran up is mapped, as the container's root.
    assert "not enforced here (in a user namespace only root is mapped" in run.stderr
    assert "runAsUser" in run.stderr
