"""Inputs, chosen by the scheme of ``--input``.

Each module exposes ``create(spec: str, ctx: SourceContext) -> Source``; this table maps
schemes to modules and imports them lazily so an unused input costs nothing at start-up.
``file:///var/log/app/*.log`` tails files; ``http://HOST:PORT`` serves the ingest endpoint.
"""

from __future__ import annotations

import importlib

from sidekick.core.errors import ConfigError
from sidekick.ship.sources.base import Source, SourceContext

SCHEMES: dict[str, str] = {
    "file": "sidekick.ship.sources.tail",
    "http": "sidekick.ship.sources.http",
    "https": "sidekick.ship.sources.http",
}


def input_scheme(spec: str) -> str:
    scheme, sep, _ = spec.partition(":")
    return scheme.lower() if sep else ""


def check_input(spec: str) -> None:
    """Raise ``ConfigError`` if ``spec`` names no known kind of input."""
    scheme = input_scheme(spec)
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}:" for s in SCHEMES)
        raise ConfigError(
            f"--input {spec!r}: unknown scheme {scheme!r}; use one of {known} "
            "(like file:///var/log/app/*.log or http://0.0.0.0:8081)"
        )


def create_source(spec: str, ctx: SourceContext) -> Source:
    check_input(spec)
    module = importlib.import_module(SCHEMES[input_scheme(spec)])
    source: Source = module.create(spec, ctx)
    return source
