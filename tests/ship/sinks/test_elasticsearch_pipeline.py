"""The Elasticsearch output inside the real shipper: per-item retries, dead letters, no duplicates.

The shipper (tailing, batching, retries, dead-letter file, checkpoints) runs in-process
against ``FakeIndex``, a protocol server that behaves like an index for ``create`` actions:
it stores documents by ``_id``, answers 409 for an id it already has, and fails items the
test chooses with the per-item statuses of the bulk API. No Elasticsearch runs here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from sidekick.ship.deadletter import DEAD_LETTER_FILE
from tests.ship.helpers import ShipperProcess, read_ndjson, ship_config, shipping, wait_for
from tests.ship.sinks.conftest import ProtocolServer, Seen, shipped_only_once_answered_properly


class FakeIndex:
    """Stores created documents by ``_id``; fails chosen messages with chosen statuses."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.fail_once: dict[str, int] = {}  # message -> status for its first attempt
        self.fail_always: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.conflicts = 0  # creates answered 409: the document was already there

    def __call__(self, seen: Seen) -> web.Response:
        lines = seen.body.decode().splitlines()
        items = []
        for action_line, doc_line in zip(lines[0::2], lines[1::2], strict=True):
            meta = json.loads(action_line)["create"]
            doc = json.loads(doc_line)
            msg = doc["message"]
            self.attempts[msg] = self.attempts.get(msg, 0) + 1
            status = self.fail_always.get(msg) or (
                self.fail_once.pop(msg) if msg in self.fail_once else 0
            )
            if not status:
                status = 409 if meta["_id"] in self.docs else 201
                self.conflicts += status == 409
                self.docs.setdefault(meta["_id"], doc)
            item: dict[str, Any] = {"_index": meta["_index"], "_id": meta["_id"], "status": status}
            if status == 400:
                item["error"] = {
                    "type": "document_parsing_exception",
                    "reason": "[1:42] failed to parse field [message]",
                }
            elif status == 429:
                item["error"] = {
                    "type": "es_rejected_execution_exception",
                    "reason": "rejected execution of coordinating operation",
                }
            items.append({"create": item})
        errors = any(i["create"]["status"] not in (200, 201) for i in items)
        return web.json_response({"took": 3, "errors": errors, "items": items})

    def messages(self) -> set[str]:
        return {d["message"] for d in self.docs.values()}


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


async def test_429_items_are_retried_and_400_items_dead_lettered(
    server: ProtocolServer, tmp_path: Path
) -> None:
    index = FakeIndex()
    index.fail_once = {"line 3": 429, "line 5": 503}
    index.fail_always = {"line 7": 400}
    server.default = index
    lines = [f"line {i}" for i in range(20)]
    write_lines(tmp_path / "logs" / "app.log", lines)
    cfg = ship_config(
        inputs=[f"file://{tmp_path}/logs/*.log"],
        outputs=[{"url": f"elasticsearch://{server.hostport}/logs", "options": {"gzip": False}}],
        state_dir=str(tmp_path / "state"),
        retry={"initial": "20ms", "max": "100ms"},
    )
    dead_file = tmp_path / "state" / DEAD_LETTER_FILE
    async with shipping(cfg):
        await wait_for(lambda: len(index.messages()) == 19 and bool(read_ndjson(dead_file)))
    assert index.messages() == set(lines) - {"line 7"}
    assert index.attempts["line 3"] == 2
    assert index.attempts["line 5"] == 2
    [dead] = read_ndjson(dead_file)
    assert dead["record"]["message"] == "line 7"
    assert "document_parsing_exception" in dead["reason"]
    assert index.attempts["line 7"] == 1  # a rejected item is not sent again


