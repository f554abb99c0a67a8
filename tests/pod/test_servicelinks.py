"""Service environment variables, as the kubelet injects them, with the real ``sidekick up``."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import free_port
from tests.pod.examples import example, run_to_end


def _env(lines: list[str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_commands_example_finds_kubernetes_port_and_completes(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("commands.yaml"), timeout=60)
    assert done.code == 0, done.err
    assert done.lines("command-demo/command-demo-container") == [
        "command-demo",
        "tcp://127.0.0.1:443",
    ]
    assert done.container("command-demo", "command-demo-container")["restartCount"] == 0


def test_services_of_the_namespace_and_the_api_server_are_injected(tmp_path: Path) -> None:
    port = free_port()
    done = run_to_end(tmp_path, example("service-env.yaml", port=str(port)))
    assert done.code == 0, done.err
    env = _env(done.lines("client/client"))
    p = str(port)
    assert env["WEB_APP_SERVICE_HOST"] == "127.0.0.1"
    assert env["WEB_APP_SERVICE_PORT"] == p
    assert env["WEB_APP_PORT"] == f"tcp://127.0.0.1:{p}"
    assert env[f"WEB_APP_PORT_{p}_TCP"] == f"tcp://127.0.0.1:{p}"
    assert env[f"WEB_APP_PORT_{p}_TCP_PROTO"] == "tcp"
    assert env[f"WEB_APP_PORT_{p}_TCP_PORT"] == p
    assert env[f"WEB_APP_PORT_{p}_TCP_ADDR"] == "127.0.0.1"
    assert env["WEB_APP_SERVICE_PORT_HTTP"] == p
    assert env["WEB_APP_PORT_9102_UDP"] == "udp://127.0.0.1:9102"
    # Declared env wins over a service variable; $(VAR) can name service variables.
    assert env["WEB_APP_SERVICE_PORT_METRICS"] == "overridden"
    assert env["WEB_URL"] == f"http://127.0.0.1:{p}/"
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT_443_TCP"] == "tcp://127.0.0.1:443"
    # Another namespace's Service and a headless one give nothing.
    assert not any(k.startswith(("ELSEWHERE", "HEADLESS")) for k in env)


def test_enable_service_links_false_keeps_only_the_api_server(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("service-env.yaml", port=str(free_port())))
    assert done.code == 0, done.err
    env = _env(done.lines("no-links/client"))
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_PORT"] == "tcp://127.0.0.1:443"
    assert not any(k.startswith("WEB_") for k in env)


def test_named_target_port_is_where_the_service_is_reached(tmp_path: Path) -> None:
    port = free_port()
    text = f"""
apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports: [{{port: 80, targetPort: web}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: backend, labels: {{app: backend}}}}
spec:
  restartPolicy: Never
  containers:
    - name: server
      image: python
      ports: [{{name: web, containerPort: {port}}}]
      command: [sh, -c, 'printenv BACKEND_SERVICE_PORT BACKEND_PORT']
"""
    done = run_to_end(tmp_path, text)
    assert done.code == 0, done.err
    assert done.lines("backend/server") == [str(port), f"tcp://127.0.0.1:{port}"]
    assert f"Service backend: port 80 is reached at 127.0.0.1:{port} here" in done.err
