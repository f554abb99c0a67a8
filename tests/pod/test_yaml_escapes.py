"""A manifest kubectl accepts runs: an escaped single quote inside double quotes."""

from __future__ import annotations

from pathlib import Path

from tests.pod.examples import example, run_to_end


def test_escaped_single_quote_in_a_manifest_runs(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("quoted-escapes.yaml"))
    assert done.code == 0, done.err
    assert done.lines("quotes/echo") == ["it works and this"]
