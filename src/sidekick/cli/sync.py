"""`sidekick sync` command (being built)."""

from __future__ import annotations

import click


@click.command()
def sync() -> None:
    """Not available yet."""
    raise click.UsageError("sidekick sync is not available yet")
