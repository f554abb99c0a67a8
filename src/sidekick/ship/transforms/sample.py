"""``sample``: keep one record in ``rate``, the same ones on every shipper and every run.

With ``key:`` (e.g. ``trace.id``) the choice is made per key value, by a stable hash (CRC-32
of the value's text), so all records of one trace are kept or dropped together, and two
shippers sampling the same traffic agree. Records without the key field, or without ``key:``,
are sampled by count: every ``rate``-th one is kept. Records for which ``exempt:`` (CEL) is
true are never sampled out (e.g. errors).
"""

from __future__ import annotations

from itertools import compress
from zlib import crc32

import msgspec

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms.base import DEFAULT, BaseTransform, Record
from sidekick.ship.transforms.expr import Condition

_MISSING = object()


class SampleOptions(msgspec.Struct, forbid_unknown_fields=True):
    rate: int  # keep 1 in rate records; 1 keeps everything
    key: str | None = None  # field whose value decides, e.g. "trace.id"; unset: by count
    exempt: str | None = None  # CEL: records for which it is true are always kept


class SampleTransform(BaseTransform):
    kind = "sample"
    Options = SampleOptions

    def __init__(self, name: str, options: SampleOptions) -> None:
        super().__init__(name, options)
        if options.rate < 1:
            raise ConfigError(
                f"transform {name!r} (sample): rate {options.rate} is below 1; "
                "give N to keep one record in N"
            )
        self.rate = options.rate
        self.key = options.key
        self.exempt = Condition(name, "exempt", options.exempt) if options.exempt else None
        self._seen = 0  # records sampled by count so far

    def _keep(self, record: Record) -> bool:
        value = record.get(self.key, _MISSING) if self.key is not None else _MISSING
        if value is _MISSING:
            self._seen += 1
            return self._seen % self.rate == 1 % self.rate
        text = value if type(value) is str else repr(value)
        return crc32(text.encode("utf-8", "surrogatepass")) % self.rate == 0

    def process(self, records: list[Record]) -> dict[str, list[Record]]:
        keep = list(map(self._keep, records))
        if self.exempt is not None:
            errors = self.exempt.errors
            exempt = self.exempt.mask(records)
            keep = [k or e is True for k, e in zip(keep, exempt, strict=True)]
            n_exempt = sum(1 for e in exempt if e is True)
            if n_exempt:
                self._add("exempt", n_exempt)
            if self.exempt.errors != errors:
                self._add("condition_errors", self.exempt.errors - errors)
        kept = list(compress(records, keep))
        self._count(len(records), len(kept), len(records) - len(kept))
        return {DEFAULT: kept}
