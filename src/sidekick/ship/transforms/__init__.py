"""Transforms: named stages between inputs and outputs, found by kind in ``TRANSFORMS``.

=============  ===================================================================
``filter``     keep or drop records by a CEL condition (``filter.py``)
``modify``     set (literal, template, CEL), rename, copy, remove fields (``modify.py``)
``redact``     mask or keyed-hash secrets: built-in patterns and regexes (``redact.py``)
``sample``     keep 1 in N, by a key field's hash (``sample.py``)
``throttle``   at most N records per window per key (``throttle.py``)
``parse``      run a ship parser on a field (``parse.py``)
``route``      named branches by CEL condition, plus ``_unmatched`` (``route.py``)
=============  ===================================================================

``build_transform(name, kind, options)`` checks the options against the kind's ``Options``
struct and builds the transform, compiling its expressions; every mistake is a
``ConfigError`` naming the component, the field and the fix. Adding a transform is one module
and one line in the table. The protocol is in :mod:`.base`; conditions and the CEL rules in
:mod:`.expr`; docs/transforms.md describes every kind.
"""

from __future__ import annotations

from typing import Any

import msgspec

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms.base import DEFAULT, BaseTransform, Transform
from sidekick.ship.transforms.filter import FilterTransform
from sidekick.ship.transforms.modify import ModifyTransform
from sidekick.ship.transforms.parse import ParseTransform
from sidekick.ship.transforms.redact import RedactTransform
from sidekick.ship.transforms.route import RouteTransform
from sidekick.ship.transforms.sample import SampleTransform
from sidekick.ship.transforms.throttle import ThrottleTransform

__all__ = ["DEFAULT", "TRANSFORMS", "Transform", "build_transform"]

TRANSFORMS: dict[str, type[BaseTransform]] = {
    "filter": FilterTransform,
    "modify": ModifyTransform,
    "redact": RedactTransform,
    "sample": SampleTransform,
    "throttle": ThrottleTransform,
    "parse": ParseTransform,
    "route": RouteTransform,
}


def build_transform(name: str, kind: str, options: dict[str, Any]) -> Transform:
    """The transform ``kind`` named ``name`` with ``options`` (the config's mapping, without
    ``type`` and ``inputs``); ``ConfigError`` with one sentence naming what to fix."""
    cls = TRANSFORMS.get(kind)
    if cls is None:
        raise ConfigError(
            f"transform {name!r}: type {kind!r} is unknown; use one of {', '.join(sorted(TRANSFORMS))}"
        )
    try:
        typed = msgspec.convert(options, cls.Options)
    except msgspec.ValidationError as exc:
        raise ConfigError(
            f"transform {name!r} ({kind}): {_describe(exc)}; see docs/transforms.md for {kind}'s options"
        ) from None
    return cls(name, typed)


def _describe(exc: msgspec.ValidationError) -> str:
    """msgspec's message with its ``$.field`` path put first, in the config's words."""
    text = str(exc)
    message, sep, path = text.rpartition(" - at `")
    if not sep:
        return text.replace("Object contains unknown field", "unknown option")
    where = path.rstrip("`").removeprefix("$.").removeprefix("$")
    return f"{where}: {message[0].lower()}{message[1:]}" if where else message
