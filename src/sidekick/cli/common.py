"""Options and helpers every program's command shares."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from sidekick.core.addr import HostPort, parse_hostport
from sidekick.core.durations import parse_duration
from sidekick.core.logs import setup_logging

F = TypeVar("F", bound=Callable[..., Any])


def duration_option(value: str | None, name: str) -> float | None:
    return None if value is None else parse_duration(value, name=name)


def admin_addr(value: str) -> HostPort:
    return parse_hostport(value, name="--admin-addr")


def common_options(default_admin: str = "0.0.0.0:8088") -> Callable[[F], F]:
    """--config, --admin-addr, --shutdown-timeout, --log-format, --log-level."""

    def deco(f: F) -> F:
        opts = [
            click.option(
                "--config",
                "config_file",
                type=click.Path(dir_okay=False),
                help="YAML config file; flags and environment variables override it.",
            ),
            click.option(
                "--admin-addr",
                default=default_admin,
                show_default=True,
                help="HOST:PORT for /healthz, /readyz and /metrics (port 0 picks a free port).",
            ),
            click.option(
                "--shutdown-timeout",
                default="30s",
                show_default=True,
                help="How long SIGTERM may take to drain before work is cancelled.",
            ),
            click.option(
                "--log-format",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                help="Log lines as plain text or one JSON object per line.",
            ),
            click.option(
                "--log-level",
                type=click.Choice(["debug", "info", "warning", "error"]),
                default="info",
                show_default=True,
                help="Least severe level to log.",
            ),
        ]
        for opt in reversed(opts):
            f = opt(f)
        return f

    return deco


def init_logging(params: dict[str, Any]) -> None:
    setup_logging(params.get("log_format", "text"), params.get("log_level", "info"))


def overrides(ctx: click.Context, mapping: dict[str, str]) -> dict[str, Any]:
    """Config overrides for the params the user set by flag or environment variable.

    ``mapping`` maps a click parameter name to a dotted config path.
    """
    out: dict[str, Any] = {}
    for param, dotted in mapping.items():
        source = ctx.get_parameter_source(param)
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            value = ctx.params[param]
            if isinstance(value, tuple):
                value = list(value)
            out[dotted] = value
    return out


def key_values(items: Iterable[str], flag: str) -> dict[str, str]:
    """Parse repeated ``k=v`` flags."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE; write it like {flag} env=prod")
        out[key] = value
    return out
