"""Configuration reload (SIGHUP, ``--watch-config``) of a real shipper: a changed graph is
applied while lines stream and none is lost; a configuration that fails the check is refused
and the running one goes on; the reload counter and the config hash are on /metrics."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tests.ship.helpers import ShipperProcess, read_ndjson, wait_for_sync
from tests.ship.test_rotation import Output

LINES = 200_000
RELOADS = 10


def write_config(path: Path, tmp_path: Path, n: int, **over: Any) -> None:
    """Config number ``n``: a filter dropping lines that never occur (its expression names
    ``n``), into a file output; the input changes (an exclude pattern) at every odd ``n``, so
    half the reloads restart the inputs and half replace only the filter."""
    web: dict[str, Any] = {"url": f"file://{tmp_path}/logs/*.log"}
    if n:
        web["exclude"] = [f"*.skip{(n + 1) // 2}"]
    ship: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "inputs": {"web": web},
        "transforms": {
            "quiet": {
                "type": "filter",
                "inputs": ["web"],
                "drop": f'record["message"] == "never-{n}"',
            }
        },
        "outputs": {"all": {"url": f"file://{tmp_path}/out.ndjson", "inputs": ["quiet"]}},
    }
    ship.update(over)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"ship": ship}))
    os.replace(tmp, path)


def config_hash(shipper: ShipperProcess) -> str:
    _status, text = shipper.get("/metrics")
    found = re.findall(r'^sidekick_ship_config_info\{hash="([0-9a-f]+)"\} 1\.0$', text, re.M)
    assert len(found) == 1, found
    return found[0]


def start(tmp_path: Path, *extra: str) -> tuple[ShipperProcess, Path]:
    (tmp_path / "logs").mkdir(exist_ok=True)
    config = tmp_path / "ship.yaml"
    write_config(config, tmp_path, 0)
    shipper = ShipperProcess(["--config", str(config), *extra], tmp_path / "shipper.log")
    shipper.start().wait_ready()
    return shipper, config


def test_ten_sighup_reloads_while_200000_lines_stream_lose_none(tmp_path: Path) -> None:
    shipper, config = start(tmp_path)
    out = Output(tmp_path / "out.ndjson")
    written = 0
    done = threading.Event()

    def writer() -> None:
        nonlocal written
        fd = os.open(tmp_path / "logs" / "app.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            step = 2000
            for seq in range(0, LINES, step):
                os.write(fd, b"".join(b"%08d\n" % s for s in range(seq, seq + step)))
                written = seq + step
                time.sleep(0.05)
        finally:
            os.close(fd)
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    try:
        hashes = {config_hash(shipper)}
        for n in range(1, RELOADS + 1):
            # Spread the reloads over the stream.
            wait_for_sync(lambda n=n: written >= n * LINES // (RELOADS + 2), timeout=120)
            write_config(config, tmp_path, n)
            shipper.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            wait_for_sync(
                lambda n=n: (
                    shipper.metric("sidekick_ship_config_reloads_total", result="applied") == n
                ),
                timeout=60,
            )
            hashes.add(config_hash(shipper))
        t.join(120)
        assert done.is_set()

        def all_arrived() -> bool:
            out.poll()
            return len(out.seen) == LINES

        wait_for_sync(all_arrived, timeout=120)
        assert shipper.terminate() == 0
    finally:
        done.wait(120)
        t.join(10)
        shipper.stop_quietly()
    out.poll()
    assert set(out.seen) == set(range(LINES))
    # Reloads stop inputs at a batch boundary and deliver what is in flight: nothing twice.
    assert max(out.seen.values()) == 1
    assert len(hashes) == RELOADS + 1
    log = (tmp_path / "shipper.log").read_text()
    assert log.count("Reloaded the configuration (inputs restarted)") == RELOADS // 2
    assert log.count("Reloaded the configuration (transforms and outputs replaced)") == (
        RELOADS // 2
    )
    assert "Traceback" not in log


def test_a_config_that_fails_the_check_is_refused_and_the_old_one_goes_on(
    tmp_path: Path,
) -> None:
    shipper, config = start(tmp_path)
    try:
        before = config_hash(shipper)
        write_config(config, tmp_path, 1)
        broken = yaml.safe_load(config.read_text())
        broken["ship"]["outputs"]["all"]["inputs"] = ["nothing"]
        config.write_text(yaml.safe_dump(broken))
        shipper.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_for_sync(
            lambda: shipper.metric("sidekick_ship_config_reloads_total", result="refused") == 1
        )
        assert config_hash(shipper) == before
        assert "Reload refused, the running configuration goes on" in shipper.log()
        assert "'nothing', which is no input or transform" in shipper.log()
        # The old configuration still ships.
        (tmp_path / "logs" / "a.log").write_text("after\n")
        wait_for_sync(lambda: len(read_ndjson(tmp_path / "out.ndjson")) == 1)
        assert shipper.terminate() == 0
    finally:
        shipper.stop_quietly()


def test_watch_config_applies_a_changed_file(tmp_path: Path) -> None:
    shipper, config = start(tmp_path, "--watch-config")
    try:
        before = config_hash(shipper)
        # The new graph drops what the old one shipped.
        write_config(
            config,
            tmp_path,
            2,
            transforms={
                "quiet": {
                    "type": "filter",
                    "inputs": ["web"],
                    "drop": 'record["message"] == "drop-me"',
                }
            },
        )
        wait_for_sync(
            lambda: shipper.metric("sidekick_ship_config_reloads_total", result="applied") == 1,
            timeout=20,
        )
        assert config_hash(shipper) != before
        (tmp_path / "logs" / "a.log").write_text("keep\ndrop-me\nkeep too\n")
        wait_for_sync(lambda: len(read_ndjson(tmp_path / "out.ndjson")) == 2)
        time.sleep(0.5)
        messages = [r["message"] for r in read_ndjson(tmp_path / "out.ndjson")]
        assert messages == ["keep", "keep too"]
        assert shipper.terminate() == 0
    finally:
        shipper.stop_quietly()


def test_a_sighup_with_an_unchanged_config_changes_nothing(tmp_path: Path) -> None:
    shipper, _config = start(tmp_path)
    try:
        shipper.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_for_sync(
            lambda: shipper.metric("sidekick_ship_config_reloads_total", result="unchanged") == 1
        )
        assert shipper.metric("sidekick_ship_config_reloads_total", result="applied") == 0
        assert shipper.terminate() == 0
    finally:
        shipper.stop_quietly()
