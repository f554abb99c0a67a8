"""The app-to-sidecar example's main container (seed 004): an app that POSTs an event per request
to its log sidecar over localhost.

Each request to ``/`` sends one JSON event to ``INGEST_URL`` (the shipper's HTTP ingest,
``POST /v1/logs``) and answers only after the sidecar accepted it (``202``), so an event is never
lost silently: if the sidecar is down or refuses the event, the request fails with ``503`` and the
reason. Standard library only (no HTTP client dependency); Flask for the web side, like the webapp
example. Installs its own SIGTERM handler because Python as PID 1 would ignore SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from types import FrameType

from flask import Flask, request
from werkzeug.serving import make_server

INGEST_URL = os.environ.get("INGEST_URL", "http://127.0.0.1:8084/v1/logs")
PORT = int(os.environ.get("PORT", "8083"))
BIND = os.environ.get("BIND", "0.0.0.0")
TIMEOUT_S = float(os.environ.get("INGEST_TIMEOUT_SECONDS", "5"))

app = Flask(__name__)


def send_event(event: dict[str, object]) -> None:
    body = json.dumps(event).encode()
    req = urllib.request.Request(
        INGEST_URL, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        if resp.status != 202:
            raise RuntimeError(f"ingest answered {resp.status}, expected 202")


@app.get("/")
def index() -> tuple[str, int]:
    event = {
        "message": f"{request.method} {request.full_path.rstrip('?')}",
        "event.name": "page_view",
        "http.request.method": request.method,
        "url.path": request.path,
        "user_agent.original": request.headers.get("User-Agent", ""),
        "app.request_time": time.time(),
    }
    try:
        send_event(event)
    except (OSError, RuntimeError, urllib.error.URLError) as exc:
        return f"event not delivered to the sidecar at {INGEST_URL}: {exc}\n", 503
    return "Hello from the app; your visit was sent to the sidecar.\n", 200


@app.get("/healthz")
def healthz() -> str:
    return "ok"


def main() -> int:
    # Werkzeug logs every request (probes included) to stderr; the request log above, or
    # the event sent to the sidecar, is this app's record of requests.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(BIND, PORT, app, threaded=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"app listening on http://{BIND}:{PORT}, sending events to {INGEST_URL}", flush=True)
    server.serve_forever()
    print("app stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
