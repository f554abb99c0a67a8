"""stdin and tty are named in a warning: containers here get no terminal and no input."""

from __future__ import annotations

from pathlib import Path

from tests.pod.examples import example, run_to_end


def test_stdin_and_tty_are_warned_about_and_the_container_reads_nothing(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("stdin-tty.yaml"))
    assert done.code == 0, done.err
    warning = [line for line in done.err.splitlines() if "stdin: true" in line]
    assert len(warning) == 1
    assert "container 'shell' sets stdin: true, stdinOnce: true, tty: true" in warning[0]
    assert "WARNING" in warning[0]
    assert done.lines("interactive/shell") == ["no input"]
