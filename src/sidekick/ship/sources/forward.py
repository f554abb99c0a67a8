"""``--input forward://HOST:PORT``: the Fluent forward protocol v1 (Fluentd, Fluent Bit,
fluent-logger), default port 24224.

A connection carries msgpack arrays, each in one of four modes:

- Message: ``[tag, time, record]`` or ``[tag, time, record, option]``;
- Forward: ``[tag, [[time, record], ...], option?]``;
- PackedForward: ``[tag, <msgpack stream of [time, record] entries as bin or str>, option?]``;
- CompressedPackedForward: the same stream gzip'ed, with ``option.compressed == "gzip"``.

``time`` is an integer of seconds, a float, or the EventTime extension (type 0: seconds and
nanoseconds). Each record keeps its fields; the tag goes into ``fluent.tag``, the time into
``@timestamp``, and a record without ``message`` but with ``log`` (Docker's fluentd driver,
Fluent Bit's tail) gets ``message`` from it. Map keys that are not strings become their text.

When ``option.chunk`` is given, ``{"ack": chunk}`` is sent back only after the message's
records are durably spooled; a client that gets no ack resends. The protocol has no way to
say no: a message that does not decode (bad msgpack, a mode that is none of the four, a
record that is not a map) closes the connection, unacknowledged, and is counted
(``rejected{reason="malformed"}``), as is a message over ``--ingest-max-body-bytes``
(``oversize``, before or after gzip inflation). When the spool is full, reading pauses (TCP
holds the sender back) instead of dropping anything. On SIGTERM, after the quiet period,
connections are closed; chunks not acknowledged are resent by their clients elsewhere or
after the restart.

Left out: the handshake phase (shared key and user authentication: keep the port on the
Pod's localhost), TLS, and the UDP heartbeat (clients fall back to TCP health as
fluent-logger does).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from itertools import chain, repeat
from operator import contains, setitem
from typing import Any, NoReturn

import msgpack
import msgspec

from sidekick.core.errors import ConfigError
from sidekick.core.redact import redact_url
from sidekick.ship.config import size
from sidekick.ship.records import MESSAGE, TIMESTAMP, Record
from sidekick.ship.sources._ingest_body import Rejected, inflate
from sidekick.ship.sources._streams import Closed, Stream, StreamLimits, Streams
from sidekick.ship.sources.base import InputSpec, SourceContext
from sidekick.ship.sources.otlp_grpc import parse_address
from sidekick.ship.sources.receiver import Receiver, Stamps, encode_records, spool_name
from sidekick.ship.sources.spool import SpoolFullError, SpoolWriteError

log = logging.getLogger("sidekick.ship.forward")

DEFAULT_PORT = 24224
TAG = "fluent.tag"


class Malformed(Exception):
    """A forward message that is none of the four modes; the reason says why."""


class EventTime(int):
    """Nanoseconds since the epoch from the EventTime extension (type 0)."""


# EventTimes decoded lately, by their 8 bytes: a sender's entries often share theirs.
_event_times: dict[bytes, EventTime] = {}


def _ext(code: int, data: bytes | memoryview) -> Any:
    data = bytes(data)
    if code == 0 and len(data) == 8:
        t = _event_times.get(data)
        if t is None:
            if len(_event_times) >= 4096:
                _event_times.clear()
            t = _event_times[data] = EventTime(
                int.from_bytes(data[:4], "big") * 1_000_000_000 + int.from_bytes(data[4:], "big")
            )
        return t
    return msgpack.ExtType(code, data)


# A PackedForward stream whose option gives its ``size`` (Fluent Bit and Fluentd send it) is
# decoded by msgspec as one array: a 32-bit array header of that size, then the stream. That
# is one C call, about twice as fast as msgpack's Unpacker. It is first decoded as what an
# entry should be, ``(time, map with text keys)``, which msgspec checks in C as it decodes;
# then, if that fails, as anything; any other failure (a wrong size, text that is not UTF-8,
# a key msgspec refuses) falls back to the Unpacker, whose result counts.
_typed = msgspec.msgpack.Decoder(list[tuple[Any, dict[str, Any]]], ext_hook=_ext)
_packed = msgspec.msgpack.Decoder(ext_hook=_ext)
_SMALLEST_ENTRY = 3  # [time, {}]: an array header, a one-byte int, a map header


def _packed_entries(data: bytes, option: Any, max_bytes: int) -> tuple[list[Any], bool]:
    """The entries of a PackedForward stream, and whether each is known to be a
    ``(time, map with text keys)`` tuple already (else they are lists as sent)."""
    n = option.get("size") if isinstance(option, dict) else None
    if type(n) is int and 0 < n <= len(data) // _SMALLEST_ENTRY:
        stream = b"\xdd" + n.to_bytes(4, "big") + data
        try:
            return _typed.decode(stream), True
        except (msgspec.DecodeError, ValueError, TypeError, RecursionError):
            pass
        try:
            entries = _packed.decode(stream)
        except (msgspec.DecodeError, ValueError, TypeError, RecursionError):
            pass
        else:
            if type(entries) is list:
                return entries, False
    unpacker = _unpacker(max_bytes)
    unpacker.feed(data)
    return list(unpacker), False


def _unpacker(max_bytes: int) -> msgpack.Unpacker:
    return msgpack.Unpacker(
        raw=False,
        strict_map_key=False,
        unicode_errors="replace",
        ext_hook=_ext,
        max_buffer_size=max_bytes,
    )


# The last second of year 9999: a later time has no RFC 3339 form (and the C library refuses it).
MAX_NS = 253_402_300_799 * 1_000_000_000


def _ns(t: Any) -> int | None:
    if isinstance(t, EventTime):
        ns = int(t)
    elif isinstance(t, bool):
        return None
    elif isinstance(t, int | float):
        try:
            ns = int(t * 1_000_000_000)
        except (OverflowError, ValueError):
            return None
    else:
        return None
    return ns if ns <= MAX_NS else None


def _fast_records(
    entries: list[Any], tag: str, stamps: Stamps, *, checked: bool = False
) -> list[Record] | None:
    """The records of a message's ``[time, record]`` entries by passes over the whole list in
    C, for the usual message (every entry a pair, every record a map, all times integers or
    all EventTimes); ``None`` for any other, which the loop in ``decode_message`` reads.
    ``checked``: the entries are ``(time, map)`` tuples already."""
    if not entries:
        return None
    if not checked and (set(map(type, entries)) != {list} or set(map(len, entries)) != {2}):
        return None
    times, recs = zip(*entries, strict=True)
    if not checked and set(map(type, recs)) != {dict}:
        return None
    kinds = set(map(type, times))
    scale = 1_000_000_000 if kinds == {int} else 1 if kinds == {EventTime} else 0
    if not scale or max(times) * scale > MAX_NS:
        return None
    text = {t: stamps(max(0, t * scale)) for t in set(times)}
    deque(map(setitem, recs, repeat(TAG), repeat(tag)), maxlen=0)
    if any(map(contains, recs, repeat(TIMESTAMP))):
        for rec, t in zip(recs, times, strict=True):
            if TIMESTAMP not in rec:
                rec[TIMESTAMP] = text[t]
    else:
        deque(map(setitem, recs, repeat(TIMESTAMP), map(text.__getitem__, times)), maxlen=0)
    if any(map(contains, recs, repeat("log"))):
        for rec in recs:
            if MESSAGE not in rec and "log" in rec:
                rec[MESSAGE] = rec.pop("log")
    return list(recs)


def _each_record(entries: list[Any], tag: str, stamps: Stamps) -> list[Record]:
    """The records of a message's entries one by one; Malformed at the first bad one."""
    records: list[Record] = []
    append = records.append
    # The entries of a message mostly share their time: each distinct time is formatted once.
    # Integer seconds and EventTime nanoseconds are kept apart (EventTime(5) == 5).
    seconds: dict[int, str] = {}
    nanos: dict[int, str] = {}
    for entry in entries:
        if (type(entry) is not list and type(entry) is not tuple) or len(entry) != 2:
            raise Malformed("an entry is not [time, record]")
        t, rec = entry
        if type(rec) is not dict:
            raise Malformed("a record is not a map")
        kind = type(t)
        cache = seconds if kind is int else nanos if kind is EventTime else None
        stamp = cache.get(t) if cache is not None else None
        if stamp is None:
            ns = _ns(t)
            if ns is None:
                raise Malformed(
                    "an entry's time is not a number or EventTime in years 1970 to 9999"
                )
            stamp = stamps(ns) if ns >= 0 else stamps(0)
            if cache is not None:
                cache[t] = stamp
        rec[TAG] = tag
        if TIMESTAMP not in rec:
            rec[TIMESTAMP] = stamp
        if MESSAGE not in rec and "log" in rec:
            rec[MESSAGE] = rec.pop("log")
        append(rec)
    return records


