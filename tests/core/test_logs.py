import io
import json
import logging

from sidekick.core.logs import setup_logging


def test_json_log_lines_are_one_object_each() -> None:
    buf = io.StringIO()
    setup_logging("json", "info", stream=buf)
    logging.getLogger("sidekick.test").info("Shipped %d lines.", 5, extra={"fields": {"n": 5}})
    logging.getLogger("sidekick.test").debug("hidden")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["message"] == "Shipped 5 lines."
    assert obj["log.level"] == "info"
    assert obj["log.logger"] == "sidekick.test"
    assert obj["n"] == 5
    assert obj["@timestamp"].endswith("Z")


def test_text_log_lines_are_plain() -> None:
    buf = io.StringIO()
    setup_logging("text", "info", stream=buf)
    logging.getLogger("sidekick.test").warning("Disk is full.")
    line = buf.getvalue().strip()
    assert "WARNING" in line
    assert line.endswith("sidekick.test: Disk is full.")
