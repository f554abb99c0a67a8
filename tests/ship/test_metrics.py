"""Output-specific events reach /metrics through ship.metrics.OutputEventsCollector."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.ship.helpers import ship_config, shipping, wait_for


async def test_syslog_udp_truncations_are_exported_as_output_events(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    port = receiver.getsockname()[1]
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("short\n" + "x" * 5000 + "\n")
    url = f"syslog+udp://127.0.0.1:{port}?max_datagram_bytes=1024"
    cfg = ship_config(
        inputs=[f"file://{logs}/*.log"], outputs=[url], state_dir=str(tmp_path / "state")
    )
    try:
        async with shipping(cfg) as sh:
            name = f"syslog+udp 127.0.0.1:{port}"
            labels = {"output": name, "event": "truncated"}

            def truncated() -> float:
                return sh.metric("sidekick_ship_output_events_total", **labels)

            await wait_for(lambda: truncated() == 1)
            assert (
                sh.metric("sidekick_ship_output_events_total", output=name, event="udp_errors") == 0
            )
            datagrams = []
            while True:
                try:
                    datagrams.append(receiver.recv(65536))
                except BlockingIOError:
                    break
            assert len(datagrams) == 2
            assert max(len(d) for d in datagrams) == 1024
    finally:
        receiver.close()
