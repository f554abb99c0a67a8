"""Symlinks in a tailed glob, through the real ``sidekick ship`` process.

A link whose target lies outside the glob's base directory is refused (logged once, counted)
unless following is asked for; links that stay inside keep working.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sidekick.ship.sources._discover import Finder
from tests.conftest import SIDEKICK
from tests.ship.helpers import ShipperProcess, read_ndjson, wait_for_sync

REFUSED = "sidekick_ship_symlinks_refused_total"


class Shipper(ShipperProcess):
    """``ShipperProcess`` with extra environment variables."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        super().__init__(args, log_path)
        self.env = env or {}

    def start(self) -> Shipper:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*SIDEKICK, "ship", *self.args, "--admin-addr", f"127.0.0.1:{self.port}"],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        return self


def messages(tmp_path: Path) -> list[str]:
    return [r["message"] for r in read_ndjson(tmp_path / "out.ndjson")]


def layout(tmp_path: Path) -> Path:
    """logs/good.log, logs/alias.log -> logs/data/inner.txt, logs/evil.log -> outside."""
    logs = tmp_path / "logs"
    (logs / "data").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("root:x:0:0:secret\n")
    (logs / "good.log").write_text("good line\n")
    (logs / "data" / "inner.txt").write_text("inner line\n")
    (logs / "alias.log").symlink_to(logs / "data" / "inner.txt")
    (logs / "evil.log").symlink_to(outside / "secret.txt")
    return logs


def shipper(
    tmp_path: Path, pattern: str, *extra: str, env: dict[str, str] | None = None
) -> Shipper:
    args = [
        "--input",
        f"file://{pattern}",
        "--output",
        f"file://{tmp_path}/out.ndjson",
        "--state-dir",
        str(tmp_path / "state"),
        *extra,
    ]
    return Shipper(args, tmp_path / "ship.log", env)


def later_scans_happened(tmp_path: Path, logs: Path) -> None:
    """Two more files appear and are shipped: at least two scans have seen everything."""
    for name in ("later1", "later2"):
        (logs / f"{name}.log").write_text(f"{name} line\n")
        wait_for_sync(lambda n=name: f"{n} line" in messages(tmp_path), timeout=20)


def test_link_out_of_the_base_directory_is_refused_once_and_counted(tmp_path: Path) -> None:
    logs = layout(tmp_path)
    sh = shipper(tmp_path, f"{logs}/*.log").start()
    try:
        sh.wait_ready()
        wait_for_sync(lambda: {"good line", "inner line"} <= set(messages(tmp_path)), timeout=20)
        wait_for_sync(lambda: sh.metric(REFUSED, input=f"file://{logs}/*.log") == 1, timeout=20)
        later_scans_happened(tmp_path, logs)
        assert sh.metric(REFUSED, input=f"file://{logs}/*.log") == 1
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert "root:x:0:0:secret" not in messages(tmp_path)
    assert sorted(messages(tmp_path)) == ["good line", "inner line", "later1 line", "later2 line"]
    log = (tmp_path / "ship.log").read_text()
    refusals = [line for line in log.splitlines() if "Not tailing" in line]
    assert len(refusals) == 1, log
    assert f"{logs}/evil.log" in refusals[0] and str(tmp_path / "outside") in refusals[0]
    assert "--follow-symlinks" in refusals[0]


def test_directory_link_below_the_base_directory_is_refused(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "web").mkdir(parents=True)
    (logs / "web" / "app.log").write_text("web line\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.log").write_text("outside line\n")
    (logs / "sneaky").symlink_to(outside)
    sh = shipper(tmp_path, f"{logs}/*/app.log").start()
    try:
        sh.wait_ready()
        wait_for_sync(lambda: messages(tmp_path) == ["web line"], timeout=20)
        wait_for_sync(lambda: sh.metric(REFUSED, input=f"file://{logs}/*/app.log") == 1)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert messages(tmp_path) == ["web line"]


@pytest.mark.parametrize("how", ["flag", "env", "config"])
def test_following_can_be_asked_for(tmp_path: Path, how: str) -> None:
    logs = layout(tmp_path)
    extra: list[str] = []
    env: dict[str, str] = {}
    if how == "flag":
        extra = ["--follow-symlinks"]
    elif how == "env":
        env = {"SIDEKICK_SHIP_FOLLOW_SYMLINKS": "true"}
    else:
        config = tmp_path / "ship.yaml"
        config.write_text("ship:\n  follow_symlinks: true\n")
        extra = ["--config", str(config)]
    sh = shipper(tmp_path, f"{logs}/*.log", *extra, env=env).start()
    try:
        sh.wait_ready()
        want = {"good line", "inner line", "root:x:0:0:secret"}
        wait_for_sync(lambda: set(messages(tmp_path)) == want, timeout=20)
        assert sh.metric(REFUSED, input=f"file://{logs}/*.log") == 0
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert sorted(messages(tmp_path)) == sorted(want)


