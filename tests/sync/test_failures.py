"""Failures as git-sync handles them: the error file, --max-failures, retries, --one-time."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sidekick.core.runtime import Shutdown
from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream, make_syncer, metric, wait_for


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def sync_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SIDEKICK, "sync", "--admin-addr", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=GIT_ENV,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        _out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    return proc.returncode, err


def test_error_file_holds_git_syncs_json_with_gits_message_and_goes_on_success(
    upstream: Upstream, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    common = ["--repo", upstream.url, "--root", str(root), "--error-file", "error.json"]
    code, err = finish(sync_cli(*common, "--ref", "does-not-exist", "--one-time"))
    assert code == 1 and "Traceback" not in err
    record = json.loads((root / "error.json").read_text())
    assert set(record) == {"Msg", "Err", "Args"}
    assert "couldn't find remote ref" in record["Err"]
    assert "does-not-exist" in record["Err"]
    assert record["Args"]["failCount"] == 1
    assert not (root / "upstream").exists()
    code, err = finish(sync_cli(*common, "--one-time"))
    assert code == 0, err
    assert not (root / "error.json").exists()
    assert (root / "upstream" / "index.html").read_text() == "rev 0\n"


def test_error_file_record_is_git_syncs_retry_and_abort_records(
    upstream: Upstream, tmp_path: Path
) -> None:
    """git-sync logs 'error syncing repo, will retry' with failCount, and 'too many failures,
    aborting' with failCount and maxFailures; its error file is that log line's JSON,
    compact, as Go writes it."""
    root = tmp_path / "root"
    error_file = root / "error.json"
    common = ["--repo", upstream.url, "--root", str(root), "--ref", "nope"]
    proc = sync_cli(*common, "--error-file", "error.json", "--max-failures", "2", "--period", "5s")
    try:
        wait_for(error_file.exists, 30)
        retry = error_file.read_text()
    finally:
        code, _err = finish(proc)
    assert code == 1
    assert retry.startswith('{"Msg":"error syncing repo, will retry","Err":"')
    assert json.loads(retry)["Args"] == {"failCount": 1}
    aborted = error_file.read_text()
    assert aborted.startswith('{"Msg":"too many failures, aborting","Err":"')
    assert json.loads(aborted)["Args"] == {"failCount": 2, "maxFailures": 2}
    assert "couldn't find remote ref nope" in json.loads(aborted)["Err"]
    assert error_file.stat().st_mode & 0o777 == 0o644


def test_error_file_at_an_absolute_path_in_a_new_directory(
    upstream: Upstream, tmp_path: Path
) -> None:
    error_file = tmp_path / "elsewhere" / "dir" / "error.json"
    code, _err = finish(
        sync_cli(
            "--repo",
            upstream.url,
            "--root",
            str(tmp_path / "root"),
            "--ref",
            "nope",
            "--error-file",
            str(error_file),
            "--one-time",
        )
    )
    assert code == 1
    assert "couldn't find remote ref" in json.loads(error_file.read_text())["Err"]


def test_a_failing_first_sync_ends_the_process_by_default(tmp_path: Path) -> None:
    # No --one-time and no --max-failures: a bad repository fails the container, as with
    # git-sync, instead of retrying forever.
    started = time.monotonic()
    code, err = finish(
        sync_cli("--repo", (tmp_path / "missing").as_uri(), "--root", str(tmp_path / "root"))
    )
    assert code == 1
    assert "Giving up after 1 failed sync(s) in a row" in err
    assert "Traceback" not in err
    assert time.monotonic() - started < 30


async def test_after_a_first_success_failures_are_retried_every_period_by_default(
    upstream: Upstream, tmp_path: Path
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url, period=0.05)
    shutdown = Shutdown()
    task = asyncio.create_task(syncer.run(shutdown))
    try:
        await until(lambda: syncer.published is not None, 30)
        shutil.move(upstream.path, tmp_path / "gone")
        # A back-off from 1s would need 15s for five failures; the period needs well under 10.
        await until(lambda: syncer.consecutive_failures >= 5 or task.done(), 10)
        assert not task.done()
        assert metric(syncer, "sidekick_sync_retry_delay_seconds") == 0.05
        shutil.move(tmp_path / "gone", upstream.path)
        await until(lambda: syncer.consecutive_failures == 0, 10)
    finally:
        shutdown.request("test")
        assert await asyncio.wait_for(task, 10) == 0
        syncer.aclose()


async def test_explicit_max_failures_0_ends_the_process_after_a_first_success_too(
    upstream: Upstream, tmp_path: Path
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url, period=0.05, max_failures=0)
    shutdown = Shutdown()
    task = asyncio.create_task(syncer.run(shutdown))
    try:
        await until(lambda: syncer.published is not None, 30)
        shutil.move(upstream.path, tmp_path / "gone")
        assert await asyncio.wait_for(task, 30) == 1
        assert syncer.consecutive_failures == 1
    finally:
        shutdown.request("test")
        syncer.aclose()


def test_one_time_with_max_failures_minus_1_retries_until_the_repository_appears(
    tmp_path: Path,
) -> None:
    up = Upstream(tmp_path / "prepared")
    up.commit({"index.html": "late\n"})
    later = tmp_path / "upstream"
    root = tmp_path / "root"
    proc = sync_cli(
        "--repo",
        later.as_uri(),
        "--root",
        str(root),
        "--one-time",
        "--max-failures=-1",
        "--period",
        "100ms",
    )
    try:
        wait_for(lambda: (root / ".git").is_dir(), timeout=30)
        time.sleep(0.3)
        assert proc.poll() is None
        up.path.rename(later)
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert (root / "upstream" / "index.html").read_text() == "late\n"


def test_one_time_with_max_failures_3_exits_after_the_third_failure(tmp_path: Path) -> None:
    code, err = finish(
        sync_cli(
            "--repo",
            (tmp_path / "missing").as_uri(),
            "--root",
            str(tmp_path / "root"),
            "--one-time",
            "--max-failures",
            "3",
            "--period",
            "10ms",
        )
    )
    assert code == 1
    assert "Giving up after 3 failed sync(s) in a row" in err


def test_a_refused_setting_is_written_to_the_error_file_as_in_git_sync(tmp_path: Path) -> None:
    """git-sync writes the message of a fatal setting error to --error-file as plain text
    before it exits, so whatever reads the file learns why the container did not start."""
    root = tmp_path / "root"
    code, err = finish(
        sync_cli(
            "--repo",
            "file:///nowhere",
            "--root",
            str(root),
            "--error-file",
            "error.txt",
            "--period",
            "1ms",
        )
    )
    assert code == 2, err
    text = (root / "error.txt").read_text()
    assert text == "--period 0.001s is too short; use at least 10ms"
    assert text in err
