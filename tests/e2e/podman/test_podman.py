"""The seed systems in real containers: the images build, and `podman kube play` runs all four
examples from their generated podman manifests (CI's bar is webapp and static-site; nginx-logs
and app-to-sidecar cost a few seconds more).

No image registry is reachable in CI, so the base image is Debian bookworm made with debootstrap
(``base-image.sh``; Debian's mirror is reachable) and passed to the Containerfiles as ``BASE``,
and the nginx image of the manifests is replaced by that base (it has Debian's nginx). The base
image is kept in podman's storage between runs, tagged by a hash of ``base-image.sh``: a rerun
with the same recipe skips debootstrap, a changed recipe builds a new one and removes the old
ones. Everything else (the built images, Pods, volumes) is removed when the module finishes.

podman reads ``containers.conf`` next to this file through ``CONTAINERS_CONF`` (runc, cgroupfs,
no default ulimits); the system's configuration is left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BASE_RECIPE = HERE / "base-image.sh"
BASE_REPO = "localhost/sidekick-e2e-base"
NGINX_IMAGE = "docker.io/nginxinc/nginx-unprivileged:1.27"

# The first test also pays for the module's fixtures: debootstrap (about 70 s here, longer on a
# slow mirror) and the image builds; 300 s, the suite's default, is too tight for that.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(HERE / "containers.conf")}


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def http_get(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def base_image() -> str:
    for tool in ("podman", "runc", "debootstrap"):
        assert shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists(), (
            f"{tool} is not installed; run scripts/system-deps.sh"
        )
    tag = f"{BASE_REPO}:{hashlib.sha256(BASE_RECIPE.read_bytes()).hexdigest()[:12]}"
    if podman("image", "exists", tag, check=False).returncode != 0:
        started = time.monotonic()
        subprocess.run(["bash", str(BASE_RECIPE), tag], env=podman_env(), check=True, timeout=600)
        print(f"built {tag} in {time.monotonic() - started:.0f}s")
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", BASE_REPO).stdout.split()
    for old in set(listed) - {tag}:
        podman("rmi", old, check=False)
    return tag


@dataclass
class Images:
    sidekick: str
    webapp: str
    events_app: str
    base: str


@pytest.fixture(scope="module")
def images(base_image: str) -> Iterator[Images]:
    version = f"e2e-{uuid.uuid4().hex[:8]}"
    python = podman(
        "run", "--rm", base_image, "python3", "-c",
        "import sys; print('%d.%d' % sys.version_info[:2])",
    ).stdout.strip()  # fmt: skip
    built = Images(
        f"localhost/sidekick:{version}",
        f"localhost/sidekick-webapp:{version}",
        f"localhost/sidekick-app-to-sidecar:{version}",
        base_image,
    )
    try:
        started = time.monotonic()
        subprocess.run(
            [str(REPO / "deploy" / "build-images.sh"), "--base", base_image, "--python", python,
             "--tag", version],
            env=podman_env(), check=True, timeout=600, capture_output=True,
        )  # fmt: skip
        print(f"built the images in {time.monotonic() - started:.0f}s")
        yield built
    finally:
        for name in ("sidekick", "sidekick-webapp", "sidekick-app-to-sidecar"):
            podman("rmi", "-f", f"localhost/{name}:{version}", check=False)


@dataclass
class PlayedPod:
    name: str
    port: int

    def container(self, name: str) -> str:
        return f"{self.name}-{name}"

    def logs(self, container: str) -> str:
        result = podman("logs", self.container(container), check=False)
        return result.stdout + result.stderr


def podman_manifest(example: str, images: Images, port: int) -> list[dict[str, Any]]:
    """The example's podman variant with this run's images, a free host port, and names made
    unique (podman names Pods after the Deployment and volumes after the volume or ConfigMap,
    host-wide), so a concurrent run of this test cannot collide with this one."""
    path = REPO / "examples" / example / f"{example}-podman.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    suffix = "-" + uuid.uuid4().hex[:6]
    for doc in docs:
        if doc["kind"] in {"Deployment", "ConfigMap"}:
            doc["metadata"]["name"] += suffix
        if doc["kind"] != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        for volume in spec["volumes"]:
            volume["name"] += suffix
            if "configMap" in volume:
                volume["configMap"]["name"] += suffix
        for c in spec.get("initContainers", []) + spec["containers"]:
            for mount in c.get("volumeMounts") or []:
                mount["name"] += suffix
    replace = {
        "localhost/sidekick:0.1.0": images.sidekick,
        "localhost/sidekick-webapp:0.1.0": images.webapp,
        "localhost/sidekick-app-to-sidecar:0.1.0": images.events_app,
        NGINX_IMAGE: images.base,
    }
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            c["image"] = replace[c["image"]]
            for p in c.get("ports") or []:
                if "hostPort" in p:
                    p["hostPort"] = port
    return docs


@pytest.fixture
def play(images: Images, tmp_path: Path) -> Iterator[Callable[[str], PlayedPod]]:
    played: list[tuple[Path, list[str]]] = []

    def run(example: str) -> PlayedPod:
        port = free_port()
        docs = podman_manifest(example, images, port)
        manifest = tmp_path / f"{example}.yaml"
        manifest.write_text(yaml.safe_dump_all(docs))
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        # podman 4 turns each emptyDir and ConfigMap volume into a named volume (a ConfigMap
        # volume is named after the ConfigMap) that outlives the Pod: removed after the test.
        volumes = [
            v["configMap"]["name"] if "configMap" in v else v["name"]
            for v in deployment["spec"]["template"]["spec"]["volumes"]
        ]
        pod = f"{deployment['metadata']['name']}-pod-0"
        played.append((pod, volumes))
        podman("kube", "play", str(manifest), timeout=180)
        return PlayedPod(pod, port)

    yield run
    for pod, volumes in played:
        podman("pod", "rm", "-f", "-t", "10", pod, timeout=180)
        podman("volume", "rm", "-f", *volumes)


def test_webapp_pod_answers_hello_world_and_ships_the_request_log_lines(
    play: Callable[[str], PlayedPod],
) -> None:
    pod = play("webapp")
    url = f"http://127.0.0.1:{pod.port}/"
    wait_for("the webapp through nginx", lambda: http_get(url + "readyz")[0] == 200)
    marker = uuid.uuid4().hex
    assert http_get(f"{url}?visit={marker}") == (200, "Hello, World!")
    shipped = lambda: pod.logs("log-shipper").count(marker)  # noqa: E731
    # Two records: the app's JSON line and nginx's access-log line.
    wait_for("both log lines in the shipper's output", lambda: shipped() >= 2, timeout=10)


def test_webapp_pod_containers_run_as_uid_10001_on_a_read_only_root(
    play: Callable[[str], PlayedPod],
) -> None:
    pod = play("webapp")
    for name in ("app", "nginx", "log-shipper"):
        fmt = "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}"
        seen = podman("inspect", "--format", fmt, pod.container(name)).stdout.split()
        assert seen == ["true", "10001:10001"], name
    url = f"http://127.0.0.1:{pod.port}/"
    wait_for("the webapp through nginx", lambda: http_get(url + "readyz")[0] == 200)


def test_nginx_logs_pod_ships_parsed_access_log_records(
    play: Callable[[str], PlayedPod],
) -> None:
    pod = play("nginx-logs")
    url = f"http://127.0.0.1:{pod.port}/"
    wait_for("nginx", lambda: http_get(url + "healthz")[0] == 200)
    marker = uuid.uuid4().hex
    assert http_get(f"{url}?visit={marker}")[0] == 200

    def records() -> list[dict[str, Any]]:
        lines = pod.logs("log-shipper").splitlines()
        return [json.loads(line) for line in lines if marker in line and line.startswith("{")]

    wait_for("the parsed access-log record", lambda: bool(records()), timeout=10)
    assert records()[0]["url.query"] == f"visit={marker}"


def test_app_to_sidecar_pod_delivers_the_apps_events(play: Callable[[str], PlayedPod]) -> None:
    pod = play("app-to-sidecar")
    url = f"http://127.0.0.1:{pod.port}/"
    # Classic sidecars start together: the app answers 503 until the ingest listens.
    marker = uuid.uuid4().hex
    wait_for("an event accepted", lambda: http_get(f"{url}?visit={marker}")[0] == 200)
    wait_for("the event shipped", lambda: marker in pod.logs("log-shipper"), timeout=10)


def test_static_site_pod_serves_a_new_commit_after_the_push_webhook_without_a_restart(
    play: Callable[[str], PlayedPod],
) -> None:
    pod = play("static-site")
    url = f"http://127.0.0.1:{pod.port}/"
    wait_for("the demo site", lambda: "Published by sidekick sync" in http_get(url)[1], 90)
    started = podman("inspect", "--format", "{{.State.StartedAt}}", pod.container("nginx")).stdout
    marker = uuid.uuid4().hex
    sync = pod.container("content-sync")
    podman("exec", sync, "sh", "-c", f"echo '<h1>{marker}</h1>' > /srv/demo-repo/index.html")
    podman(
        "exec", sync, "git", "-C", "/srv/demo-repo", "-c", "user.name=t", "-c", "user.email=t@t",
        "commit", "-qam", "new content",
    )  # fmt: skip
    assert http_get(url + "-/sync", method="POST")[0] in {200, 202, 204}
    # The poll period is 30 s; seeing it within 10 s shows the webhook did it.
    wait_for("the new commit served", lambda: marker in http_get(url)[1], timeout=10)
    after = podman("inspect", "--format", "{{.State.StartedAt}}", pod.container("nginx")).stdout
    assert after == started


def stops_cleanly(name: str, ready_url: str) -> None:
    check = f"import urllib.request as u, sys; sys.exit(u.urlopen({ready_url!r}, timeout=1).status != 200)"
    wait_for(
        f"{name} to be ready",
        lambda: podman("exec", name, "python3", "-c", check, check=False).returncode == 0,
        timeout=30,
    )
    started = time.monotonic()
    # With a 20 s grace period, an exit 0 well inside it means PID 1 handled SIGTERM itself;
    # an ignored SIGTERM would end in SIGKILL (exit 137) after 20 s.
    podman("stop", "-t", "20", name, timeout=60)
    took = time.monotonic() - started
    code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    assert (code, took < 10) == ("0", True), f"exit {code} after {took:.1f}s"


HARDENED = ["--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"]


def test_sidekick_container_stops_cleanly_on_sigterm(images: Images) -> None:
    name = f"sidekick-stop-{uuid.uuid4().hex[:8]}"
    podman(
        "run", "-d", "--name", name, *HARDENED, "--tmpfs", "/var/lib/sidekick",
        images.sidekick, "ship", "--input=file:///var/lib/sidekick/*.log", "--output=stdout:",
        "--state-dir=/var/lib/sidekick/state", "--admin-addr=127.0.0.1:8088",
    )  # fmt: skip
    try:
        stops_cleanly(name, "http://127.0.0.1:8088/readyz")
    finally:
        podman("rm", "-f", name, check=False)


def test_webapp_container_stops_cleanly_on_sigterm(images: Images) -> None:
    name = f"sidekick-webapp-stop-{uuid.uuid4().hex[:8]}"
    podman(
        "run", "-d", "--name", name, *HARDENED, "--tmpfs", "/var/log/app", images.webapp,
    )  # fmt: skip
    try:
        stops_cleanly(name, "http://127.0.0.1:5000/healthz")
    finally:
        podman("rm", "-f", name, check=False)
