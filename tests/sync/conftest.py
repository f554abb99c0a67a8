"""Helpers for the sync tests: real upstream repositories and syncers built on them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sidekick.sync.config import SyncConfig
from sidekick.sync.git import Git, Redactor
from sidekick.sync.metrics import SyncMetrics
from sidekick.sync.syncer import Syncer
from tests.conftest import SIDEKICK, free_port

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def script(path: Path, body: str) -> str:
    """An executable shell script at ``path`` running ``body``; its path, as a hook command
    (one program, no arguments, as git-sync runs it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


class Upstream:
    """A repository the tests commit to; ``url`` is its file:// URL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "main")
        # Lets clients fetch any commit by hash (used for --ref <sha> of an old commit).
        git(path, "config", "uploadpack.allowAnySHA1InWant", "true")
        self.url = path.as_uri()

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for name, text in files.items():
            f = self.path / name
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def commit_tracked(self, files: dict[str, str], message: str = "change") -> str:
        """Faster commit for files already tracked: one git process."""
        for name, text in files.items():
            (self.path / name).write_text(text)
        git(self.path, "commit", "-q", "-a", "-m", message)
        return self.head()

    def prepare(self, revisions: list[dict[str, str]]) -> list[str]:
        """Create one commit per entry on a side branch with a single ``git fast-import``
        and return their hashes; ``publish`` later moves ``main`` to one of them."""
        stream = []
        for n, files in enumerate(revisions):
            stream.append("commit refs/heads/prepared\n")
            stream.append(f"committer Test <t@example.com> {1700000000 + n} +0000\n")
            stream.append("data 4\nrev\n")
            if n == 0:
                stream.append(f"from {self.head()}\n")
            for name, text in files.items():
                data = text.encode()
                stream.append(f"M 100644 inline {name}\ndata {len(data)}\n{text}\n")
        subprocess.run(
            ["git", "fast-import", "--quiet"],
            cwd=self.path,
            env=GIT_ENV,
            input="".join(stream),
            text=True,
            check=True,
        )
        shas = git(self.path, "rev-list", "--reverse", f"{self.head()}..prepared").split()
        assert len(shas) == len(revisions)
        return shas

    def publish(self, sha: str) -> None:
        """Move ``main`` to ``sha`` the way a push would, without a git process."""
        ref = self.path / ".git" / "refs" / "heads" / "main"
        tmp = ref.with_name("main.tmp")
        tmp.write_text(sha + "\n")
        os.replace(tmp, ref)

    def head(self) -> str:
        return (self.path / ".git" / "refs" / "heads" / "main").read_text().strip()


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    up = Upstream(tmp_path / "upstream")
    up.commit({"index.html": "rev 0\n"}, "first")
    return up


def make_syncer(root: Path, repo: str, git_env: dict[str, str] | None = None, **kw: Any) -> Syncer:
    cfg = SyncConfig(repo=repo, root=str(root), **kw)
    git_runner = Git(
        cfg.git, env=git_env or GIT_ENV, redact=Redactor(), config=[("credential.helper", "")]
    )
    return Syncer(cfg, git=git_runner, metrics=SyncMetrics())


@pytest.fixture
def syncers() -> Iterator[list[Syncer]]:
    made: list[Syncer] = []
    yield made
    for s in made:
        s.aclose()


def metric(syncer_or_registry: Any, name: str, labels: dict[str, str] | None = None) -> float:
    registry = getattr(syncer_or_registry, "metrics", syncer_or_registry)
    registry = getattr(registry, "registry", registry)
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else float(value)


class CliSync:
    """``sidekick sync`` running as a real subprocess with its admin server on ``port``."""

    def __init__(self, args: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [*SIDEKICK, "sync", "--admin-addr", f"127.0.0.1:{port}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**GIT_ENV, **(env or {})},
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(
        self,
        path: str,
        method: str = "GET",
        data: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        req = urllib.request.Request(
            self.url(path),
            method=method,
            data=data if method != "GET" else None,
            headers=headers or {},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"sidekick sync exited {self.proc.returncode}: {self.proc.stderr.read() if self.proc.stderr else ''}"
                )
            if self.request("/readyz")[0] == 200:
                return
            time.sleep(0.05)
        raise AssertionError("sidekick sync did not become ready")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _out, err = self.proc.communicate(timeout=30)
        return err


@pytest.fixture
def cli_sync() -> Iterator[Callable[..., CliSync]]:
    started: list[CliSync] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> CliSync:
        proc = CliSync(args, free_port(), env)
        started.append(proc)
        return proc

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.communicate(timeout=10)


def wait_for(predicate: Callable[[], bool], timeout: float = 10, interval: float = 0.01) -> float:
    """Poll until ``predicate()``; return the seconds it took or fail."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
