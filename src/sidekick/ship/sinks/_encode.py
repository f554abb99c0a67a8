"""Batch encoding shared by the NDJSON outputs: one C call per batch, never one per record."""

from __future__ import annotations

import msgspec

from sidekick.ship.records import Record

_encoder = msgspec.json.Encoder()


def encode_ndjson(records: list[Record]) -> bytes:
    """``records`` as NDJSON: one JSON object per line, each line ending in ``\\n``."""
    return _encoder.encode_lines(records)
