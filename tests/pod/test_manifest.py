"""Manifest checks: schema errors with field paths, local-runner checks, exit code 2."""

from __future__ import annotations

import copy
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidekick.core.errors import ConfigError
from sidekick.pod.manifest import read_manifests
from sidekick.pod.paths import prepare
from tests.conftest import SIDEKICK


def up(tmp_path: Path, manifest: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "pod.yaml"
    path.write_text(textwrap.dedent(manifest))
    return subprocess.run(
        [*SIDEKICK, "up", str(path), "--run-dir", str(tmp_path / "run"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def problems(tmp_path: Path, manifest: str) -> str:
    path = tmp_path / "pod.yaml"
    path.write_text(textwrap.dedent(manifest))
    with pytest.raises(ConfigError) as info:
        read_manifests([str(path)])
    return str(info.value)


def test_wrong_type_is_reported_with_field_path_and_exit_2(tmp_path: Path) -> None:
    result = up(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
            - name: a
              command: [sleep, "1"]
            - name: b
              command: [sleep, "1"]
              ports: [{containerPort: http}]
        """,
    )
    assert result.returncode == 2
    assert "spec.containers[1].ports[0].containerPort: must be an integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_problem_is_listed_one_per_line(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
            - name: a
              command: [sleep, "1"]
              bogus: 1
              livenessProbe: {exec: {command: [true]}, periodSeconds: soon}
        """,
    )
    lines = text.splitlines()
    assert any("spec.containers[0].bogus: unknown field" in line for line in lines)
    assert any(
        "spec.containers[0].livenessProbe.periodSeconds: must be an integer" in line
        for line in lines
    )


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
            - command: [sleep, "1"]
        """,
    )
    assert "spec.containers[0].name: required value is missing" in text


def test_container_without_command_names_container_and_fix(tmp_path: Path) -> None:
    result = up(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
            - name: app
              image: example/app:1.0
        """,
    )
    assert result.returncode == 2
    assert "container 'app' has no command" in result.stderr
    assert "sidekick.dev/command.app" in result.stderr


def test_command_annotation_as_list_or_shell_words(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(
        textwrap.dedent(
            """
            apiVersion: v1
            kind: Pod
            metadata:
              name: web
              annotations:
                sidekick.dev/command.a: '[python3, -m, http.server]'
                sidekick.dev/command.b: sh -c 'echo "hi there"'
            spec:
              containers:
                - {name: a, image: python, args: ["8000"]}
                - {name: b, image: busybox}
            """
        )
    )
    pod = read_manifests([str(path)]).pods[0]
    assert pod.containers[0].command == ["python3", "-m", "http.server"]
    assert pod.containers[0].args == ["8000"]
    assert pod.containers[1].command == ["sh", "-c", 'echo "hi there"']


def test_set_image_gives_a_command_to_an_image(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"
        "spec: {containers: [{name: a, image: 'registry.example/tools/busybox:1.36'}]}\n"
    )
    pod = read_manifests([str(path)], set_image={"busybox": "sleep 5"}).pods[0]
    assert pod.containers[0].command == ["sleep", "5"]


def test_grpc_probe_is_named_unsupported(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
            - name: a
              command: [sleep, "1"]
              readinessProbe: {grpc: {port: 9000}}
        """,
    )
    assert "spec.containers[0].readinessProbe.grpc: gRPC probes are not supported" in text


def test_a_probe_grace_period_is_validated_as_the_api_server_does(tmp_path: Path) -> None:
    """Probe.terminationGracePeriodSeconds: "Minimum value is 1", and a readiness probe
    cannot set it (the API server refuses both)."""
    text = problems(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
            - name: a
              command: [sleep, "1"]
              livenessProbe: {exec: {command: ["true"]}, terminationGracePeriodSeconds: 0}
              startupProbe: {exec: {command: ["true"]}, terminationGracePeriodSeconds: -1}
              readinessProbe: {exec: {command: ["true"]}, terminationGracePeriodSeconds: 5}
        """,
    )
    assert (
        "spec.containers[0].livenessProbe.terminationGracePeriodSeconds: 0 is not a whole "
        "number of seconds of at least 1; set 1 or more, or remove it to use the Pod's "
        "terminationGracePeriodSeconds"
    ) in text
    assert "startupProbe.terminationGracePeriodSeconds: -1 is not a whole number" in text
    assert (
        "spec.containers[0].readinessProbe.terminationGracePeriodSeconds: readiness probes "
        "cannot set it, as a failed one kills nothing; remove it"
    ) in text


def test_negative_probe_settings_are_refused(tmp_path: Path) -> None:
    """The API server refuses a negative delay, period, timeout or threshold; here a
    negative period would make the probe run without pause."""
    text = problems(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
            - name: a
              command: [sleep, "1"]
              readinessProbe:
                exec: {command: ["true"]}
                periodSeconds: -1
                timeoutSeconds: -2
                failureThreshold: -3
        """,
    )
    where = "spec.containers[0].readinessProbe"
    assert f"{where}.periodSeconds: -1 is negative; use 0 or more (0 is the default)" in text
    assert f"{where}.timeoutSeconds: -2 is negative" in text
    assert f"{where}.failureThreshold: -3 is negative" in text


def test_unknown_volume_and_missing_configmap_are_reported(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          volumes: [{name: conf, configMap: {name: web-conf}}]
          containers:
            - name: a
              command: [sleep, "1"]
              volumeMounts: [{name: data, mountPath: /data}]
        """,
    )
    assert "spec.volumes[0].configMap.name: ConfigMap 'web-conf' is not in the given files" in text
    assert "spec.containers[0].volumeMounts[0].name: no volume named 'data'" in text


def test_other_kinds_are_skipped_with_a_warning(tmp_path: Path) -> None:
    result = up(
        tmp_path,
        """
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec: {ports: [{port: 80}]}
        ---
        apiVersion: policy/v1
        kind: PodDisruptionBudget
        metadata: {name: web}
        spec: {minAvailable: 1}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          restartPolicy: Never
          containers: [{name: a, command: ["true"]}]
        """,
        "--fast-backoff",
    )
    assert result.returncode == 0, result.stderr
    assert "Service 'web': skipped" in result.stderr
    assert "PodDisruptionBudget 'web': skipped" in result.stderr


def test_deployment_template_becomes_one_pod_named_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text(
        textwrap.dedent(
            """
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: web}
            spec:
              replicas: 3
              selector: {matchLabels: {app: web}}
              template:
                metadata: {labels: {app: web}}
                spec:
                  containers: [{name: a, command: [sleep, "1"]}]
            """
        )
    )
    pods = read_manifests([str(path)]).pods
    assert [(p.name, p.labels, p.restart_policy) for p in pods] == [
        ("web", {"app": "web"}, "Always")
    ]
    assert "replicas 3; sidekick up runs one replica" in caplog.text


def test_deployment_errors_name_the_template_path(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          selector: {matchLabels: {app: web}}
          template:
            spec:
              containers: [{name: a, image: example/app}]
        """,
    )
    assert "spec.template.spec.containers[0]: container 'a' has no command" in text


def test_port_already_in_use_is_refused_before_start(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = up(
            tmp_path,
            f"""
            apiVersion: v1
            kind: Pod
            metadata: {{name: web}}
            spec:
              volumes: [{{name: d, emptyDir: {{}}}}]
              containers:
                - name: server
                  command: [sh, -c, "touch /d/started"]
                  ports: [{{containerPort: {port}}}]
                  volumeMounts: [{{name: d, mountPath: /d}}]
            """,
        )
    assert result.returncode == 2
    assert f"container 'server': containerPort {port} is already in use" in result.stderr
    assert not (tmp_path / "run" / "web" / "volumes" / "d" / "started").exists()


def test_names_that_are_not_dns_names_are_refused(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: ..}
        spec:
          containers: [{name: Web_1, command: [sleep, "1"]}]
        """,
    )
    assert "metadata.name: '..' is not a valid name" in text
    assert "spec.containers[0].name: 'Web_1' is not a valid container name" in text


def test_same_port_declared_by_two_pods_is_refused(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    pod = """
    apiVersion: v1
    kind: Pod
    metadata: {{name: {name}}}
    spec:
      containers: [{{name: web, command: [sleep, "5"], ports: [{{containerPort: {port}}}]}}]
    """
    result = up(tmp_path, pod.format(name="a", port=port) + "---" + pod.format(name="b", port=port))
    assert result.returncode == 2
    assert (
        f"pod 'b' container 'web': containerPort {port} is also declared by pod 'a'"
        in result.stderr
    )


BASE = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "annotations": {}},
    "spec": {
        "volumes": [
            {"name": "d", "emptyDir": {}},
            {
                "name": "c",
                "configMap": {"name": "cm", "optional": True, "items": [{"key": "k", "path": "p"}]},
            },
        ],
        "initContainers": [{"name": "init", "command": ["true"]}],
        "containers": [
            {
                "name": "a",
                "command": ["sleep", "1"],
                "env": [{"name": "X", "value": "1"}],
                "ports": [{"containerPort": 8080}],
                "volumeMounts": [{"name": "d", "mountPath": "/d"}],
                "readinessProbe": {"httpGet": {"port": 8080}},
            }
        ],
    },
}

SPOTS = [
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "annotations"),
    ("spec",),
    ("spec", "volumes"),
    ("spec", "volumes", 0),
    ("spec", "volumes", 0, "emptyDir"),
    ("spec", "volumes", 1, "configMap", "items", 0),
    ("spec", "volumes", 1, "configMap", "items", 0, "path"),
    ("spec", "initContainers", 0),
    ("spec", "initContainers", 0, "restartPolicy"),
    ("spec", "containers"),
    ("spec", "containers", 0, "command"),
    ("spec", "containers", 0, "env", 0),
    ("spec", "containers", 0, "ports", 0, "containerPort"),
    ("spec", "containers", 0, "volumeMounts", 0),
    ("spec", "containers", 0, "volumeMounts", 0, "subPath"),
    ("spec", "containers", 0, "readinessProbe"),
    ("spec", "containers", 0, "readinessProbe", "httpGet", "port"),
    ("spec", "restartPolicy"),
    ("spec", "terminationGracePeriodSeconds"),
]

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=8), st.just("../x")
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spot=st.sampled_from(SPOTS), value=_values)
def test_any_broken_field_is_a_config_error_never_a_crash(
    tmp_path: Path, spot: tuple[str | int, ...], value: object
) -> None:
    doc = copy.deepcopy(BASE)
    node: Any = doc
    for key in spot[:-1]:
        node = node[key]
    node[spot[-1]] = value
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        manifests = read_manifests([str(path)])
        prepare(manifests.pods[0], manifests, tmp_path / "run")
    except ConfigError as exc:
        assert str(exc).strip()


