"""The ``sidekick`` command: the only place that parses flags and turns errors into exit codes.

Each program's command lives in its own module here (``ship``, ``sync``, ``up``); they build
a typed config tree and hand it to the program. A ``UserError`` anywhere becomes one line on
stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from sidekick import __version__
from sidekick.core.errors import UserError
from sidekick.core.redact import redact_text


class SidekickGroup(click.Group):
    """A click group that prints user errors as one sentence and exits 2."""

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


def _register() -> None:
    from sidekick.cli import pod, ship, sync
    from sidekick.cli.exec import exec_command

    main.add_command(ship.ship)
    main.add_command(ship.ship_tap)
    main.add_command(sync.sync)
    for cmd in pod.commands:
        main.add_command(cmd)
    main.add_command(exec_command)


_register()
