"""The tail source, run in-process through the real pipeline into a real file output: records
and their fields. Its parts have test files of their own: start positions and checkpoint
entries (test_files), rotation and truncation (test_rotation), identity (test_identity),
reading (test_reader) and discovery (test_discover); the drain is in tests/ship/test_drain."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import msgspec
import pytest
from prometheus_client import generate_latest

from sidekick.core.logs import JsonFormatter
from sidekick.ship.checkpoints import STATE_FILE
from tests.ship.helpers import ship_config, shipping, wait_for
from tests.ship.sources.tailing import cfg_for, out


async def test_records_carry_message_path_offset_host_and_fields(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, fields={"env": "test"}, pod_name="web-0", pod_namespace="shop")
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"first\nsecond line\n")
    async with shipping(cfg):
        await wait_for(lambda: len(out(tmp_path)) == 2)
    first, second = out(tmp_path)
    assert first["message"] == "first" and second["message"] == "second line"
    assert (first["log.offset"], second["log.offset"]) == (0, 6)
    assert first["log.file.path"] == str(log)
    assert first["host.name"] == "testhost" and first["env"] == "test"
    assert first["k8s.pod.name"] == "web-0" and first["k8s.namespace.name"] == "shop"
    assert first["@timestamp"].endswith("Z") and len(first["@timestamp"]) == 30
    assert first["log.file.id"] == second["log.file.id"]


def saved_offset(state_dir: Path, log: Path) -> int:
    state = msgspec.json.decode((state_dir / STATE_FILE).read_bytes())
    offsets = [e["offset"] for e in state["streams"].values() if e.get("path") == str(log)]
    assert len(offsets) == 1
    return int(offsets[0])


async def test_checkpoint_lag_follows_the_file_while_an_output_is_down(tmp_path: Path) -> None:
    # While the output fails, reading pauses at the in-flight limit and the read loop waits
    # in emit; the lag gauge must still grow with the file, or a dead output looks like a
    # shipper that is nearly caught up.
    outdir = tmp_path / "out"
    outdir.mkdir()
    (tmp_path / "logs").mkdir()
    cfg = ship_config(
        inputs=[f"file://{tmp_path}/logs/*.log"],
        outputs=[f"file://{outdir}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
        max_inflight_bytes="256KiB",
        retry={"initial": "50ms", "max": "100ms"},
    )
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"first\n")
    line = b"x" * 99 + b"\n"
    lag = "sidekick_ship_checkpoint_lag_bytes"
    async with shipping(cfg) as sh:
        await wait_for(lambda: (outdir / "out.ndjson").exists())
        await wait_for(lambda: sh.metric(lag, file=str(log)) == 0)
        shutil.rmtree(outdir)  # every write fails from now on (once the sink looks again)
        failed = "sidekick_ship_records_failed_total"
        output = f"file://{outdir}/out.ndjson"
        while sh.metric(failed, output=output) == 0:
            with log.open("ab") as f:
                f.write(b"more\n")  # until the output has failed once
            await asyncio.sleep(0.1)
        await asyncio.sleep(2 * 1.0)  # checkpoint_interval: the state file holds the last
        committed = saved_offset(tmp_path / "state", log)
        with log.open("ab") as f:
            f.write(line * 20_000)  # 2 MB: far more than the in-flight limit
        await wait_for(lambda: sh.metric("sidekick_ship_backpressure_waits_total") >= 1)
        await asyncio.sleep(1.0)  # the read loop now waits for room
        with log.open("ab") as f:
            f.write(line * 10_000)
        size = log.stat().st_size
        await wait_for(lambda: sh.metric(lag, file=str(log)) == size - committed, timeout=5)
        outdir.mkdir()  # the output works again: everything arrives
        await wait_for(lambda: sh.metric(lag, file=str(log)) == 0, timeout=30)


def append(path: bytes, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def test_a_file_name_that_is_not_utf8_is_shipped_with_its_path_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A Latin-1 name: the file system gives Python a str with a surrogate for the byte, which
    # neither JSON (records, state file, JSON logs) nor the metrics text can hold; it wedged
    # the output, the state file and /metrics.
    cfg = cfg_for(tmp_path)
    latin = os.fsencode(tmp_path / "logs") + b"/caf\xe9.log"
    append(latin, b"latin\n")
    (tmp_path / "logs" / "ok.log").write_bytes(b"utf8\n")
    shown = f"{tmp_path}/logs/caf\ufffd.log"
    caplog.set_level(logging.INFO, logger="sidekick.ship.tail")
    async with shipping(cfg) as sh:
        await wait_for(lambda: len(out(tmp_path)) == 2)
        await wait_for(lambda: (tmp_path / "state" / STATE_FILE).exists())
        assert sh.metric("sidekick_ship_checkpoint_lag_bytes", file=shown) == 0
        generate_latest(sh.registry).decode()  # /metrics can be served
        append(latin, b"more\n")  # the file is still read by its real name
        await wait_for(lambda: len(out(tmp_path)) == 3)
    paths = {r["message"]: r["log.file.path"] for r in out(tmp_path)}
    assert paths == {"latin": shown, "more": shown, "utf8": str(tmp_path / "logs" / "ok.log")}
    state = msgspec.json.decode((tmp_path / "state" / STATE_FILE).read_bytes())
    assert shown in [e.get("path") for e in state["streams"].values()]
    tail_logs = [r for r in caplog.records if r.name == "sidekick.ship.tail"]
    assert any(shown in r.getMessage() for r in tail_logs)
    for r in tail_logs:
        JsonFormatter().format(r)  # --log-format json can write them