def decode_message(obj: Any, max_bytes: int, stamps: Stamps) -> tuple[list[Record], str | None]:
    """(records, chunk id to acknowledge) of one forward message; Malformed if it is none."""
    if not isinstance(obj, list) or len(obj) < 2:
        raise Malformed("a forward message is an array [tag, ...]")
    tag = obj[0]
    if not isinstance(tag, str):
        raise Malformed("the tag is not a string")
    second = obj[1]
    option: Any = None
    checked = False  # whether the entries are known (time, map with text keys) pairs
    if isinstance(second, list):  # Forward
        entries = second
        option = obj[2] if len(obj) > 2 else None
    elif isinstance(second, bytes | str) and not isinstance(second, EventTime):
        option = obj[2] if len(obj) > 2 else None
        data = second.encode("utf-8", "surrogateescape") if isinstance(second, str) else second
        if isinstance(option, dict) and option.get("compressed") == "gzip":
            try:
                data = inflate(data, max_bytes)
            except Rejected as exc:
                raise Malformed(exc.reason) from None
        elif isinstance(option, dict) and option.get("compressed") not in (None, "text"):
            raise Malformed(f"compression {option.get('compressed')!r} is not gzip")
        entries, checked = _packed_entries(data, option, max_bytes)
    else:  # Message
        if len(obj) not in (3, 4):
            raise Malformed("a Message-mode message is [tag, time, record, option?]")
        entries = [[second, obj[2]]]
        option = obj[3] if len(obj) == 4 else None
    if option is not None and not isinstance(option, dict):
        raise Malformed("the option is not a map")
    records = _fast_records(entries, tag, stamps, checked=checked)
    if records is None:
        records = _each_record(entries, tag, stamps)
    # Keys that are not strings become their text: checked for the whole message in one pass.
    if not checked and set(map(type, chain.from_iterable(records))) - {str}:
        records = [
            r if all(type(k) is str for k in r) else {str(k): v for k, v in r.items()}
            for r in records
        ]
    chunk = option.get("chunk") if option else None
    return records, chunk if isinstance(chunk, str) else None


