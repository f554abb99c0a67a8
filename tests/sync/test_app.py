"""``POST /sync`` under abuse: a flood of triggers, a flood of refused requests, empty secrets."""

from __future__ import annotations

import http.client
import math
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, CliSync, Upstream, wait_for

FLOOD = 2000  # requests per test
FLOOD_DEADLINE = 20.0  # seconds; the loop stops there even if the machine is slow


def hammer(port: int, headers: dict[str, str] | None = None) -> tuple[Counter[int], float]:
    """POST /sync ``FLOOD`` times over one keep-alive connection; statuses and seconds."""
    statuses: Counter[int] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    started = time.monotonic()
    try:
        for _ in range(FLOOD):
            conn.request("POST", "/sync", body=b"{}", headers=headers or {})
            response = conn.getresponse()
            response.read()
            statuses[response.status] += 1
            if time.monotonic() - started > FLOOD_DEADLINE:
                break
    finally:
        conn.close()
    return statuses, time.monotonic() - started


def metric_values(app: CliSync, name: str) -> dict[str, float]:
    """``{labels text: value}`` of one metric family from the real /metrics."""
    status, text = app.request("/metrics")
    assert status == 200
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def syncs(app: CliSync) -> float:
    return sum(metric_values(app, "sidekick_sync_syncs_total").values())


@pytest.mark.parametrize("interval", [None, "2s"])
def test_a_flood_of_post_sync_runs_at_most_one_sync_per_interval(
    upstream: Upstream,
    tmp_path: Path,
    cli_sync: Callable[..., CliSync],
    interval: str | None,
) -> None:
    args = ["--repo", upstream.url, "--root", str(tmp_path / "root"), "--period", "1h"]
    if interval is not None:
        args += ["--trigger-min-interval", interval]
    seconds = 2.0 if interval == "2s" else 1.0  # 1s is the default
    app = cli_sync(args)
    app.wait_ready()
    wait_for(lambda: syncs(app) == 1)
    statuses, took = hammer(app.port)
    assert statuses == Counter({202: sum(statuses.values())})
    assert sum(statuses.values()) >= 500
    # The pending sync starts at most one interval after the flood; then all is quiet.
    time.sleep(seconds + 1.0)
    wait_for(lambda: syncs(app) == syncs(app), timeout=10)
    ran = syncs(app) - 1
    assert 1 <= ran <= math.ceil(took / seconds) + 1, (ran, took)
    assert metric_values(app, "sidekick_sync_triggers_total")['{source="http"}'] == sum(
        statuses.values()
    )
    app.stop()


def test_refused_posts_are_counted_and_logged_once_per_interval(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("the-Trigger-s3cret\n")
    app = cli_sync(
        [
            "--repo",
            upstream.url,
            "--root",
            str(tmp_path / "root"),
            "--period",
            "1h",
            "--trigger-secret-file",
            str(secret),
        ]
    )
    app.wait_ready()
    statuses, _took = hammer(app.port, {"Authorization": "Bearer wrong"})
    refused = statuses[401]
    assert statuses == Counter({401: refused}) and refused >= 500
    assert metric_values(app, "sidekick_sync_triggers_total")['{source="refused"}'] == refused
    # A good request still gets through.
    good = {"Authorization": "Bearer the-Trigger-s3cret"}
    assert app.request("/sync", "POST", b"{}", good)[0] == 202
    log = app.stop()
    lines = [line for line in log.splitlines() if "Refused POST /sync" in line]
    # The first at once; the rest held back and reported with their count at shutdown.
    assert len(lines) == 2, lines
    assert f"(happened {refused - 1} more times in the last " in lines[1]
    assert "the-Trigger-s3cret" not in log


@pytest.mark.parametrize("content", ["", " \n\t\n"])
def test_empty_trigger_secret_file_is_refused_at_start(
    upstream: Upstream, tmp_path: Path, content: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(content)
    done = subprocess.run(
        [
            *SIDEKICK,
            "sync",
            "--repo",
            upstream.url,
            "--root",
            str(tmp_path / "root"),
            "--trigger-secret-file",
            str(secret),
            "--admin-addr",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=GIT_ENV,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"--trigger-secret-file {str(secret)!r} is empty; put the shared secret in it" in line


def test_secret_file_emptied_while_running_refuses_every_post(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    app = cli_sync(
        [
            "--repo",
            upstream.url,
            "--root",
            str(tmp_path / "root"),
            "--period",
            "1h",
            "--trigger-secret-file",
            str(secret),
        ]
    )
    app.wait_ready()
    secret.write_text("\n")
    # An empty secret would match an empty bearer token and sign any body.
    for headers in ({"Authorization": "Bearer "}, {"X-Gitlab-Token": ""}, {}):
        assert app.request("/sync", "POST", b"{}", headers)[0] == 503
    assert metric_values(app, "sidekick_sync_triggers_total").get('{source="http"}', 0) == 0
    log = app.stop()
    lines = [line for line in log.splitlines() if "--trigger-secret-file is empty" in line]
    assert len(lines) == 2 and "(happened 2 more times in the last " in lines[1], lines


def test_a_post_right_after_a_periodic_sync_is_not_held_back(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    # Only syncs that triggers started count for --trigger-min-interval: a webhook that
    # arrives just after the first (periodic) sync runs at once, not 30 s later.
    root = tmp_path / "root"
    args = ["--repo", upstream.url, "--root", str(root), "--link", "current", "--period", "1h"]
    app = cli_sync([*args, "--trigger-min-interval", "30s"])
    app.wait_ready()
    wait_for(lambda: syncs(app) == 1)
    upstream.commit({"file": "after the first sync"})
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request("POST", "/sync", body=b"{}")
        assert conn.getresponse().status == 202
    finally:
        conn.close()
    wait_for(lambda: (root / "current" / "file").exists(), timeout=20)
    took = time.monotonic() - started
    assert (root / "current" / "file").read_text() == "after the first sync"
    assert took < 10, took