def test_kubernetes_container_links_ship_when_the_base_holds_both(tmp_path: Path) -> None:
    # /var/log/containers/<pod>_<ns>_<c>-<id>.log -> /var/log/pods/<ns>_<pod>_<uid>/<c>/0.log
    var_log = tmp_path / "var" / "log"
    pod_dir = var_log / "pods" / "shop_web-0_1234" / "web"
    pod_dir.mkdir(parents=True)
    (pod_dir / "0.log").write_text("from the pod\n")
    (var_log / "containers").mkdir()
    (var_log / "containers" / "web-0_shop_web-abc.log").symlink_to(pod_dir / "0.log")

    # The plain pattern's base is .../containers: the links lead out of it.
    refused = shipper(tmp_path, f"{var_log}/containers/*.log").start()
    try:
        refused.wait_ready()
        pattern = f"file://{var_log}/containers/*.log"
        wait_for_sync(lambda: refused.metric(REFUSED, input=pattern) == 1, timeout=20)
        assert refused.terminate() == 0
    finally:
        refused.stop_quietly()
    assert messages(tmp_path) == []

    # container[s] moves the base up to .../log, which holds both directories.
    (tmp_path / "state").rename(tmp_path / "state.old")
    sh = shipper(tmp_path, f"{var_log}/container[s]/*.log").start()
    try:
        sh.wait_ready()
        wait_for_sync(lambda: messages(tmp_path) == ["from the pod"], timeout=20)
        assert sh.metric(REFUSED, input=f"file://{var_log}/container[s]/*.log") == 0
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()


def test_an_opened_descriptor_is_checked_by_where_it_really_points(tmp_path: Path) -> None:
    # Closes the gap between the scan's realpath check and the open: a link swapped in
    # between is caught by the descriptor's own path.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("x\n")
    (tmp_path / "outside.txt").write_text("y\n")
    finder = Finder([f"{logs}/*.log"], follow_symlinks=False)
    following = Finder([f"{logs}/*.log"], follow_symlinks=True)
    inside = os.open(logs / "a.log", os.O_RDONLY)
    outside = os.open(tmp_path / "outside.txt", os.O_RDONLY)
    try:
        assert finder.opened_inside(inside)
        assert not finder.opened_inside(outside)
        assert following.opened_inside(outside)
    finally:
        os.close(inside)
        os.close(outside)


@pytest.mark.parametrize("form", ["query", "mapping"])
def test_one_input_can_follow_symlinks_on_its_own(tmp_path: Path, form: str) -> None:
    logs = layout(tmp_path)
    config = tmp_path / "ship.yaml"
    if form == "query":
        config.write_text(f"ship:\n  inputs: ['file://{logs}/*.log?follow_symlinks=true']\n")
    else:
        config.write_text(
            f"ship:\n  inputs:\n    - url: 'file://{logs}/*.log'\n      follow_symlinks: true\n"
        )
    sh = Shipper(
        [
            "--config",
            str(config),
            "--output",
            f"file://{tmp_path}/out.ndjson",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        tmp_path / "ship.log",
    ).start()
    try:
        sh.wait_ready()
        want = {"good line", "inner line", "root:x:0:0:secret"}
        wait_for_sync(lambda: set(messages(tmp_path)) == want, timeout=20)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()


def test_an_input_saying_false_overrides_the_global_flag(tmp_path: Path) -> None:
    logs = layout(tmp_path)
    pattern = f"{logs}/*.log?follow_symlinks=false"
    sh = shipper(tmp_path, pattern, "--follow-symlinks").start()
    try:
        sh.wait_ready()
        wait_for_sync(lambda: {"good line", "inner line"} <= set(messages(tmp_path)), timeout=20)
        wait_for_sync(lambda: sh.metric(REFUSED, input=f"file://{logs}/*.log") == 1, timeout=20)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert "root:x:0:0:secret" not in messages(tmp_path)


def test_a_follow_symlinks_value_that_is_no_boolean_is_one_sentence(tmp_path: Path) -> None:
    given = f"file://{tmp_path}/*.log?follow_symlinks=yesplease"
    proc = subprocess.run(
        [*SIDEKICK, "ship", "--input", given, "--output", "stdout:", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "follow_symlinks 'yesplease' is neither true nor false" in proc.stderr
    assert "write follow_symlinks=true or follow_symlinks=false" in proc.stderr