async def test_batch_resent_after_a_lost_response_stores_no_duplicate(
    server: ProtocolServer, tmp_path: Path
) -> None:
    index = FakeIndex()

    def store_then_fail(seen: Seen) -> web.Response:
        index(seen)  # the documents are stored ...
        return web.Response(status=502, text="bad gateway")  # ... but the answer is lost

    server.reply_with(store_then_fail)
    server.default = index
    lines = [f"line {i}" for i in range(10)]
    write_lines(tmp_path / "logs" / "app.log", lines)
    cfg = ship_config(
        inputs=[f"file://{tmp_path}/logs/*.log"],
        outputs=[f"elasticsearch://{server.hostport}/logs"],
        state_dir=str(tmp_path / "state"),
        retry={"initial": "20ms", "max": "100ms"},
    )
    async with shipping(cfg):
        await wait_for(lambda: len(server.requests) >= 2 and not server.queue)
        await wait_for(lambda: all(index.attempts.get(line, 0) >= 2 for line in lines))
    assert index.messages() == set(lines)
    assert len(index.docs) == 10  # the resend was answered 409 per document, not stored again


async def test_kill_9_and_restart_stores_every_line_exactly_once(
    server: ProtocolServer, tmp_path: Path
) -> None:
    index = FakeIndex()

    async def slow_index(seen: Seen) -> web.Response:
        await asyncio.sleep(0.03)  # a busy cluster: the kill lands while batches are in flight
        return index(seen)

    server.default = slow_index
    n = 20_000
    write_lines(tmp_path / "logs" / "app.log", [f"line {i}" for i in range(n)])
    config = tmp_path / "ship.yaml"
    # Small batches and a rare checkpoint: after the kill much is sent a second time.
    config.write_text("ship:\n  batch: {max_records: 500}\n  checkpoint_interval: 30s\n")
    args = [
        "--config", str(config),
        "--input", f"file://{tmp_path}/logs/*.log",
        "--output", f"elasticsearch://{server.hostport}/logs",
        "--state-dir", str(tmp_path / "state"),
        "--log-level", "warning",
    ]  # fmt: skip
    first = ShipperProcess(args, tmp_path / "first.log").start()
    second = ShipperProcess(args, tmp_path / "second.log")
    try:
        await wait_for(lambda: len(index.docs) >= n // 4, timeout=60)
        first.kill()  # SIGKILL: no drain, no final checkpoint
        assert len(index.docs) < n, "everything arrived before the kill; slow the index down"
        second.start()
        await wait_for(lambda: len(index.docs) >= n, timeout=120)
        assert second.terminate() == 0
    finally:
        first.stop_quietly()
        second.stop_quietly()
    assert len(index.docs) == n
    assert index.messages() == {f"line {i}" for i in range(n)}
    assert index.conflicts > 0  # documents were sent again and answered 409, not stored twice


async def test_200_without_items_is_not_delivery_and_holds_the_checkpoint(
    server: ProtocolServer, tmp_path: Path
) -> None:
    index = FakeIndex()
    await shipped_only_once_answered_properly(
        server,
        tmp_path,
        url=f"elasticsearch://{server.hostport}/logs",
        output=f"elasticsearch {server.hostport}",
        bad=lambda seen: web.json_response({"took": 1, "errors": False}),
        good=index,
        arrived=lambda: sorted(index.messages()),
    )


async def test_200_with_too_few_items_is_not_delivery_and_holds_the_checkpoint(
    server: ProtocolServer, tmp_path: Path
) -> None:
    index = FakeIndex()

    def first_item_only(seen: Seen) -> web.Response:
        _id = json.loads(seen.body.split(b"\n", 1)[0])["create"]["_id"]
        item = {"create": {"_index": "logs", "_id": _id, "status": 201}}
        return web.json_response({"took": 1, "errors": False, "items": [item]})

    await shipped_only_once_answered_properly(
        server,
        tmp_path,
        url=f"elasticsearch://{server.hostport}/logs",
        output=f"elasticsearch {server.hostport}",
        bad=first_item_only,
        good=index,
        arrived=lambda: sorted(index.messages()),
    )
