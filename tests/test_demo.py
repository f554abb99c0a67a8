"""sidekick.demo: the demo's preparation and the static-site demo repository (the whole demo
runs end to end in tests/e2e/test_examples_up.py)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidekick import demo


@pytest.fixture
def port_8080_taken() -> Iterator[None]:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", demo.EXAMPLE_PORT))
            s.listen()
        except OSError:
            pass  # already taken by another program: the same situation
        yield


def test_init_repo_creates_a_repository_with_one_commit(tmp_path: Path) -> None:
    demo.init_repo(tmp_path / "repo")
    log = subprocess.run(
        ["git", "-C", str(tmp_path / "repo"), "log", "--format=%s"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert log.stdout.splitlines() == ["Demo site"]


def test_init_repo_leaves_an_existing_repository_alone(tmp_path: Path) -> None:
    demo.init_repo(tmp_path / "repo")
    (tmp_path / "repo" / "index.html").write_text("edited")
    message = demo.init_repo(tmp_path / "repo")
    assert "exists" in message and (tmp_path / "repo" / "index.html").read_text() == "edited"


def test_prepare_moves_nginx_to_a_free_port_when_8080_is_taken(
    port_8080_taken: None, tmp_path: Path
) -> None:
    manifest, port = demo.prepare(tmp_path)
    text = manifest.read_text()
    assert port != demo.EXAMPLE_PORT and f"listen {port};" in text and "8080" not in text


def test_search_path_adds_sbin_directories_once() -> None:
    parts = demo.search_path("/usr/bin:/usr/sbin").split(":")
    assert parts.count("/usr/sbin") == 1 and "/sbin" in parts


def test_main_rejects_unknown_arguments() -> None:
    assert demo.main(["bogus"]) == 2
