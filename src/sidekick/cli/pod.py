"""`sidekick up` and `sidekick logs` commands (being built)."""

from __future__ import annotations

import click


@click.command()
def up() -> None:
    """Not available yet."""
    raise click.UsageError("sidekick up is not available yet")


commands: list[click.Command] = [up]
