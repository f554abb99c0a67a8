"""`sidekick ship` command (being built)."""

from __future__ import annotations

import click


@click.command()
def ship() -> None:
    """Not available yet."""
    raise click.UsageError("sidekick ship is not available yet")
