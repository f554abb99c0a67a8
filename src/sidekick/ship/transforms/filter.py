"""``filter``: keep or drop records by a CEL condition.

Exactly one of ``keep:`` (records for which the condition is true stay) or ``drop:``
(records for which it is true go). A condition that cannot be evaluated for a record (a
missing field) is false, so ``drop:`` keeps such a record and ``keep:`` drops it; these are
counted as ``condition_errors``.
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import is_not

import msgspec

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms.base import DEFAULT, BaseTransform, Record
from sidekick.ship.transforms.expr import Condition


class FilterOptions(msgspec.Struct, forbid_unknown_fields=True):
    keep: str | None = None  # CEL: records for which it is true stay
    drop: str | None = None  # CEL: records for which it is true are dropped


class FilterTransform(BaseTransform):
    kind = "filter"
    Options = FilterOptions

    def __init__(self, name: str, options: FilterOptions) -> None:
        super().__init__(name, options)
        if (options.keep is None) == (options.drop is None):
            raise ConfigError(
                f"transform {name!r} (filter): give exactly one of keep: or drop:, "
                f'e.g. drop: \'record["url.path"] == "/healthz"\''
            )
        self._keep = options.keep is not None
        field = "keep" if self._keep else "drop"
        text = options.keep if options.keep is not None else options.drop
        assert text is not None
        self.condition = Condition(name, field, text)

    def process(self, records: list[Record]) -> dict[str, list[Record]]:
        condition = self.condition
        errors = condition.errors
        results = condition.mask(records)
        # compress is a C loop; a condition that could not be evaluated (None) is false.
        if self._keep:
            kept = list(compress(records, results))
        else:
            kept = list(compress(records, map(is_not, results, repeat(True))))
        if condition.errors != errors:
            self._add("condition_errors", condition.errors - errors)
        self._count(len(records), len(kept), len(records) - len(kept))
        return {DEFAULT: kept}
