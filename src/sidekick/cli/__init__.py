"""The ``sidekick`` command: the only place that parses flags and turns errors into exit codes.

Each program's command lives in its own module here (``ship``, ``sync``, ``up``); they build
a typed config tree and hand it to the program. A ``UserError`` anywhere becomes one line on
stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from sidekick import __version__
from sidekick.core.errors import UserError
from sidekick.core.redact import redact_text

# Each command and the module that defines it: a module is imported only when its command
# runs (or for --help), so `sidekick up` does not pay for the shipper's imports (~0.2 s).
COMMANDS = {
    "ship": ("sidekick.cli.ship", "ship"),
    "ship-tap": ("sidekick.cli.ship", "ship_tap"),
    "sync": ("sidekick.cli.sync", "sync"),
    "up": ("sidekick.cli.pod", "up"),
    "logs": ("sidekick.cli.pod", "logs"),
    "down": ("sidekick.cli.pod", "down"),
    "exec": ("sidekick.cli.exec", "exec_command"),
}


class SidekickGroup(click.Group):
    """A click group that prints user errors as one sentence and exits 2, and imports a
    command's module only when that command is wanted."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            # Messages mask the URLs they name; this also covers text they quote.
            click.echo(f"sidekick: error: {redact_text(str(exc))}", err=True)
            sys.exit(2)


@click.group(cls=SidekickGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sidekick")
def main() -> None:
    """Sidecars for Kubernetes Pods.

    \b
    ship   ship log files and HTTP-posted logs to an aggregator, losing no line
    sync   keep a git ref published into a shared volume, atomically
    up     run Pod manifests on this machine with the kubelet's lifecycle rules
    """
