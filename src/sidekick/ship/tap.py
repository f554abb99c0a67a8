"""Live tap: the records leaving one component, streamed to a reader on the admin server.

``GET /tap/<component>?limit=N`` answers NDJSON, one record per line, as records leave the
component (an input after its parser, a transform, or what an output queues), until ``limit``
records were sent or the reader goes away. ``sidekick ship-tap`` is its client.

It never slows the pipeline: while no one taps, a batch costs one ``if``; a reader has a
bounded queue, filled by encoding records as they pass, and records that find it full are
dropped and counted (``sidekick_ship_tap_dropped_total``). Only loopback peers are served
unless ``--tap-allow-remote``: the admin server listens on every address by default, and a
tap shows records before any redaction after the tapped component.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import deque
from collections.abc import Callable

import msgspec
from aiohttp import web

from sidekick.ship.records import Record

log = logging.getLogger("sidekick.ship.tap")

QUEUE_RECORDS = 1000  # per reader; beyond it records are dropped, not waited for
_encode = msgspec.json.Encoder().encode


class TapReader:
    """One reader's bounded queue of encoded records."""

    def __init__(self, limit: int) -> None:
        self.left = limit  # records still to send (0: no limit)
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.dropped = 0

    def offer(self, records: list[Record]) -> int:
        """Queue what fits; the number of records dropped."""
        room = QUEUE_RECORDS - len(self.queue)
        take = records[:room] if room < len(records) else records
        for record in take:
            try:
                self.queue.append(_encode(record))
            except (TypeError, msgspec.EncodeError):
                continue
        if take:
            self.wake.set()
        dropped = len(records) - len(take)
        self.dropped += dropped
        return dropped


class Taps:
    """Readers by the reference whose records they receive (``name`` or ``name.branch``)."""

    def __init__(self, on_drop: Callable[[int], None] | None = None) -> None:
        self.by_ref: dict[str, list[TapReader]] = {}
        self.active = False
        self.on_drop = on_drop

    def offer(self, ref: str, records: list[Record]) -> None:
        readers = self.by_ref.get(ref)
        if not readers or not records:
            return
        for reader in readers:
            dropped = reader.offer(records)
            if dropped and self.on_drop is not None:
                self.on_drop(dropped)

    def add(self, refs: list[str], reader: TapReader) -> None:
        for ref in refs:
            self.by_ref.setdefault(ref, []).append(reader)
        self.active = True

    def remove(self, reader: TapReader) -> None:
        for ref in list(self.by_ref):
            left = [r for r in self.by_ref[ref] if r is not reader]
            if left:
                self.by_ref[ref] = left
            else:
                del self.by_ref[ref]
        self.active = bool(self.by_ref)


def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def tap_handler(
    taps: Taps, refs_of: Callable[[str], list[str] | None], *, allow_remote: bool
) -> Callable[[web.Request], object]:
    """The aiohttp handler of ``GET /tap/{component}``; ``refs_of`` names what a component
    emits (None for an unknown component)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if not allow_remote and not is_loopback(request.remote):
            return web.Response(
                status=403,
                text="tap is served to localhost only; start the shipper with "
                "--tap-allow-remote to allow other peers\n",
            )
        component = request.match_info["component"]
        refs = refs_of(component)
        if refs is None:
            return web.Response(
                status=404, text=f"no component {component!r}; name an input, transform or output\n"
            )
        try:
            limit = int(request.query.get("limit", "0"))
        except ValueError:
            return web.Response(status=400, text="limit must be a whole number\n")
        reader = TapReader(max(0, limit))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        taps.add(refs, reader)
        log.info("Tap on %s opened by %s.", component, request.remote)
        try:
            while True:
                await reader.wake.wait()
                reader.wake.clear()
                lines: list[bytes] = []
                while reader.queue:
                    lines.append(reader.queue.popleft())
                    if reader.left and len(lines) >= reader.left:
                        break
                if lines:
                    await response.write(b"\n".join(lines) + b"\n")
                if reader.left:
                    reader.left -= len(lines)
                    if reader.left <= 0:
                        break
            await response.write_eof()
        except ConnectionResetError:
            pass
        finally:
            taps.remove(reader)
            log.info("Tap on %s closed (%d records dropped for it).", component, reader.dropped)
        return response

    return handle
