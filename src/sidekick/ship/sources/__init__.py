"""Inputs, chosen by the scheme of ``--input``, and the per-input options in its query.

Each module exposes ``create(spec: InputSpec, ctx: SourceContext) -> Source``; this table maps
schemes to modules and imports them lazily so an unused input costs nothing at start-up.
``file:///var/log/app/*.log`` tails files; ``http://HOST:PORT`` serves the ingest endpoint.

An input may carry its own parser and multi-line start after a ``?``, like
``file:///var/log/nginx/access.log?parser=nginx`` or
``file:///var/log/app/*.log?multiline_start=%5E%5Cd%7B4%7D``; inputs that do not say use the
global ``--parser`` and ``--multiline-start``. ``resolve_input`` reads and checks them once,
before anything starts. Values are percent-decoded (``%26`` is ``&``, ``%25`` is ``%``) but a
``+`` stays a plus, because regular expressions use it far more often than a space. The first
``?`` always starts the options, so a ``file://`` glob matches a literal question mark with
``[?]``. A ``file://`` input may also say ``?follow_symlinks=true`` (or ``false``) to override
the global ``follow_symlinks``, and carry ``exclude`` (repeatable) and ``k8s_metadata``
(``_file_options``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from urllib.parse import unquote

from sidekick.core.errors import ConfigError
from sidekick.core.redact import redact_url
from sidekick.ship.sources.base import InputSpec, Source, SourceContext

if TYPE_CHECKING:
    from sidekick.ship.config import InputConfig, ShipConfig
    from sidekick.ship.records import Parser

SCHEMES: dict[str, str] = {
    "file": "sidekick.ship.sources.tail",
    "http": "sidekick.ship.sources.http",
    "https": "sidekick.ship.sources.http",
    "otlp": "sidekick.ship.sources.otlp",
    "otlp+grpc": "sidekick.ship.sources.otlp_grpc",
    "forward": "sidekick.ship.sources.forward",
    "syslog+udp": "sidekick.ship.sources.syslog",
    "syslog+tcp": "sidekick.ship.sources.syslog",
    "syslog+unix": "sidekick.ship.sources.syslog",
}

# The options an input URL may carry; the same names as the global settings they override.
OPTIONS = ("parser", "multiline_start", "follow_symlinks", "exclude", "k8s_metadata")
# Options that may be given several times; their values are joined with commas.
_REPEATABLE = ("exclude",)
# Schemes whose records are whole already (multi-line joining applies to tailed lines).
_NO_MULTILINE = (
    "http",
    "https",
    "otlp",
    "otlp+grpc",
    "forward",
    "syslog+udp",
    "syslog+tcp",
    "syslog+unix",
)


def input_scheme(spec: str) -> str:
    scheme, sep, _ = spec.partition(":")
    return scheme.lower() if sep else ""


def check_input(spec: str) -> None:
    """Raise ``ConfigError`` if ``spec`` names no known kind of input."""
    scheme = input_scheme(spec)
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}:" for s in SCHEMES)
        raise ConfigError(
            f"--input {redact_url(spec)!r}: unknown scheme {scheme!r}; use one of {known} "
            "(like file:///var/log/app/*.log or http://0.0.0.0:8081)"
        )


def split_options(given: str) -> tuple[str, dict[str, str]]:
    """``URL?k=v&k2=v2`` -> ``(URL, {k: v, k2: v2})``; ConfigError for anything else after ``?``."""
    url, sep, query = given.partition("?")
    options: dict[str, str] = {}
    if not sep:
        return url, options
    given = redact_url(given)  # from here on only shown in messages
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(
                f"--input {given!r}: {item!r} after '?' is not an option like parser=json; "
                "write input options as ?parser=KIND&multiline_start=REGEX "
                "(to match a literal ? in a file glob, write [?])"
            )
        if key not in OPTIONS:
            raise ConfigError(
                f"--input {given!r}: unknown option {key!r}; use {' or '.join(OPTIONS)} "
                "(to match a literal ? in a file glob, write [?])"
            )
        if key in options and key not in _REPEATABLE:
            raise ConfigError(f"--input {given!r}: option {key!r} is given twice; give it once")
        try:
            value = unquote(value, errors="strict")
            options[key] = f"{options[key]},{value}" if key in options else value
        except UnicodeDecodeError:
            raise ConfigError(
                f"--input {given!r}: option {key!r} is not percent-encoded UTF-8; "
                "encode the value's characters as UTF-8 bytes"
            ) from None
    return url, options


def resolve_input(entry: str | InputConfig, cfg: ShipConfig) -> InputSpec:
    """The input ``entry`` (a URL string or a config mapping) with its options built and checked.

    Options the input does not give come from ``cfg.parser`` and ``cfg.multiline_start``.
    """
    if isinstance(entry, str):
        url, options = split_options(entry)
        given = redact_url(entry)
    else:
        url, options = split_options(entry.url)
        given = redact_url(entry.url)
        for key in OPTIONS:
            value = getattr(entry, key)
            if value is None:
                continue
            if key in options:
                raise ConfigError(
                    f"input {given!r} gives {key} both in its URL and as a field; give it once"
                )
            if isinstance(value, list):
                options[key] = ",".join(value)
            else:
                options[key] = value if isinstance(value, str) else str(value).lower()
    check_input(url)
    scheme = input_scheme(url)
    parser_spec = options.get("parser", cfg.parser)
    parser = _make_parser(parser_spec, given if "parser" in options else None)
    multiline = options.get("multiline_start")
    if multiline is not None:
        if scheme in _NO_MULTILINE:
            raise ConfigError(
                f"--input {given!r}: multiline_start applies to file:// inputs only (ingested "
                "records arrive whole); remove it"
            )
        check_multiline(multiline, f"--input {given!r}: multiline_start {multiline!r}")
    elif scheme not in _NO_MULTILINE:
        multiline = cfg.multiline_start
    follow: bool | None = None
    if "follow_symlinks" in options:
        word = options["follow_symlinks"].lower()
        if scheme in _NO_MULTILINE:
            raise ConfigError(
                f"--input {given!r}: follow_symlinks applies to file:// inputs only; remove it"
            )
        if word not in ("true", "false"):
            raise ConfigError(
                f"--input {given!r}: follow_symlinks {options['follow_symlinks']!r} is neither "
                "true nor false; write follow_symlinks=true or follow_symlinks=false"
            )
        follow = word == "true"
    from sidekick.ship.sources._file_options import file_options

    exclude, k8s_metadata, multiline = file_options(
        options,
        given=given,
        file_input=scheme == "file",
        parser_spec=parser_spec,
        multiline=multiline,
        own_multiline="multiline_start" in options,
    )
    return InputSpec(
        url=url,
        given=given,
        parser_spec=parser_spec,
        parser=parser,
        multiline_start=multiline,
        follow_symlinks=follow,
        exclude=exclude,
        k8s_metadata=k8s_metadata,
    )


def _make_parser(spec: str, given: str | None) -> Parser | None:
    """The parser ``spec`` names (``None`` for raw); errors name the input that chose it."""
    if spec == "raw":
        return None
    from sidekick.ship.parsers import create_parser

    try:
        return create_parser(spec)
    except ConfigError as exc:
        if given is None:
            raise
        # The parsers word their errors for the global flag; name the input instead.
        message = str(exc).replace(f"--parser {spec!r}", f"--input {given!r}: parser {spec!r}", 1)
        raise ConfigError(message) from None


def check_multiline(pattern: str | None, label: str | None = None) -> None:
    """ConfigError if ``pattern`` is not a valid regular expression; ``label`` names it."""
    if pattern is None:
        return
    import re

    try:
        re.compile(pattern)
    except re.error as exc:
        what = label or f"--multiline-start {pattern!r}"
        raise ConfigError(
            f"{what} is not a valid regular expression ({exc}); fix the pattern"
        ) from None


def create_source(spec: InputSpec | str, ctx: SourceContext) -> Source:
    """The source for ``spec``; a plain URL string takes its options from ``ctx.config``."""
    if isinstance(spec, str):
        spec = resolve_input(spec, ctx.config)
    module = importlib.import_module(SCHEMES[input_scheme(spec.url)])
    source: Source = module.create(spec, ctx)
    return source