class ForwardSource(Receiver):
    def __init__(self, spec: InputSpec, ctx: SourceContext) -> None:
        super().__init__(spec, ctx)
        self.addr = parse_address(spec.url, "forward", DEFAULT_PORT)
        ingest = ctx.config.ingest
        self.metrics = self.input_metrics()
        self.metrics.spool_limit.set(size(ingest.spool_max_bytes))
        self.max_bytes = size(ingest.max_body_bytes)
        try:
            self._sock = socket.create_server((self.addr.host, self.addr.port), backlog=1024)
        except OSError as exc:
            raise ConfigError(
                f"--input {redact_url(spec.url)!r}: {self.addr} cannot be bound "
                f"({exc.strerror or exc}); choose another address or port"
            ) from None
        self.port: int = self._sock.getsockname()[1]
        self.streams = Streams(
            self.metrics,
            StreamLimits.of(ingest, f"Forward input {redact_url(spec.url)}"),
            self._handle,
        )
        try:
            self.open_spool(
                spool_name("forward", f"{self.addr.host}:{self.port}"),
            )
        except BaseException:
            self._sock.close()
            raise

    async def serve(self) -> None:
        await self.streams.start(self._sock)
        log.info("Receiving Fluent forward messages on %s:%d.", self.addr.host, self.port)

    async def stop_accepting(self) -> None:
        await self.streams.stop()

    async def close_server(self) -> None:
        await self.streams.aclose()
        self._sock.close()

    async def _handle(self, stream: Stream) -> None:
        unpacker = _unpacker(self.max_bytes)
        stamps = Stamps()
        loop = asyncio.get_running_loop()
        # When the message still unfinished began to arrive (a slow sender is closed).
        since: float | None = None
        while True:
            data = await stream.read(since)
            if since is None:
                since = loop.time()
            try:
                unpacker.feed(data)
            except msgpack.BufferFull:
                self._refuse("oversize", f"a message over {self.max_bytes} bytes")
            records: list[Record] = []
            chunks: list[str] = []
            try:
                for obj in unpacker:
                    recs, chunk = decode_message(obj, self.max_bytes, stamps)
                    records.extend(recs)
                    if chunk is not None:
                        chunks.append(chunk)
            except msgpack.BufferFull:
                self._refuse("oversize", f"a message over {self.max_bytes} bytes")
            except Malformed as exc:
                self._refuse("malformed", str(exc))
            except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
                self._refuse("malformed", f"not msgpack ({type(exc).__name__})")
            if not records and not chunks:
                continue
            # A message completed: the next one is timed from its next bytes.
            since = None
            async with stream.busy():
                if records:
                    await self._store(records)
                if chunks:
                    stream.writer.write(b"".join(msgpack.packb({"ack": c}) for c in chunks))
                    self.metrics.requests.labels("ack").inc(len(chunks))
                    try:
                        await stream.writer.drain()
                    except (ConnectionError, OSError):
                        raise Closed from None

    async def _store(self, records: list[Record]) -> None:
        payload = encode_records(records)
        while True:
            try:
                await self.spool.wait_for_room(len(payload))
                await self.spool.append(payload, records)
                break
            except SpoolFullError:
                if len(payload) > self.spool.max_bytes:
                    self._refuse("oversize", "a message larger than the whole spool")
                continue  # filled up meanwhile: wait again
            except SpoolWriteError:
                # Not acknowledged: the client resends after the connection closes.
                self.metrics.reject("spool_error")
                raise Closed from None
        self.metrics.records.inc(len(records))
        self.metrics.bytes.inc(len(payload))
        self.on_accepted()

    def _refuse(self, reason: str, what: str) -> NoReturn:
        self.metrics.reject(reason)
        self.streams._rate.warning(
            reason,
            "Closed a forward connection to %s: %s (not acknowledged; the client resends).",
            redact_url(self.name),
            what,
        )
        raise Closed


def create(spec: InputSpec, ctx: SourceContext) -> ForwardSource:
    return ForwardSource(spec, ctx)
