"""The example manifests are valid Kubernetes 1.33 objects and carry the hardening the seeds
left out (probes, resources, securityContext, sizeLimit, rollout strategy, spread, PDB).

The node-level example (a DaemonSet, ``NODE_EXAMPLES``) has no sidecars, variants, Service or
PDB; it is checked for what a DaemonSet needs instead: a rolling update one node at a time,
the kubelet's log directory mounted read-only, state on the node, and root without any
capability (the log files are root's).

Schema validation is kubernetes-validate in strict mode (unknown fields are errors). What the
schema cannot say (every container has every probe, every emptyDir a sizeLimit, ...) is checked
here directly, so a new container or volume cannot silently skip it.
"""

from __future__ import annotations

import re
import runpy
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = ["nginx-logs", "webapp", "static-site", "app-to-sidecar"]
NODE_EXAMPLES = ["node-logs"]
DEPLOYMENT_MANIFESTS = [
    REPO / "examples" / e / f"{e}{variant}.yaml"
    for e in EXAMPLES
    for variant in ("", "-classic", "-podman")
]
NODE_MANIFESTS = [REPO / "examples" / e / f"{e}.yaml" for e in NODE_EXAMPLES]
MANIFESTS = DEPLOYMENT_MANIFESTS + NODE_MANIFESTS
K8S_VERSION = "1.33.0"
make_classic = runpy.run_path(str(REPO / "deploy" / "make_classic.py"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def pod_specs(path: Path) -> list[dict[str, Any]]:
    return [
        d["spec"]["template"]["spec"]
        for d in documents(path)
        if d["kind"] in ("Deployment", "DaemonSet")
    ]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def long_running(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Main containers and native sidecars: the ones probes apply to."""
    inits = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    return inits + list(spec["containers"])


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_kubernetes_1_33_strict(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("variant", ["classic", "podman"])
def test_variant_is_generated_from_the_native_manifest(example: str, variant: str) -> None:
    native = REPO / "examples" / example / f"{example}.yaml"
    committed = (REPO / "examples" / example / f"{example}-{variant}.yaml").read_text()
    assert committed == make_classic["render"](native, variant), "run deploy/regenerate-variants.sh"


@pytest.mark.parametrize("example", EXAMPLES)
def test_podman_variant_publishes_the_service_target_port(example: str) -> None:
    docs = documents(REPO / "examples" / example / f"{example}-podman.yaml")
    (spec,) = pod_specs(REPO / "examples" / example / f"{example}-podman.yaml")
    (service,) = [d for d in docs if d["kind"] == "Service"]
    target = service["spec"]["ports"][0]["targetPort"]
    (port,) = [p for c in spec["containers"] for p in c.get("ports") or [] if p["name"] == target]
    assert port["hostPort"] == port["containerPort"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_native_manifest_runs_sidecars_as_native_sidecars(example: str) -> None:
    (spec,) = pod_specs(REPO / "examples" / example / f"{example}.yaml")
    sidecars = [c for c in spec["initContainers"] if c.get("restartPolicy") == "Always"]
    assert sidecars and len(spec["containers"]) == 1


@pytest.mark.parametrize("example", EXAMPLES)
def test_classic_manifest_has_no_native_sidecars(example: str) -> None:
    (native,) = pod_specs(REPO / "examples" / example / f"{example}.yaml")
    (spec,) = pod_specs(REPO / "examples" / example / f"{example}-classic.yaml")
    sidecars = [c["name"] for c in native["initContainers"] if c.get("restartPolicy") == "Always"]
    one_shot = [c["name"] for c in native["initContainers"] if "restartPolicy" not in c]
    assert [c["name"] for c in spec.get("initContainers") or []] == one_shot
    assert [c["name"] for c in spec["containers"]] == [native["containers"][0]["name"], *sidecars]
    assert all("restartPolicy" not in c for c in spec["containers"])


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_long_running_container_has_startup_readiness_and_liveness_probes(path: Path) -> None:
    for spec in pod_specs(path):
        for c in long_running(spec):
            missing = {"startupProbe", "readinessProbe", "livenessProbe"} - set(c)
            assert not missing, f"{c['name']} lacks {missing}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_container_has_requests_and_limits(path: Path) -> None:
    for spec in pod_specs(path):
        for c in all_containers(spec):
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), c["name"]
            assert {"cpu", "memory"} <= set(res["limits"]), c["name"]


@pytest.mark.parametrize("path", DEPLOYMENT_MANIFESTS, ids=lambda p: p.name)
def test_every_container_is_hardened(path: Path) -> None:
    for spec in pod_specs(path):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert isinstance(spec["securityContext"]["runAsUser"], int)
        for c in all_containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["runAsNonRoot"] is True, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_empty_dir_has_a_size_limit(path: Path) -> None:
    for spec in pod_specs(path):
        for v in spec["volumes"]:
            if "emptyDir" in v:
                assert v["emptyDir"].get("sizeLimit"), v["name"]


@pytest.mark.parametrize("path", DEPLOYMENT_MANIFESTS, ids=lambda p: p.name)
def test_deployment_rolls_out_without_losing_capacity_and_spreads_over_nodes(path: Path) -> None:
    (deployment,) = [d for d in documents(path) if d["kind"] == "Deployment"]
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"


@pytest.mark.parametrize("path", DEPLOYMENT_MANIFESTS, ids=lambda p: p.name)
def test_pod_disruption_budget_and_service_select_the_deployments_pods(path: Path) -> None:
    docs = documents(path)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_no_shell_scripts_in_the_pod_spec(path: Path) -> None:
    for spec in pod_specs(path):
        for c in all_containers(spec):
            assert c.get("command", [""])[0] not in {"sh", "bash", "/bin/sh"}, c["name"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_probes_use_the_containers_named_ports(path: Path) -> None:
    for spec in pod_specs(path):
        for c in long_running(spec):
            names = {p["name"] for p in c["ports"]}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[kind]["httpGet"]["port"] in names, f"{c['name']} {kind}"


def test_image_requirements_are_the_package_dependencies_without_kubernetes_validate() -> None:
    def names(lines: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[ ]", line.strip(), maxsplit=1)[0].lower() for line in lines}

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = names(pyproject["project"]["dependencies"]) - {"kubernetes-validate"}
    text = (REPO / "deploy" / "image-requirements.txt").read_text().splitlines()
    listed = names([line for line in text if line.strip() and not line.startswith("#")])
    assert listed == declared


@pytest.mark.parametrize("example", EXAMPLES + NODE_EXAMPLES)
def test_kustomization_applies_the_native_manifest_and_names_its_images(example: str) -> None:
    kustomization = yaml.safe_load((REPO / "examples" / example / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [f"{example}.yaml"]
    (spec,) = pod_specs(REPO / "examples" / example / f"{example}.yaml")
    used = {c["image"] for c in all_containers(spec)}
    listed = {f"{i['name']}:{i['newTag']}" for i in kustomization["images"]}
    assert listed == used


def sidekick_shutdown_timeout(container: dict[str, Any]) -> float | None:
    """The --shutdown-timeout a sidekick container stops within (its default when unset)."""
    words = [*container.get("command", []), *container.get("args", [])]
    if not words or words[0] != "sidekick":
        return None
    from sidekick.core.durations import parse_duration

    text = "30s"  # the CLI's default
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    program = words[1].upper()
    text = env.get(f"SIDEKICK_{program}_SHUTDOWN_TIMEOUT") or text
    for word in words:
        if word.startswith("--shutdown-timeout="):
            text = word.split("=", 1)[1]
    return parse_duration(text)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_sidekick_shutdown_timeout_fits_inside_the_pods_grace_period(path: Path) -> None:
    # The kubelet kills whatever still runs at the end of terminationGracePeriodSeconds, and
    # for native sidecars that period also covers the app's own stop: a shipper whose drain
    # may take the whole period would be killed with lines unshipped.
    checked = 0
    for spec in pod_specs(path):
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for container in all_containers(spec):
            timeout = sidekick_shutdown_timeout(container)
            if timeout is None:
                continue
            checked += 1
            assert timeout <= grace - 5, (container["name"], timeout, grace)
    assert checked, "no sidekick container found"


@pytest.mark.parametrize("path", NODE_MANIFESTS, ids=lambda p: p.name)
def test_daemonset_runs_as_root_without_any_capability_on_a_read_only_root(path: Path) -> None:
    # The kubelet's log files are root's (mode 0640) and so is the state directory it creates:
    # owner permissions, not capabilities, let the shipper read and write them.
    for spec in pod_specs(path):
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for c in all_containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert "privileged" not in sc or sc["privileged"] is False, c["name"]


@pytest.mark.parametrize("path", NODE_MANIFESTS, ids=lambda p: p.name)
def test_daemonset_reads_the_pod_logs_read_only_and_keeps_its_state_on_the_node(
    path: Path,
) -> None:
    (spec,) = pod_specs(path)
    volumes = {v["name"]: v for v in spec["volumes"]}
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    logs = mounts["/var/log/pods"]
    assert logs["readOnly"] is True
    assert volumes[logs["name"]]["hostPath"] == {"path": "/var/log/pods", "type": "Directory"}
    args = container["args"]
    (state_dir,) = [a.split("=", 1)[1] for a in args if a.startswith("--state-dir=")]
    state = volumes[mounts[state_dir]["name"]]["hostPath"]
    assert state == {"path": state_dir, "type": "DirectoryOrCreate"}
    assert not any("emptyDir" in v for v in spec["volumes"])
    # /var/log/pods itself: the /var/log/containers links lead out of the glob's base.
    (url,) = [a.split("=", 1)[1] for a in args if a.startswith("--input=")]
    assert url.startswith("file:///var/log/pods/**/") and "parser=cri" in url


@pytest.mark.parametrize("path", NODE_MANIFESTS, ids=lambda p: p.name)
def test_daemonset_updates_one_node_at_a_time_and_tolerates_every_taint(path: Path) -> None:
    (daemonset,) = [d for d in documents(path) if d["kind"] == "DaemonSet"]
    strategy = daemonset["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {"operator": "Exists"} in daemonset["spec"]["template"]["spec"]["tolerations"]
