"""Parsers: turn each record's ``message`` into structured fields, a batch at a time.

``create_parser(spec)`` builds one from the ``--parser`` value, found in ``PARSERS``:

=================  ===============================================================
``raw``            nothing is parsed; records keep ``message`` as read
``json``           a JSON object message is merged into the record (``json.py``)
``nginx``          nginx combined access lines and error-log lines (``nginx.py``)
``apache``         Apache combined/common access and error-log lines (``apache.py``)
``regex:PATTERN``  named groups become fields, ``__`` in a name is a dot (``regex.py``)
``cri``            containerd / CRI-O container logs, partial lines joined (``cri.py``)
``docker``         Docker json-file container logs, partial lines joined (``docker.py``)
=================  ===============================================================

Every parser follows the ``Parser`` protocol of :mod:`sidekick.ship.records` and inherits
:class:`~sidekick.ship.parsers.base.BaseParser`: ``parse(records)`` enriches the records in
place and never drops, reorders or raises on one; a line a parser cannot read keeps its
message unchanged and gets ``log.parse_error`` saying why. A parser that joins partial lines
or gives field columns says so through ``joiner`` and ``columns`` (``base.py``). Adding a
parser is one module and one line in the table; tests/ship/parsers/test_contract.py runs
over every line of it.

Joining multi-line records (tracebacks) happens before parsing, in
:mod:`sidekick.ship.parsers.multiline`, because it decides which bytes form a record and so
where a file's checkpoint may stop.
"""

from __future__ import annotations

import importlib

from sidekick.core.errors import ConfigError
from sidekick.ship.parsers.base import BaseParser, RawParser

__all__ = ["PARSERS", "PARSER_NAMES", "RawParser", "create_parser", "parser_class"]

# name -> (module in this package, class, what follows "name:" or None). Modules are
# imported when a parser is built: a shipper loads only the parsers its inputs name.
PARSERS: dict[str, tuple[str, str, str | None]] = {
    "raw": ("base", "RawParser", None),
    "json": ("json", "JsonParser", None),
    "nginx": ("nginx", "NginxParser", None),
    "apache": ("apache", "ApacheParser", None),
    "cri": ("cri", "CriParser", None),
    "docker": ("docker", "DockerParser", None),
    "regex": ("regex", "RegexParser", "PATTERN"),
}

PARSER_NAMES = tuple(n if arg is None else f"{n}:{arg}" for n, (_m, _c, arg) in PARSERS.items())


def parser_class(name: str) -> type[BaseParser]:
    """The class of the parser ``name`` (a key of ``PARSERS``)."""
    module, cls_name, _arg = PARSERS[name]
    cls: type[BaseParser] = vars(importlib.import_module(f"{__name__}.{module}"))[cls_name]
    return cls


def create_parser(spec: str) -> BaseParser:
    """The parser a ``--parser`` value names; ``ConfigError`` if it names none or won't compile."""
    kind, sep, argument = spec.partition(":")
    entry = PARSERS.get(kind)
    if entry is not None and bool(sep) == (entry[2] is not None):
        return parser_class(kind).create(argument)
    raise ConfigError(f"--parser {spec!r}: unknown parser; use one of {', '.join(PARSER_NAMES)}")
