"""The webapp example's main container (seed 001): a Flask app that answers ``Hello, World!``.

Every request is logged as one JSON line to ``LOG_FILE`` (default ``/var/log/app/logs.txt``, a
volume shared with the log sidecar), which is how the seed hands its logs to the sidecar; the
file is rotated at 10 MiB so the volume stays bounded. Probes (``/healthz``) are logged too, as
many apps do: the sidecar's filter drops them. ``/boom`` answers 500 (the sidecar routes 5xx
lines to a second output), and a request's ``Authorization`` header is logged as it came, the
mistake the sidecar's redaction is there for (try it with an obviously fake token, like
``curl -H 'Authorization: Bearer FAKE-demo-token-0123456789' localhost:8080/``).

It is served by Werkzeug's threaded server rather than gunicorn to keep the image to one
dependency; the nginx sidecar in front of it does the connection handling a production server
would. Python as PID 1 ignores SIGTERM unless it installs a handler, so it installs one and exits
0 when the Pod is stopped.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from types import FrameType

from flask import Flask, Response, request
from werkzeug.serving import make_server

LOG_FILE = os.environ.get("LOG_FILE", "/var/log/app/logs.txt")
PORT = int(os.environ.get("PORT", "5000"))
BIND = os.environ.get("BIND", "127.0.0.1")

app = Flask(__name__)
request_log = logging.getLogger("webapp.requests")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        return json.dumps(line)


@app.get("/")
def hello() -> str:
    return "Hello, World!"


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@app.get("/boom")
def boom() -> tuple[str, int]:
    return "Internal Server Error\n", 500


@app.after_request
def log_request(response: Response) -> Response:
    fields = {
        "http.request.method": request.method,
        "url.path": request.path,
        "url.query": request.query_string.decode("latin-1"),
        "http.response.status_code": response.status_code,
        "client.address": request.headers.get("X-Real-IP", request.remote_addr),
    }
    auth = request.headers.get("Authorization")
    if auth:
        fields["http.request.header.authorization"] = auth
    target = request.full_path.rstrip("?")
    request_log.info(
        "%s %s %d", request.method, target, response.status_code, extra={"fields": fields}
    )
    return response


def main() -> int:
    os.makedirs(os.path.dirname(LOG_FILE), exist_ok=True)
    # Rotate by rename at 10 MiB, keeping one old file: the shipper reads a renamed file to its
    # end, and the shared emptyDir stays far below its sizeLimit.
    handler = logging.handlers.RotatingFileHandler(LOG_FILE, maxBytes=10 << 20, backupCount=1)
    handler.setFormatter(JsonLines())
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    request_log.propagate = False

    # Werkzeug logs every request (probes included) to stderr; the request log above, or
    # the event sent to the sidecar, is this app's record of requests.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(BIND, PORT, app, threaded=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, so it must run off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"webapp listening on http://{BIND}:{PORT}, logging requests to {LOG_FILE}", flush=True)
    server.serve_forever()
    # The app's last line, written after SIGTERM: the log sidecar must still ship it.
    request_log.info("webapp stopped", extra={"fields": {"event.name": "shutdown"}})
    print("webapp stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
