"""The four examples, unchanged but for their ports, run under `sidekick up` with real nginx,
git, Flask and the shipper, and do what their READMEs promise.

Each test copies the example's manifest with its fixed ports swapped for free ones (other
programs on a shared machine may hold 8080), runs `sidekick up` from the repository root (the
app containers' `sidekick.dev/command.*` annotations name their scripts relative to it), and
talks to the Pod over 127.0.0.1. The demo test runs `python -m sidekick.demo` as `make demo`
does.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

REPO = Path(__file__).resolve().parents[2]
# The fixed ports of each example (see the header of its manifest).
PORTS = {
    "nginx-logs": [8081, 9081],
    "webapp": [8080, 5000, 9080],
    "static-site": [8082, 9082],
    "app-to-sidecar": [8083, 8084, 9083],
    "node-logs": [9084],
}

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> float:
    """Poll ``check`` until true; return the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def http(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


@dataclass
class Running:
    example: str
    ports: dict[int, int]
    run_dir: Path
    output_file: Path
    admin: int
    proc: subprocess.Popen[bytes] = field(repr=False)

    def url(self, example_port: int, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[example_port]}{path}"

    def lines(self, container: str) -> list[str]:
        prefix = re.compile(rf"^{re.escape(self.example)}/{re.escape(container)}\s*\| ")
        text = self.output_file.read_text(errors="replace")
        return [prefix.sub("", line) for line in text.splitlines() if prefix.match(line)]

    def records(self, container: str, marker: str) -> list[dict[str, Any]]:
        found = []
        for line in self.lines(container):
            if marker in line and line.startswith("{"):
                found.append(json.loads(line))
        return found

    def status(self) -> dict[str, Any]:
        code, body = http(f"http://127.0.0.1:{self.admin}/status")
        assert code == 200, body
        pod: dict[str, Any] = json.loads(body)["pods"][0]
        return pod


@contextlib.contextmanager
def run_up(
    example: str,
    tmp_path: Path,
    variant: str = "",
    output: str = "stdout:",
    replace: dict[str, str] | None = None,
) -> Iterator[Running]:
    ports: dict[int, int] = {}
    for p in PORTS[example]:
        # Each port distinct: a port just closed may be handed out again.
        while (port := free_port()) in ports.values():
            pass
        ports[p] = port
    text = (REPO / "examples" / example / f"{example}{variant}.yaml").read_text()
    # The one value that picks where the shipper sends records.
    text = text.replace('value: "stdout:"', f"value: {json.dumps(output)}")
    for old, new in ports.items():
        text = re.sub(rf"\b{old}\b", str(new), text)
    for old_text, new_text in (replace or {}).items():  # e.g. a hostPath made a temp dir
        text = text.replace(old_text, new_text)
    manifest = tmp_path / f"{example}.yaml"
    manifest.write_text(text)
    while (admin := free_port()) in ports.values():
        pass
    out_file = tmp_path / "up.out"
    # nginx started as root (CI) serves as "nobody", which cannot enter pytest's private
    # tmp_path; a world-searchable run dir is what a checkout's .sidekick/run is.
    run_dir = Path(tempfile.mkdtemp(prefix=f"sidekick-{example}-"))
    run_dir.chmod(0o755)
    with out_file.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidekick", "up", str(manifest), "--run-dir", str(run_dir),
             "--no-color", "--fast-backoff", "--admin-addr", f"127.0.0.1:{admin}"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    running = Running(example, ports, run_dir, out_file, admin, proc)
    try:
        wait_for(f"{example} to be ready", lambda: ready(running), timeout=60)
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    assert code == 0, out_file.read_text()[-3000:]


def ready(running: Running) -> bool:
    if running.proc.poll() is not None:
        raise AssertionError(f"sidekick up exited early:\n{running.output_file.read_text()}")
    code, body = http(f"http://127.0.0.1:{running.admin}/status")
    return code == 200 and all(p["ready"] for p in json.loads(body)["pods"])


def test_webapp_answers_hello_world_and_the_request_is_shipped_within_a_second(
    tmp_path: Path,
) -> None:
    with run_up("webapp", tmp_path) as pod:
        marker = uuid.uuid4().hex
        assert http(pod.url(8080, f"/?visit={marker}")) == (200, "Hello, World!")
        took = wait_for(
            "the app's and nginx's log lines in the shipper's output",
            lambda: len(pod.records("log-shipper", marker)) == 2,
            timeout=10,
        )
        files = sorted(
            r["log.file.path"].rsplit("/", 1)[1] for r in pod.records("log-shipper", marker)
        )
        assert (files, took < 1.0) == (["access.log", "logs.txt"], True), f"took {took:.2f}s"


def test_webapp_ships_the_apps_json_line_and_nginxs_access_line_parsed(tmp_path: Path) -> None:
    with run_up("webapp", tmp_path) as pod:
        marker = uuid.uuid4().hex
        assert http(pod.url(8080, f"/?visit={marker}"))[0] == 200
        wait_for(
            "the app's and nginx's records",
            lambda: len(pod.records("log-shipper", marker)) == 2,
            timeout=10,
        )
        by_file = {
            r["log.file.path"].rsplit("/", 1)[1]: r for r in pod.records("log-shipper", marker)
        }
    app, nginx = by_file["logs.txt"], by_file["access.log"]
    # ?parser=json: the app's own fields and message, not its JSON text.
    assert (app["message"], app["level"], app["url.query"]) == (
        f"GET /?visit={marker} 200",
        "info",
        f"visit={marker}",
    )
    # ?parser=nginx: the combined line's fields; message keeps the whole line.
    assert (nginx["http.request.method"], nginx["url.query"]) == ("GET", f"visit={marker}")
    assert nginx["http.response.status_code"] == 200


def shipped_metric(pod: Running, port: int, name: str, **labels: str) -> float:
    _code, text = http(pod.url(port, "/metrics"))
    want = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{") and want <= set(head[len(name) + 1 : -1].split(",")):
            return float(value)
    return 0.0


def test_webapp_ship_pipeline_drops_probe_lines(tmp_path: Path) -> None:
    with run_up("webapp", tmp_path) as pod:
        marker = uuid.uuid4().hex
        for path in ("/healthz", "/readyz"):
            assert http(pod.url(8080, f"{path}?probe={marker}"))[0] == 200
        assert http(pod.url(8080, f"/?after={marker}"))[0] == 200
        # The request after the probes is shipped: the probes' lines were read before it.
        wait_for(
            "the request after the probes",
            lambda: len(pod.records("log-shipper", f"after={marker}")) == 2,
            timeout=10,
        )
        dropped = shipped_metric(
            pod,
            9080,
            "sidekick_ship_component_records_total",
            component="no-probes",
            direction="dropped",
        )
        lines = pod.lines("log-shipper")
    # nginx logs the probes (its /healthz, its /readyz and the app's /healthz behind it) and
    # the kubelet's probes: the filter dropped every one of them.
    assert dropped >= 3
    assert not [line for line in lines if f"probe={marker}" in line]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert not [r for r in records if r.get("url.path") in ("/healthz", "/readyz")]


def test_webapp_ship_pipeline_masks_the_bearer_token_the_app_logs(tmp_path: Path) -> None:
    token = "FAKE-demo-token-" + uuid.uuid4().hex
    with run_up("webapp", tmp_path) as pod:
        marker = uuid.uuid4().hex
        request = urllib.request.Request(
            pod.url(8080, f"/?visit={marker}"), headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200
        wait_for(
            "the app's and nginx's records",
            lambda: len(pod.records("log-shipper", marker)) == 2,
            timeout=10,
        )
        (app,) = [r for r in pod.records("log-shipper", marker) if "level" in r]
        text = pod.output_file.read_text(errors="replace")
    assert app["http.request.header.authorization"] == "Bearer [REDACTED:bearer_token]"
    assert token not in text


def test_webapp_ship_pipeline_routes_5xx_lines_to_the_errors_output(tmp_path: Path) -> None:
    with run_up("webapp", tmp_path) as pod:
        marker = uuid.uuid4().hex
        assert http(pod.url(8080, f"/boom?visit={marker}"))[0] == 500
        assert http(pod.url(8080, f"/?visit={marker}"))[0] == 200
        # /boom: the app's and nginx's lines, each to both outputs; /: two lines, one output.
        wait_for(
            "every record of both requests",
            lambda: len(pod.records("log-shipper", marker)) == 6,
            timeout=10,
        )
        records = pod.records("log-shipper", marker)
    boom = [r for r in records if r["url.path"] == "/boom"]
    ok = [r for r in records if r["url.path"] == "/"]
    # The errors output's copies are marked; the other output's records are not (a transform
    # on one branch never changes another branch's records).
    assert sorted(r.get("event.kind", "") for r in boom) == ["", "", "alert", "alert"]
    assert [r.get("event.kind") for r in ok] == [None, None]


@pytest.mark.parametrize("variant", ["", "-classic"])
def test_webapp_ships_the_last_lines_written_as_the_pod_stops(tmp_path: Path, variant: str) -> None:
    # The Pod is stopped right after a request: its log line, and the line the app writes
    # after SIGTERM, must reach the shipper's output before it exits. With classic sidecars
    # every container gets SIGTERM at once, so the app's last line comes after the shipper's.
    with run_up("webapp", tmp_path, variant) as pod:
        wait_for("the app to answer", lambda: http(pod.url(8080))[0] == 200, timeout=30)
        marker = uuid.uuid4().hex
        assert http(pod.url(8080, f"/?visit={marker}"))[0] == 200
        started = len(pod.records("log-shipper", "webapp stopped"))
    shipped = {r["log.file.path"].rsplit("/", 1)[1] for r in pod.records("log-shipper", marker)}
    stops = pod.records("log-shipper", "webapp stopped")
    assert shipped == {"access.log", "logs.txt"}, pod.output_file.read_text()[-3000:]
    assert (started, len(stops), stops[-1]["event.name"]) == (0, 1, "shutdown")


def test_nginx_logs_ships_parsed_access_log_records(tmp_path: Path) -> None:
    with run_up("nginx-logs", tmp_path) as pod:
        marker = uuid.uuid4().hex
        assert http(pod.url(8081, f"/?visit={marker}"))[0] == 200
        wait_for("the access-log record", lambda: pod.records("log-shipper", marker), timeout=10)
        (record,) = pod.records("log-shipper", marker)
        assert (record["http.request.method"], record["http.response.status_code"]) == ("GET", 200)
        assert record["url.query"] == f"visit={marker}"


def test_static_site_serves_a_new_commit_after_the_push_webhook_without_restarting_nginx(
    tmp_path: Path,
) -> None:
    with run_up("static-site", tmp_path) as pod:
        assert "Published by sidekick sync" in http(pod.url(8082))[1]
        repo = pod.run_dir / "static-site" / "volumes" / "demo-repo"
        marker = uuid.uuid4().hex
        (repo / "index.html").write_text(f"<h1>{marker}</h1>\n")
        # The repository belongs to the demo-repo container's runAsUser (10001), not to us.
        subprocess.run(
            ["git", "-c", "safe.directory=*", "-c", "user.name=t", "-c", "user.email=t@t",
             "commit", "-qam", "new content"],
            cwd=repo, check=True,
        )  # fmt: skip
        assert http(pod.url(8082, "/-/sync"), method="POST")[0] in {200, 202, 204}
        # The poll period is 30 s: seen within 5 s means the webhook did it.
        wait_for("the new commit served", lambda: marker in http(pod.url(8082))[1], timeout=5)
        (nginx,) = pod.status()["containerStatuses"]
        assert nginx["restartCount"] == 0


def test_static_site_webhook_path_refuses_get(tmp_path: Path) -> None:
    with run_up("static-site", tmp_path) as pod:
        assert http(pod.url(8082, "/-/sync"))[0] == 403


def test_app_to_sidecar_events_arrive_at_the_shippers_output(tmp_path: Path) -> None:
    with run_up("app-to-sidecar", tmp_path) as pod:
        markers = [uuid.uuid4().hex for _ in range(3)]
        for marker in markers:
            assert http(pod.url(8083, f"/?visit={marker}"))[0] == 200
        wait_for(
            "every event in the shipper's output",
            lambda: all(pod.records("log-shipper", m) for m in markers),
            timeout=10,
        )
        (event,) = pod.records("log-shipper", markers[0])
        assert event["event.name"] == "page_view"


def test_demo_prints_a_url_that_answers_hello_world_and_ships_the_request() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidekick.demo"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            match = re.search(r"curl (http://\S+)", line)
            url = match.group(1) if match else ""
        assert url, "".join(seen)
        marker = uuid.uuid4().hex
        assert http(f"{url}?visit={marker}") == (200, "Hello, World!")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if line.startswith("webapp/log-shipper") and marker in line:
                break
        assert any(marker in line and "log-shipper" in line for line in seen), "".join(seen)
    finally:
        # Ctrl-C reaches the whole foreground process group: the demo and `sidekick up`.
        os.killpg(proc.pid, signal.SIGINT)
        remaining, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(seen) + remaining


# The main container's port and a path that answers 200 once the Pod works end to end.
SMOKE = {
    "nginx-logs": (8081, "/"),
    "webapp": (8080, "/"),
    "static-site": (8082, "/"),
    "app-to-sidecar": (8083, "/"),
}


@pytest.mark.parametrize("variant", ["-classic", "-podman"])
@pytest.mark.parametrize("example", list(SMOKE))
def test_generated_variant_runs_under_up_and_answers(
    example: str, variant: str, tmp_path: Path
) -> None:
    port, path = SMOKE[example]
    with run_up(example, tmp_path, variant) as pod:
        # Classic sidecars start together with the app, so the first answers may still fail.
        wait_for(f"{example} to answer", lambda: http(pod.url(port, path))[0] == 200, timeout=30)


class LokiPushes(BaseHTTPRequestHandler):
    """Loki's push endpoint as documented: gzip or plain JSON in, 204 out."""

    pushed: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/loki/api/v1/push":
            self.pushed.append(json.loads(body))
            self.send_response(204)
        else:
            self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_webapp_ships_to_loki_when_log_output_is_set_to_a_loki_url(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), LokiPushes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        loki = f"loki://127.0.0.1:{server.server_address[1]}"
        with run_up("webapp", tmp_path, output=loki) as pod:
            marker = uuid.uuid4().hex
            assert http(pod.url(8080, f"/?visit={marker}"))[0] == 200

            def pushed_lines() -> list[str]:
                return [
                    value[1]
                    for push in list(LokiPushes.pushed)
                    for stream in push["streams"]
                    for value in stream["values"]
                    if marker in value[1]
                ]

            wait_for("both log lines pushed to Loki", lambda: len(pushed_lines()) == 2, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
