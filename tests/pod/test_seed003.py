"""Seed 003: httpd serving what a git-polling sidecar clones into a shared emptyDir.

The book's Pod runs exactly as written: the httpd image gets a command with --set-image (a
Python web server serving the image's document root, /var/www/html), and GIT_REPO points at a
local repository. The poller's image (axeclbr/git) is alpine with BusyBox, whose ``watch``
needs no terminal, so the poller keeps running as in a cluster instead of exiting with "Error
opening terminal" and crash-looping on ``git clone`` into the non-empty directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.pod.conftest import Up

SEED = """
apiVersion: v1
kind: Pod
metadata:
  name: web-app
spec:
  containers:
  - name: app
    image: docker.io/centos/httpd
    ports:
    - containerPort: 80
    volumeMounts:
    - mountPath: /var/www/html
      name: git
  - name: poll
    image: axeclbr/git
    volumeMounts:
    - mountPath: /var/lib/data
      name: git
    env:
    - name: GIT_REPO
      value: https://github.com/mdn/beginner-html-site-scripted
    command:
    - "sh"
    - "-c"
    - "git clone $(GIT_REPO) . && watch -n 600 git pull"
    workingDir: /var/lib/data
  volumes:
  - emptyDir: {}
    name: git
"""

HTTPD = "docker.io/centos/httpd=python3 -m http.server 80 --directory /var/www/html"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    (path / "index.html").write_text("<h1>Mozilla is cool</h1>\n")
    _git(path, "add", "index.html")
    _git(path, "commit", "-q", "-m", "first")
    return path


def _port_80_free() -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", 80))
        except OSError:
            return False
    return True


def _get(path: str) -> bytes:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:80{path}", timeout=2) as resp:
            return bytes(resp.read())
    except OSError:
        return b""


def test_seed_003_serves_the_clone_and_the_poller_keeps_running(
    start_up: Callable[..., Up], repo: Path
) -> None:
    assert _port_80_free(), "the seed's Pod listens on port 80, which must be free here"
    manifest = SEED.replace("https://github.com/mdn/beginner-html-site-scripted", f"file://{repo}")
    up = start_up(manifest, "--set-image", HTTPD)
    body = up.wait_for(lambda: _get("/index.html"), timeout=30, what="the cloned page served")
    assert body == b"<h1>Mozilla is cool</h1>\n"
    up.wait_for(lambda: "Every 600s: git pull" in up.out, timeout=30, what="watch running")
    up.wait_for(lambda: "Already up to date." in up.out, timeout=30, what="first git pull")
    poll = up.container("poll")
    assert (poll["state"], poll["restartCount"]) == ("Running", 0)
    assert "Error opening terminal" not in up.out
    # As PID 1 of its container, the shell ignores SIGTERM: the grace period of 30 s applies.
    assert up.stop(timeout=60) == 0
    assert "CrashLoopBackOff" not in up.err


@pytest.fixture
def git_daemon(repo: Path) -> Iterator[str]:
    """The repository served over git:// (the poller's view of local files may be a snapshot)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={repo.parent}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(repo.parent),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # `git daemon` runs git-daemon as a child: the group is killed, or it outlives us.
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"git://127.0.0.1:{port}/{repo.name}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_seed_003_poller_publishes_new_commits(
    start_up: Callable[..., Up], repo: Path, git_daemon: str
) -> None:
    assert _port_80_free(), "the seed's Pod listens on port 80, which must be free here"
    manifest = (
        SEED.replace("https://github.com/mdn/beginner-html-site-scripted", git_daemon)
        .replace("watch -n 600", "watch -n 1")
        .replace("spec:\n  containers:", "spec:\n  terminationGracePeriodSeconds: 2\n  containers:")
    )
    up = start_up(manifest, "--set-image", HTTPD)
    up.wait_for(lambda: _get("/index.html"), timeout=30, what="the cloned page served")
    (repo / "index.html").write_text("<h1>second version</h1>\n")
    _git(repo, "commit", "-q", "-am", "second")
    up.wait_for(
        lambda: _get("/index.html") == b"<h1>second version</h1>\n",
        timeout=30,
        what="the new commit served",
    )
    assert up.container("poll")["restartCount"] == 0
    assert up.stop(timeout=30) == 0
