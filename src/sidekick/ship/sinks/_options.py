"""An output's URL and options, read the same way by every aggregator output.

Elasticsearch, Loki, OTLP, syslog and ``http:`` take their settings alike, and a mistake in
any of them is answered alike, with one clear ``ConfigError`` naming the output, the option
and the fix: the URL is split into a ``Target`` (a password in it, a bad port, no host or a
#fragment refused), its query holds the options unless it belongs to the destination, the
config file's options are overridden by the query and converted into the output's typed
struct, ``A=x,B=y`` lists are parsed, and a ``ca_file`` becomes the TLS context (refused on a
URL that is not TLS).

URLs are shown (in messages, sink names and so metric labels) through
``sidekick.core.redact.redact_url``: ``Target.url`` never holds a password or a token.

Apart from ``_http`` because syslog, which speaks no HTTP, reads its URL and options the same
way.

Left out: secret files (``_credentials``), and the inputs' URLs (``sidekick.ship.sources``).
"""

from __future__ import annotations

import re
import ssl
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import msgspec

from sidekick.core.config import field_path
from sidekick.core.errors import ConfigError
from sidekick.core.redact import redact_url

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Target:
    """The parts of an output URL every sink uses."""

    url: str  # the URL as the user wrote it, secrets masked (redact_url): for messages
    scheme: str
    tls: bool
    host: str
    port: int
    path: str  # as written, not percent-decoded: it may hold a strftime pattern
    username: str | None
    query: dict[str, str]

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.hostport}"


def parse_target(url: str, *, default_port: int, query_options: bool = True) -> Target:
    """Split an output URL; refuse what would leak or be silently ignored.

    ``query_options``: the query holds the output's options (each given once); otherwise it
    is part of the destination and left alone.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced "[" of an IPv6 address
        raise ConfigError(f"output {shown!r} is not a valid URL ({exc}); fix it") from None
    scheme = parts.scheme.lower()
    if parts.password is not None:
        raise ConfigError(
            f"output {shown!r} has a password in the URL; put it in a file and set "
            "the password_file option instead"
        )
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(
            f"output {shown!r} has an invalid port; use HOST:PORT with a port from 1 to 65535"
        ) from None
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"output {shown!r} names no host; write it as {scheme}://HOST:PORT/...")
    if parts.fragment:
        raise ConfigError(f"output {shown!r} has a #fragment; remove it")
    query: dict[str, str] = {}
    if query_options:
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in query:
                raise ConfigError(f"output {shown!r} sets option {key!r} twice; keep one")
            query[key] = value
    return Target(
        url=shown,
        scheme=scheme,
        tls=scheme == "https" or scheme.endswith("+https"),
        host=host,
        port=port,
        path=parts.path,
        username=parts.username,
        query=query,
    )


def load_options(kind: type[T], target: Target, options: Mapping[str, Any]) -> T:
    """Build the sink's option struct from the config file's options, overridden by the URL query."""
    data: dict[str, Any] = dict(options)
    data.update(target.query)
    try:
        return msgspec.convert(data, kind, strict=False)
    except msgspec.ValidationError as exc:
        path, problem = field_path(exc)
        text = str(exc)
        unknown = re.search(r"unknown field `([^`]*)`", text)
        if unknown:
            known = ", ".join(sorted(getattr(kind, "__struct_fields__", ())))
            raise ConfigError(
                f"output {target.url!r}: unknown option {unknown.group(1)!r}; use one of {known}"
            ) from None
        where = f"option {path!r}" if path else "its options"
        fix = "fix it in the URL query or the output's options"
        choices = typing.get_args(typing.get_type_hints(kind).get(path))
        if choices and all(isinstance(c, str) for c in choices):
            fix = "use one of " + ", ".join(choices)
        elif problem.startswith("expected bool"):
            fix = "use true or false"
        elif problem.startswith("expected int"):
            fix = "use a whole number"
        raise ConfigError(f"output {target.url!r}: {where}: {problem}; {fix}") from None


def option_error(target: Target, option: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"output {target.url!r}: option {option!r} {problem}; {fix}")


# What RFC 9110 allows in a header name, and the characters no header value may hold (a line
# break would inject a header: aiohttp refuses such a request, at every retry).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_headers(target: Target, headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` (the ``headers`` option), refused at start if a name or value cannot be
    sent. A value is never shown: it may be a token."""
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise option_error(
                target,
                "headers",
                f"has {name!r}, which is not an HTTP header name",
                "use letters, digits and '-'",
            )
        if CONTROL_CHARS.search(value):
            raise option_error(
                target,
                "headers",
                f"has a value for {name!r} with a line break or another control character",
                "write it on one line",
            )
    return dict(headers)


def parse_pairs(
    target: Target, option: str, text: str, *, value_required: bool, example: str
) -> dict[str, str]:
    """Parse a URL-query style list ``A=x,B=y`` into a dict, naming the bad part on error."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or (value_required and not value.strip()):
            what = "NAME=FIELD" if value_required else "NAME=VALUE"
            raise option_error(
                target, option, f"has {part!r}, which is not {what}", f"write it like {example}"
            )
        out[name.strip()] = value.strip()
    return out


def tls_context(target: Target, ca_file: str | None) -> ssl.SSLContext | None:
    if ca_file is not None and not target.tls:
        kind = target.scheme.split("+")[0]
        raise option_error(
            target,
            "ca_file",
            "is set but the URL is not TLS",
            "use the https:// scheme" if kind == "http" else f"use the {kind}+https:// scheme",
        )
    if not target.tls:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise option_error(
            target,
            "ca_file",
            f"names {ca_file!r}, which is not a readable PEM bundle ({exc})",
            "point it at the CA certificate file",
        ) from None