def test_args_without_command_replace_the_nginx_image_cmd(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"
        "spec: {containers: [{name: a, image: nginx, args: [nginx-debug, -g, 'daemon off;']}]}\n"
    )
    c = read_manifests([str(path)]).pods[0].containers[0]
    assert (c.command, c.args) == (["nginx-debug", "-g", "daemon off;"], [])


def test_hooks_on_a_plain_init_container_are_refused_as_the_api_server_does(
    tmp_path: Path,
) -> None:
    manifest = """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          initContainers:
            - name: migrate
              command: [sh, -c, "echo migrated"]
              lifecycle:
                preStop: {exec: {command: ["true"]}}
            - name: proxy
              restartPolicy: Always
              command: [sleep, "30"]
              lifecycle:
                preStop: {exec: {command: ["true"]}}
          containers:
            - name: app
              command: [sleep, "1"]
        """
    result = up(tmp_path, manifest)
    assert result.returncode == 2, result.stderr
    assert (
        "spec.initContainers[0].lifecycle: hooks are only allowed on init containers with "
        "restartPolicy: Always" in result.stderr
    )
    assert "initContainers[1]" not in result.stderr  # a sidecar may have hooks
    assert "migrated" not in result.stdout


def test_a_negative_grace_period_is_taken_as_1_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The API server defaults a negative terminationGracePeriodSeconds to 1 (Kubernetes
    1.27 on), so the kubelet sees 1: preStop runs then, as with any grace period above 0."""
    path = tmp_path / "pod.yaml"
    path.write_text(
        textwrap.dedent(
            """
            apiVersion: v1
            kind: Pod
            metadata: {name: web}
            spec:
              terminationGracePeriodSeconds: -5
              containers:
                - {name: a, command: [sleep, "1"]}
            """
        )
    )
    assert read_manifests([str(path)]).pods[0].grace_period == 1.0
    assert "spec.terminationGracePeriodSeconds -5 is negative; using 1" in caplog.text
