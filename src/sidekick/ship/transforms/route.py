"""``route``: named branches by CEL condition; a graph reads them as ``name.branch``.

Each branch has a condition; a record goes to every branch whose condition is true (a copy
for the second and later ones, so a transform on one branch cannot change what another
receives), and to ``_unmatched`` when none is. Nothing is dropped here: a branch nobody reads
is the graph's business, where its records count as handled.
"""

from __future__ import annotations

from itertools import compress
from operator import not_

import msgspec

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms.base import BaseTransform, Record
from sidekick.ship.transforms.expr import Condition

UNMATCHED = "_unmatched"


class RouteOptions(msgspec.Struct, forbid_unknown_fields=True):
    routes: dict[str, str]  # branch name -> CEL condition, in the order given


class RouteTransform(BaseTransform):
    kind = "route"
    Options = RouteOptions

    def __init__(self, name: str, options: RouteOptions) -> None:
        super().__init__(name, options)
        if not options.routes:
            raise ConfigError(
                f"transform {name!r} (route): routes is empty; "
                'name at least one branch, e.g. routes: {errors: \'record["log.level"] == "error"\'}'
            )
        for branch in options.routes:
            if not branch or "." in branch or branch == UNMATCHED:
                raise ConfigError(
                    f"transform {name!r} (route): branch name {branch!r} is not allowed; "
                    f"use a non-empty name without dots, other than {UNMATCHED}"
                )
        self.branches = [
            (branch, Condition(name, f"routes.{branch}", text))
            for branch, text in options.routes.items()
        ]
        self.outputs = (*options.routes, UNMATCHED)

    def process(self, records: list[Record]) -> dict[str, list[Record]]:
        n = len(records)
        taken = [False] * n
        out: dict[str, list[Record]] = {}
        errors = 0
        for branch, condition in self.branches:
            before = condition.errors
            mask = condition.mask(records)
            errors += condition.errors - before
            chosen: list[Record] = []
            for i in compress(range(n), mask):
                if taken[i]:
                    chosen.append(dict(records[i]))
                else:
                    taken[i] = True
                    chosen.append(records[i])
            out[branch] = chosen
            if chosen:
                self._add(f"out.{branch}", len(chosen))
        unmatched = list(compress(records, map(not_, taken)))
        out[UNMATCHED] = unmatched
        if unmatched:
            self._add(f"out.{UNMATCHED}", len(unmatched))
        if errors:
            self._add("condition_errors", errors)
        self._count(n, sum(map(len, out.values())), 0)
        return out
