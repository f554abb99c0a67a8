"""Helpers for the sync tests: real upstream repositories and syncers built on them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidekick.sync.config import SyncConfig
from sidekick.sync.git import Git, Redactor
from sidekick.sync.metrics import SyncMetrics
from sidekick.sync.syncer import Syncer

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


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


def make_syncer(root: Path, repo: str, **kw: Any) -> Syncer:
    cfg = SyncConfig(repo=repo, root=str(root), **kw)
    git_runner = Git(cfg.git, env=GIT_ENV, redact=Redactor(), config=[("credential.helper", "")])
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
