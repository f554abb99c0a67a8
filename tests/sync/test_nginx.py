"""The seeds' setup for real: nginx serves the link while ``sidekick sync`` publishes."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.sync.conftest import CliSync, Upstream, wait_for

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
{user}
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    open_file_cache off;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(docroot: Path) -> str:
        work = tmp_path / "nginx"
        work.mkdir()
        port = free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=work, port=port, root=docroot, user=user))
        proc = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(work)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}/index.html"
        wait_for(lambda: fetch(url) is not None, timeout=10)
        return url

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return None


def test_nginx_serves_each_new_commit_through_the_link(
    upstream: Upstream,
    tmp_path: Path,
    cli_sync: Callable[..., CliSync],
    nginx: Callable[[Path], str],
) -> None:
    root = tmp_path / "root"
    app = cli_sync(
        ["--repo", upstream.url, "--root", str(root), "--link", "html", "--period", "1h"]
    )
    app.wait_ready()
    url = nginx(root / "html")
    assert fetch(url) == "rev 0\n"
    for n in range(1, 6):
        upstream.commit({"index.html": f"rev {n}\n"})
        assert app.request("/sync", "POST")[0] == 202
        started = time.monotonic()
        wait_for(lambda n=n: fetch(url) == f"rev {n}\n", timeout=10)
        assert time.monotonic() - started < 5
    app.stop()
