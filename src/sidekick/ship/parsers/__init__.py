"""Parsers: turn each record's ``message`` into structured fields, a batch at a time.

``create_parser(spec)`` builds one from the ``--parser`` value:

=================  ===============================================================
``raw``            nothing is parsed; records keep ``message`` as read
``json``           a JSON object message is merged into the record (``json.py``)
``nginx``          nginx combined access lines and error-log lines (``nginx.py``)
``apache``         Apache combined/common access and error-log lines (``apache.py``)
``regex:PATTERN``  named groups become fields, ``__`` in a name is a dot (``regex.py``)
``cri``            containerd / CRI-O container logs, partial lines joined (``cri.py``)
``docker``         Docker json-file container logs, partial lines joined (``docker.py``)
=================  ===============================================================

Every parser follows the ``Parser`` protocol of :mod:`sidekick.ship.records`: ``parse(records)``
enriches the records in place and never drops, reorders or raises on one; a line a parser
cannot read keeps its message unchanged and gets ``log.parse_error`` saying why.

Joining multi-line records (tracebacks) happens before parsing, in
:mod:`sidekick.ship.parsers.multiline`, because it decides which bytes form a record and so
where a file's checkpoint may stop.
"""

from __future__ import annotations

from sidekick.core.errors import ConfigError
from sidekick.ship.records import Parser, Record

__all__ = ["PARSER_NAMES", "RawParser", "create_parser"]

PARSER_NAMES = ("raw", "json", "nginx", "apache", "cri", "docker", "regex:PATTERN")


class RawParser:
    """Leaves records as they are; the default."""

    name = "raw"

    def parse(self, records: list[Record]) -> None:
        return None


def create_parser(spec: str) -> Parser:
    """The parser a ``--parser`` value names; ``ConfigError`` if it names none or won't compile."""
    kind, sep, pattern = spec.partition(":")
    if sep and kind == "regex":
        from sidekick.ship.parsers.regex import RegexParser

        return RegexParser(pattern)
    if not sep:
        if spec == "raw":
            return RawParser()
        if spec == "json":
            from sidekick.ship.parsers.json import JsonParser

            return JsonParser()
        if spec == "nginx":
            from sidekick.ship.parsers.nginx import NginxParser

            return NginxParser()
        if spec == "apache":
            from sidekick.ship.parsers.apache import ApacheParser

            return ApacheParser()
        if spec == "cri":
            from sidekick.ship.parsers.cri import CriParser

            return CriParser()
        if spec == "docker":
            from sidekick.ship.parsers.docker import DockerParser

            return DockerParser()
    raise ConfigError(f"--parser {spec!r}: unknown parser; use one of {', '.join(PARSER_NAMES)}")
