"""``throttle``: at most ``limit`` records per ``window`` per key; the excess is dropped or
sent to the ``excess`` output.

Windows are fixed and aligned to the clock (``window: 1s`` counts from each whole second), so
the state is one count per key seen in the current window, cleared when the window ends. At
most ``max_keys`` keys are tracked per window; records of further keys share one count, so a
flood of distinct keys cannot grow memory. Records without the key field count under the
empty key. ``excess: output`` adds the ``excess`` output (``name.excess`` in the graph);
``excess: drop`` (the default) drops them, counted as ``dropped``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import msgspec

from sidekick.core.durations import parse_duration
from sidekick.core.errors import ConfigError
from sidekick.ship.transforms.base import DEFAULT, BaseTransform, Record

EXCESS = "excess"
_OVERFLOW = object()  # the shared count of keys beyond max_keys


class ThrottleOptions(msgspec.Struct, forbid_unknown_fields=True):
    limit: int  # records per window per key
    window: str | float = "1s"  # duration: "1s", "500ms", "1m", or seconds
    key: str | None = None  # field whose value is throttled separately; unset: one count
    excess: Literal["drop", "output"] = "drop"
    max_keys: int = 10_000  # keys tracked per window; more share one count


class ThrottleTransform(BaseTransform):
    kind = "throttle"
    Options = ThrottleOptions

    def __init__(
        self, name: str, options: ThrottleOptions, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(name, options)
        where = f"transform {name!r} (throttle)"
        if options.limit < 0:
            raise ConfigError(f"{where}: limit {options.limit} is negative; give 0 or more")
        try:
            self.window = parse_duration(options.window, name="window")
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if self.window <= 0:
            raise ConfigError(f"{where}: window {options.window!r} is not positive; e.g. 1s")
        if options.max_keys < 1:
            raise ConfigError(f"{where}: max_keys {options.max_keys} is below 1; e.g. 10000")
        self.limit = options.limit
        self.key = options.key
        self.max_keys = options.max_keys
        self.to_output = options.excess == "output"
        self.outputs = (DEFAULT, EXCESS) if self.to_output else (DEFAULT,)
        self._clock = clock
        self._window_no = -1
        self._counts: dict[object, int] = {}

    def process(self, records: list[Record]) -> dict[str, list[Record]]:
        window_no = int(self._clock() // self.window)
        if window_no != self._window_no:
            self._window_no = window_no
            self._counts.clear()
        counts = self._counts
        limit = self.limit
        passed: list[Record] = []
        excess: list[Record] = []
        field = self.key
        for r in records:
            key: object = "" if field is None else r.get(field, "")
            try:
                n = counts.get(key)
            except TypeError:  # an unhashable value (a list): count it by its text
                key = repr(key)
                n = counts.get(key)
            if n is None and len(counts) >= self.max_keys:
                key = _OVERFLOW
                n = counts.get(key)
            n = (n or 0) + 1
            counts[key] = n
            (passed if n <= limit else excess).append(r)
        if excess:
            self._add("throttled", len(excess))
        if self.to_output:
            self._count(len(records), len(records), 0)
            return {DEFAULT: passed, EXCESS: excess}
        self._count(len(records), len(passed), len(excess))
        return {DEFAULT: passed}
