"""What one container reports: its state (Waiting, Running, Terminated), reason, message,
exit code, readiness and restarts, as the one-line summary ``up`` prints, and the helpers its
status file uses (shell-style exit codes, RFC 3339 times).

Left out: when the state changes and the status file itself (``container.ContainerRunner``,
``runner.PodRunner``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code(returncode: int) -> int:
    """A shell-style exit code: killed by signal N is 128+N, as Kubernetes reports it."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Status:
    state: str = "Waiting"  # Waiting | Running | Terminated
    reason: str = "PodInitializing"
    message: str = ""
    exit_code: int | None = None
    started: bool = False
    ready: bool = False
    restarts: int = 0
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None

    def summary(self) -> str:
        if self.state == "Running":
            word = "Ready" if self.ready else ("Running" if self.started else "Running, starting")
            text = word
        elif self.state == "Terminated":
            text = f"Terminated ({self.reason}, exit code {self.exit_code})"
        else:
            text = f"Waiting ({self.reason})"
        if self.message and self.state != "Running":
            # A termination message may span lines; the status line stays one line.
            one = " ".join(self.message.split())
            text += f": {one if len(one) <= 200 else one[:199] + '…'}"
        return f"{text}, restarts {self.restarts}"
