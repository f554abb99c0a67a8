import io
import json
import logging
import subprocess
import sys

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


def test_json_logs_take_text_that_is_not_utf8() -> None:
    # A file name in Latin-1, as os.fsdecode gives it to Python: a lone surrogate.
    script = (
        "import logging, os\n"
        "from sidekick.core.logs import setup_logging\n"
        "setup_logging('json', 'info')\n"
        "name = os.fsdecode(b'/var/log/caf\\xe9.log')\n"
        "logging.getLogger('sidekick.test').warning('Cannot read %s.', name,"
        " extra={'fields': {'log.file.path': name}})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # no "--- Logging error ---" and its traceback
    obj = json.loads(lines[0])
    assert obj["message"] == "Cannot read /var/log/caf\ufffd.log."
    assert obj["log.file.path"] == "/var/log/caf\ufffd.log"
