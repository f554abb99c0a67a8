"""Every git-sync v4 flag, as docs/sync.md's table lists it, in flag and in variable form.

The table is the contract: each row's flag and variable must give the same settings (seen
through ``--print-config``), settings that differ from the defaults unless the row says the
flag has no effect, or be refused with the row's message. Options of the command that the
table does not list must be sidekick's own, so neither the table nor the code can drift.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from sidekick.cli.sync import sync as sync_command
from tests.conftest import REPO, SIDEKICK
from tests.sync.conftest import GIT_ENV, CliSync, Upstream, wait_for

DOC = REPO / "docs" / "sync.md"
# Options of `sidekick sync` that git-sync does not have.
SIDEKICK_ONLY = {
    "--config", "--admin-addr", "--shutdown-timeout", "--log-format", "--log-level",
    "--print-config", "--trigger-secret-file", "--trigger-min-interval", "--backoff-initial",
    "--backoff-max", "--github-app-private-key",
}  # fmt: skip


@dataclass(frozen=True)
class Row:
    flag: str | None
    variable: str | None
    status: str
    example: str | None
    notes: str

    @property
    def id(self) -> str:
        return self.flag or self.variable or "?"


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


@cache
def table() -> tuple[Row, ...]:
    text = DOC.read_text()
    section = text[text.index("## git-sync v4 flags") :]
    section = section[: section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| flag |"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 5, line
        flags = [s for s in code_spans(cells[0]) if s.startswith("--")]
        variables = code_spans(cells[1])
        examples = code_spans(cells[3])
        rows.append(
            Row(
                flag=flags[-1] if flags else None,
                variable=variables[0] if variables else None,
                status=cells[2],
                example=examples[0] if examples else None,
                notes=cells[4],
            )
        )
    return tuple(rows)


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in GIT_ENV.items() if not k.startswith(("GITSYNC_", "GIT_SYNC_"))}
    return subprocess.run(
        [*SIDEKICK, "sync", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


@pytest.fixture(scope="module")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # --repo and --root come from the config file, so their rows can override them both ways.
    path = tmp_path_factory.mktemp("flags") / "sync.yaml"
    path.write_text("sync:\n  repo: file:///srv/site\n  root: /tmp/sidekick-flags-root\n")
    return path


@cache
def baseline(config: Path) -> str:
    proc = run(["--config", str(config), "--print-config"])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_table_lists_every_git_sync_flag_once() -> None:
    rows = table()
    assert len(rows) >= 60
    names = [r.id for r in rows]
    assert len(names) == len(set(names))
    for row in rows:
        assert row.status.split(" ")[0] in ("same", "different", "refused"), row
    counts = re.search(
        r"Counts: (\d+) same .*?, (\d+) different .*?, (\d+) refused", DOC.read_text(), re.S
    )
    assert counts is not None
    same = sum(r.status.startswith("same") for r in rows)
    different = sum(r.status.startswith("different") for r in rows)
    refused = sum(r.status == "refused" for r in rows)
    assert (same, different, refused) == tuple(int(n) for n in counts.groups())


def test_every_option_of_the_command_is_in_the_table_or_sidekick_s_own() -> None:
    listed = {r.flag for r in table() if r.flag} | {"--help", "--verbose", "--version", "--man"}
    for param in sync_command.params:
        longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        if not longs:
            continue
        assert any(o in listed or o in SIDEKICK_ONLY for o in longs), longs


@pytest.mark.parametrize("row", table(), ids=lambda r: r.id)
def test_flag_and_variable_act_alike(row: Row, base_config: Path) -> None:
    if row.example is None:
        # --help, --version, --man: print and exit 0 (git-sync has no variable for them).
        proc = run([row.flag or ""])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip()
        return
    common = ["--config", str(base_config), "--print-config"]
    forms = []
    if row.flag is not None:
        forms.append(([*common, f"{row.flag}={row.example}"], None))
    if row.variable is not None:
        forms.append((common, {row.variable: row.example}))
    with ThreadPoolExecutor(len(forms)) as pool:
        results = list(pool.map(lambda f: run(*f), forms))
    if row.status == "refused":
        message = code_spans(row.notes)[0]
        for proc in results:
            assert proc.returncode == 2, proc.stderr
            assert message in proc.stderr
            assert "Traceback" not in proc.stderr
        return
    for proc in results:
        assert proc.returncode == 0, proc.stderr
        assert "Ignoring environment variable" not in proc.stderr
    outputs = {proc.stdout for proc in results}
    assert len(outputs) == 1, "the flag and the variable gave different settings"
    if "(no effect)" in row.status:
        assert outputs == {baseline(base_config)}
    else:
        assert outputs != {baseline(base_config)}, "the setting changed nothing"


def settings(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    proc = run(["--repo", "file:///srv/site", "--root", "/tmp/r", "--print-config", *args], env)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_verbosity_takes_pflag_forms_and_maps_onto_log_levels() -> None:
    assert settings("-v=2")["log_level"] == "debug"
    assert settings("-v", "3")["log_level"] == "debug"
    assert settings("-v=1")["log_level"] == "info"
    assert settings(env={"GITSYNC_VERBOSE": "5"})["log_level"] == "debug"
    assert settings("-v=5", "--log-level", "warning")["log_level"] == "warning"
    bad = run(["--repo", "file:///x", "--root", "/tmp/r", "-v=lots"])
    assert bad.returncode == 2
    assert "-v 'lots' is not a number" in bad.stderr


def test_v2_logs_debug_lines_in_a_real_sync(upstream: Upstream, tmp_path: Path) -> None:
    quiet = run(["--repo", upstream.url, "--root", str(tmp_path / "a"), "--one-time"])
    loud = run(["--repo", upstream.url, "--root", str(tmp_path / "b"), "--one-time", "-v=2"])
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert " DEBUG " not in quiet.stderr
    assert " DEBUG " in loud.stderr


def test_cookie_file_is_git_sync_s_boolean_or_a_path() -> None:
    def cookie(*args: str) -> object:
        sync = settings(*args)["sync"]
        assert isinstance(sync, dict)
        return sync["cookie_file"]

    assert cookie("--cookie-file") == "/etc/git-secret/cookie_file"
    assert cookie("--cookie-file=true") == "/etc/git-secret/cookie_file"
    assert cookie("--cookie-file=false") is None
    assert cookie("--cookie-file=/secrets/cookies") == "/secrets/cookies"


def test_git_config_add_pairs_follow_git_config() -> None:
    sync = settings(
        "--git-config", "a.b:1", "--git-config-add", "c.d:2", "--git-config-add", "e.f:3"
    )["sync"]
    assert isinstance(sync, dict)
    assert sync["git_config"] == "a.b:1,c.d:2,e.f:3"


def test_deprecated_flags_override_their_v4_names_with_a_warning() -> None:
    proc = run(
        [
            "--repo",
            "file:///x",
            "--root",
            "/tmp/r",
            "--ref",
            "main",
            "--branch",
            "dev",
            "--print-config",
        ]
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["sync"]["ref"] == "dev"
    assert "--branch is deprecated (git-sync v3); using it as --ref." in proc.stderr
    both = run(["--repo", "file:///x", "--root", "/tmp/r", "--branch", "a", "--rev", "b"])
    assert both.returncode == 2
    assert "--branch and --rev are both set" in both.stderr
    assert (
        run(
            [
                "--repo",
                "file:///x",
                "--root",
                "/tmp/r",
                "--change-permissions",
                "0",
                "--print-config",
            ]
        ).returncode
        == 0
    )


def test_an_unknown_gitsync_variable_is_named_in_one_warning() -> None:
    proc = run(
        ["--repo", "file:///x", "--root", "/tmp/r", "--print-config"],
        {"GITSYNC_PERIODD": "5s", "GITSYNC_PERIOD": "5s", "OTHER_VAR": "1"},
    )
    assert proc.returncode == 0
    lines = [line for line in proc.stderr.splitlines() if "Ignoring environment variable" in line]
    assert len(lines) == 1
    assert "GITSYNC_PERIODD" in lines[0]


def test_help_answers_to_question_mark_too() -> None:
    proc = run(["-?"])
    assert proc.returncode == 0
    assert "--pre-publish-exechook-command" in proc.stdout


def test_sync_on_signal_triggers_a_sync(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    root = tmp_path / "root"
    proc = cli_sync(
        ["--repo", upstream.url, "--root", str(root), "--period", "1h",
         "--trigger-min-interval", "0", "--sync-on-signal", "USR1"]
    )  # fmt: skip
    proc.wait_ready(60)
    upstream.commit({"index.html": "rev 1\n"})
    proc.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: (root / "upstream" / "index.html").read_text() == "rev 1\n", 60)
    assert "Received SIGUSR1, syncing now." in proc.stop()


def test_http_pprof_serves_stacks_and_501_for_go_profiles(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    proc = cli_sync(["--repo", upstream.url, "--root", str(tmp_path / "a"), "--http-pprof"])
    proc.wait_ready(60)
    status, body = proc.request("/debug/pprof/goroutine")
    assert status == 200
    assert "task sync loop:" in body
    assert "thread MainThread:" in body
    assert proc.request("/debug/pprof/")[0] == 200
    status, body = proc.request("/debug/pprof/profile")
    assert status == 501
    assert "Python program" in body
    proc.stop()
    off = cli_sync(["--repo", upstream.url, "--root", str(tmp_path / "b")])
    off.wait_ready(60)
    status, body = off.request("/debug/pprof/goroutine")
    assert "task sync loop" not in body
    with urllib.request.urlopen(off.url("/metrics"), timeout=5) as resp:
        assert resp.status == 200
    off.stop()


def test_a_v3_variable_overrides_its_v4_name_as_in_git_sync() -> None:
    """git-sync reads GITSYNC_<NAME>, then each older name it still knows, the last one set
    winning, with a warning for each older name and one naming the override."""
    both = {"GITSYNC_PERIOD": "20s", "GIT_SYNC_PERIOD": "30s"}
    proc = run(["--repo", "file:///srv/site", "--root", "/tmp/r", "--print-config"], both)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sync"]["period"] == 30.0
    assert "GIT_SYNC_PERIOD is deprecated" in proc.stderr
    assert "GITSYNC_PERIOD is overridden by GIT_SYNC_PERIOD" in proc.stderr
    hosts = {"GIT_SYNC_KNOWN_HOSTS": "true", "GIT_KNOWN_HOSTS": "false"}
    assert (
        settings(env={"GITSYNC_SSH_KNOWN_HOSTS": "true", **hosts})["sync"]
        == settings("--ssh-known-hosts=false")["sync"]
    )
    # A name git-sync does not read for the flag ranks below GITSYNC_<NAME>.
    assert settings(env={"GITSYNC_REF": "v1", "GIT_SYNC_REF": "v2"})["sync"]["ref"] == "v1"
    # The sidekick name wins over all of them, and a flag over every variable.
    own = {**both, "SIDEKICK_SYNC_PERIOD": "40s"}
    assert settings(env=own)["sync"]["period"] == 40.0
    assert settings("--period", "50s", env=own)["sync"]["period"] == 50.0


def test_durations_take_every_form_go_reads() -> None:
    """git-sync parses durations with Go's time.ParseDuration, which takes '.5s' and '1.s'."""
    assert settings(env={"GITSYNC_PERIOD": ".5s"})["sync"]["period"] == 0.5
    assert settings("--period", "1.s")["sync"]["period"] == 1.0
    assert settings("--sync-timeout", "1m.5s")["sync"]["sync_timeout"] == 60.5


def test_an_empty_flag_value_leaves_the_feature_off(upstream: Upstream, tmp_path: Path) -> None:
    """git-sync tests these settings against "" (a template often renders an unused one
    as --webhook-url=""), so an empty value is no hook, no credentials, no file."""
    empty = [
        "--webhook-url", "", "--askpass-url", "", "--exechook-command", "",
        "--pre-publish-exechook-command", "", "--touch-file", "", "--error-file", "",
        "--sparse-checkout-file", "", "--username", "", "--password-file", "",
    ]  # fmt: skip
    root = tmp_path / "root"
    proc = run(["--repo", upstream.url, "--root", str(root), "--one-time", *empty])
    assert proc.returncode == 0, proc.stderr
    assert (root / "upstream" / "index.html").exists()
