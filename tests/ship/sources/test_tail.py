"""The tail source, run in-process through the real pipeline into a real file output: records
and their fields. Its parts have test files of their own: start positions and checkpoint
entries (test_files), rotation and truncation (test_rotation), identity (test_identity),
reading (test_reader) and discovery (test_discover); the drain is in tests/ship/test_drain."""

from __future__ import annotations

from pathlib import Path

from tests.ship.helpers import shipping, wait_for
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
