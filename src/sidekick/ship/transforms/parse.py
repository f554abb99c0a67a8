"""``parse``: run one of ship's parsers (``--parser`` names) on a field, merging what it finds.

E.g. ``{type: parse, field: log, parser: nginx}`` on Docker json lines parsed with ``json``:
the ``log`` field is parsed as an nginx line and its fields (``url.path``,
``http.response.status_code``, ``message``...) are merged into the record. The parser sees the
field as its ``message``, so what it leaves there becomes the record's ``message``. Records
whose field is missing or not a string pass unchanged (counted ``skipped``); lines the parser
cannot read get ``log.parse_error`` as with an input's parser (counted ``parse_errors``).
Nothing is dropped.

Left out: joining the container runtime's partial lines (``cri``, ``docker``). A transform
sees records from any number of files, not one file's lines in order, so each piece stays a
record marked ``log.flags: ["partial"]``; an input's parser joins them.
"""

from __future__ import annotations

import msgspec

from sidekick.core.errors import ConfigError
from sidekick.ship.parsers import create_parser
from sidekick.ship.records import MESSAGE, PARSE_ERROR
from sidekick.ship.transforms.base import DEFAULT, BaseTransform, Record


class ParseOptions(msgspec.Struct, forbid_unknown_fields=True):
    parser: str  # a --parser value: json, nginx, apache, cri, docker, regex:PATTERN
    field: str = MESSAGE  # the field to parse


class ParseTransform(BaseTransform):
    kind = "parse"
    Options = ParseOptions

    def __init__(self, name: str, options: ParseOptions) -> None:
        super().__init__(name, options)
        try:
            self.parser = create_parser(options.parser)
        except ConfigError as exc:
            raise ConfigError(f"transform {name!r} (parse): parser: {exc}") from None
        self.field = options.field

    def process(self, records: list[Record]) -> dict[str, list[Record]]:
        field = self.field
        if field == MESSAGE:
            targets = [r for r in records if type(r.get(MESSAGE)) is str]
            had_error = [PARSE_ERROR in r for r in targets]
            self.parser.parse(targets)
            errors = sum(
                1 for r, had in zip(targets, had_error, strict=True) if not had and PARSE_ERROR in r
            )
        else:
            targets = [r for r in records if type(r.get(field)) is str]
            views = [{MESSAGE: r[field]} for r in targets]
            self.parser.parse(views)
            errors = 0
            for r, view in zip(targets, views, strict=True):
                errors += PARSE_ERROR in view
                r.update(view)
        if len(targets) != len(records):
            self._add("skipped", len(records) - len(targets))
        if errors:
            self._add("parse_errors", errors)
        self._count(len(records), len(records), 0)
        return {DEFAULT: records}
