"""The syslog output against a real rsyslogd started by the test on 127.0.0.1 (TCP and UDP)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from sidekick.core.errors import ConfigError, TemporaryError
from sidekick.ship.records import Record, Sink
from sidekick.ship.sinks.syslog import SyslogSink
from tests.conftest import free_port
from tests.ship.helpers import ship_config, shipping
from tests.ship.sinks.conftest import Rsyslog, make_records

MakeSink = Callable[..., Sink]

LEVELS = [("info", 6), ("error", 3), ("WARNING", 4), ("debug", 7), (None, 6), ("crit", 2)]


def leveled_records(n: int, tag: str) -> list[Record]:
    records = make_records(n)
    for i, record in enumerate(records):
        record["message"] = f"{tag} line {i}"
        level = LEVELS[i % len(LEVELS)][0]
        if level is not None:
            record["log.level"] = level
    return records


async def send_all(sink: Sink, records: list[Record], batch: int = 100) -> None:
    for start in range(0, len(records), batch):
        result = await sink.send(records[start : start + batch])
        assert result.all_delivered


async def test_tcp_every_line_arrives_with_app_name_and_severity(
    rsyslog: Rsyslog, make_sink: MakeSink
) -> None:
    records = leveled_records(600, "tcp")
    sink = make_sink(f"syslog+tcp://127.0.0.1:{rsyslog.port}?app_name=shop-web&facility=local3")
    await send_all(sink, records)
    lines = await rsyslog.wait_for(len(records))
    got = {line.msg: line for line in lines}
    assert len(lines) == len(records)
    for i, record in enumerate(records):
        line = got[record["message"]]
        assert line.app_name == "shop-web"
        assert line.severity == LEVELS[i % len(LEVELS)][1]
        assert line.facility == 19  # local3
        assert line.hostname == "node-1"


async def test_udp_every_line_arrives_with_app_name_and_severity(
    rsyslog: Rsyslog, make_sink: MakeSink
) -> None:
    records = leveled_records(200, "udp")
    sink = make_sink(f"syslog+udp://127.0.0.1:{rsyslog.port}", app_name="udp-app")
    await send_all(sink, records, batch=50)
    lines = await rsyslog.wait_for(len(records))
    got = {line.msg: line for line in lines}
    assert len(lines) == len(records)
    for i, record in enumerate(records):
        line = got[record["message"]]
        assert line.app_name == "udp-app"
        assert line.severity == LEVELS[i % len(LEVELS)][1]
        assert line.facility == 1  # user, the default


async def test_app_name_comes_from_a_record_field_when_configured(
    rsyslog: Rsyslog, make_sink: MakeSink
) -> None:
    records = make_records(2)
    del records[1]["k8s.container.name"]
    sink = make_sink(f"syslog+tcp://127.0.0.1:{rsyslog.port}", app_name_field="k8s.container.name")
    await send_all(sink, records)
    lines = await rsyslog.wait_for(2)
    assert sorted(line.app_name for line in lines) == ["nginx", "sidekick"]


async def test_timestamp_and_fields_travel_in_the_header_and_structured_data(
    rsyslog: Rsyslog, make_sink: MakeSink
) -> None:
    record = make_records(1, **{"http.response.status_code": 503, "note": 'say "hi" [x]'})[0]
    record["@timestamp"] = "2026-11-22T10:15:00.123456789Z"
    sink = make_sink(f"syslog+tcp://127.0.0.1:{rsyslog.port}")
    await send_all(sink, [record])
    [line] = await rsyslog.wait_for(1)
    assert line.timestamp == "2026-11-22T10:15:00.123456Z"
    assert line.structured_data.startswith("[sidekick@32473 ")
    assert 'log.offset="0"' in line.structured_data
    assert 'http.response.status_code="503"' in line.structured_data
    assert r'note="say \"hi\" [x\]"' in line.structured_data


async def test_message_with_a_newline_arrives_as_one_message_over_tcp(
    rsyslog: Rsyslog, make_sink: MakeSink
) -> None:
    # Octet counting frames by length, so a newline inside a message does not split it.
    record = make_records(1)[0]
    record["message"] = "Traceback (most recent call last):\n  File x"
    sink = make_sink(f"syslog+tcp://127.0.0.1:{rsyslog.port}", structured_data=False)
    await send_all(sink, [record])
    lines = await rsyslog.wait_for(1)
    assert [line.msg for line in lines] == ["Traceback (most recent call last):#012  File x"]
    assert lines[0].structured_data == "-"


async def test_udp_message_over_the_size_limit_is_truncated_and_counted(
    rsyslog: Rsyslog, make_sink: MakeSink
) -> None:
    record = make_records(1)[0]
    record["message"] = "x" * 3000
    sink = make_sink(f"syslog+udp://127.0.0.1:{rsyslog.port}?max_datagram_bytes=1000")
    assert isinstance(sink, SyslogSink)
    await send_all(sink, [record])
    [line] = await rsyslog.wait_for(1)
    assert sink.truncated == 1
    assert 0 < len(line.msg) < 1000
    assert set(line.msg) == {"x"}


async def test_tcp_reconnects_after_the_server_restarts(
    rsyslog: Rsyslog, make_sink: MakeSink
) -> None:
    sink = make_sink(f"syslog+tcp://127.0.0.1:{rsyslog.port}")
    await send_all(sink, leveled_records(10, "before"))
    assert len(await rsyslog.wait_for(10)) == 10
    await rsyslog.stop()
    with pytest.raises(TemporaryError, match="cannot connect"):
        await sink.send(leveled_records(1, "while-down"))
    await rsyslog.start()
    await send_all(sink, leveled_records(10, "after"))
    lines = await rsyslog.wait_for(20)
    assert sorted(line.msg for line in lines if line.msg.startswith("after")) == sorted(
        f"after line {i}" for i in range(10)
    )


async def test_tcp_connection_refused_is_a_temporary_error(make_sink: MakeSink) -> None:
    sink = make_sink(f"syslog+tcp://127.0.0.1:{free_port()}")
    with pytest.raises(TemporaryError, match="cannot connect"):
        await sink.send(make_records(1))


def test_format_is_rfc5424_with_pri_version_and_header_fields(make_sink: MakeSink) -> None:
    sink = make_sink(
        "syslog+tcp://127.0.0.1:514?facility=daemon&msgid=access&structured_data=false"
    )
    assert isinstance(sink, SyslogSink)
    record = {"@timestamp": "2026-11-22T10:15:00Z", "message": "hello", "log.level": "error"}
    text = sink.format(record).decode()
    host = sink.hostname
    assert text == f"<27>1 2026-11-22T10:15:00Z {host} sidekick - access - hello"


def test_unknown_facility_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="option 'facility' is 'kernel'; use user, daemon"):
        make_sink("syslog+udp://127.0.0.1:514?facility=kernel")


def test_severity_out_of_range_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="option 'severity' is 9; use a number from 0 to 7"):
        make_sink("syslog+tcp://127.0.0.1:514?severity=9")


async def test_udp_to_a_port_nobody_listens_on_is_counted_and_the_batch_sent_again(
    make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(f"syslog+udp://127.0.0.1:{free_port()}")
    assert isinstance(sink, SyslogSink)
    with caplog.at_level(logging.WARNING, logger="sidekick.ship.sinks.syslog"):
        for _ in range(20):
            try:
                await sink.send(make_records(1))
            except TemporaryError as exc:
                assert "sent again" in str(exc)
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no send noticed that nobody listens")
    assert sink.udp_errors >= 1
    assert "probably lost" in caplog.text


async def test_shipper_delivers_every_tailed_line_to_rsyslog(
    rsyslog: Rsyslog, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f"line {i}\n" for i in range(1000)))
    cfg = ship_config(
        inputs=[f"file://{logs}/*.log"],
        outputs=[f"syslog+tcp://127.0.0.1:{rsyslog.port}?app_name=web"],
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg):
        lines = await rsyslog.wait_for(1000)
    assert sorted(line.msg for line in lines) == sorted(f"line {i}" for i in range(1000))
    assert {line.app_name for line in lines} == {"web"}
