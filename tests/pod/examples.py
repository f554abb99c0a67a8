"""The manifests in tests/pod/manifests/ (written in the style of the Kubernetes
documentation's examples), and running ``sidekick up`` on one to its end."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import SIDEKICK

MANIFESTS = Path(__file__).resolve().parent / "manifests"


def example(name: str, **subs: str) -> str:
    """The text of ``manifests/NAME``, with ``__KEY__`` placeholders replaced."""
    text = (MANIFESTS / name).read_text()
    for key, value in subs.items():
        text = text.replace(f"__{key.upper()}__", value)
    return text


@dataclass
class Finished:
    code: int
    out: str
    err: str
    run_dir: Path

    def lines(self, prefix: str) -> list[str]:
        """Output lines of ``pod/container``, without the prefix."""
        head = prefix + " | "
        out = []
        for line in self.out.splitlines():
            if line.startswith(prefix + " "):
                out.append(line.split(" | ", 1)[1] if " | " in line else "")
            elif line.startswith(head):
                out.append(line[len(head) :])
        return out

    def status(self, pod: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / pod / "status.json").read_text())
        return data

    def container(self, pod: str, name: str) -> dict[str, Any]:
        s = self.status(pod)
        for c in s["initContainerStatuses"] + s["containerStatuses"]:
            if c["name"] == name:
                return dict(c)
        raise KeyError(name)


def run_to_end(tmp_path: Path, text: str, *args: str, timeout: float = 90) -> Finished:
    """``sidekick up`` on ``text`` until it exits by itself (Pods that complete)."""
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            *SIDEKICK,
            "up",
            str(path),
            "--run-dir",
            str(run_dir),
            "--no-color",
            "--fast-backoff",
            "--admin-addr",
            "off",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )
    return Finished(result.returncode, result.stdout, result.stderr, run_dir)
