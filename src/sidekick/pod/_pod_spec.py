"""A Pod spec (a Pod's, or the template of a Deployment, DaemonSet or Job) built into a ``Pod``:
its volumes, its init and main containers, and the checks that need the whole Pod.

Those checks: the Pod's name and each container's name are DNS names, and container names are
unique; each volume is of a type ``sidekick up`` supports; the ConfigMaps and Secrets that
volumes and env name are in the given files unless marked optional (the kubelet would wait
forever); runAsNonRoot is not contradicted by runAsUser 0; and the downward API's checks
(``sidekick.pod.downward``). Every problem is collected, prefixed with the object's origin, so
one run reports them all.

Left out: reading one container (``_container_spec``), and what spans objects: which
documents become Pods, namespaces given to ConfigMaps and Secrets that name none, two Pods of
one name (``manifest.read_manifests``).
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

from sidekick.core.errors import ConfigError
from sidekick.core.sizes import parse_size
from sidekick.pod._container_spec import _container
from sidekick.pod.manifest import Container, Kind, Pod, Volume, env_data

log = logging.getLogger("sidekick.up")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _volume(raw: dict[str, Any], where: str, problems: list[str]) -> Volume | None:
    name = raw["name"]
    for kind in ("emptyDir", "configMap", "secret", "hostPath", "downwardAPI", "projected"):
        if kind in raw:
            source = raw[kind] or {}
            limit = None
            if kind == "emptyDir" and source.get("sizeLimit") is not None:
                try:
                    limit = parse_size(str(source["sizeLimit"]), name=f"{where}.emptyDir.sizeLimit")
                except ConfigError as exc:
                    problems.append(str(exc))
            for j, item in enumerate(source.get("items") or []):
                rel = str(item.get("path", ""))
                if not rel or rel.startswith("/") or ".." in rel.split("/"):
                    problems.append(
                        f"{where}.{kind}.items[{j}].path: {rel!r} must be a relative path "
                        "without '..'"
                    )
            medium = str(source.get("medium") or "") if kind == "emptyDir" else ""
            if medium not in ("", "Memory"):
                problems.append(
                    f"{where}.emptyDir.medium: {medium!r} is not supported by sidekick up; use "
                    "Memory (a tmpfs) or leave it unset (a directory)"
                )
            if kind == "hostPath" and not str(source.get("path", "")).startswith("/"):
                problems.append(f"{where}.hostPath.path: {source.get('path')!r} must be absolute")
            return Volume(name, kind, source, limit)
    other = [k for k in raw if k != "name"]
    problems.append(
        f"{where}: volume {name!r} of type {other[0] if other else 'unknown'!r} is not supported by "
        "sidekick up; use emptyDir, configMap, secret, hostPath, downwardAPI or projected"
    )
    return None


def _build_pod(
    origin: str,
    prefix: str,
    doc: dict[str, Any],
    config_maps: dict[tuple[str, str], dict[str, bytes]],
    secrets: dict[tuple[str, str], dict[str, bytes]],
    set_image: dict[str, str],
    problems: list[str],
) -> Pod:
    import uuid

    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    name = str(meta.get("name") or "")
    if not name:
        problems.append(f"{origin}: metadata.name: required value is missing")
    elif not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
        # Also keeps the name safe as a directory name under the run dir.
        problems.append(
            f"{origin}: metadata.name: {name!r} is not a valid name; use lower-case letters, "
            "digits, '-' and '.', starting and ending with a letter or digit"
        )
    namespace = str(meta.get("namespace") or "default")
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    sp = f"{prefix}spec"

    def add(msg: str) -> None:
        problems.append(f"{origin}: {msg}")

    local: list[str] = []
    volumes: dict[str, Volume] = {}
    refused: set[str] = set()
    for i, v in enumerate(spec.get("volumes") or []):
        vol = _volume(v, f"{sp}.volumes[{i}]", local)
        if vol is None:
            refused.add(str(v.get("name")))
        else:
            volumes[vol.name] = vol
            ref_ns = (namespace, (vol.source.get("name") or vol.source.get("secretName") or ""))
            if (
                vol.kind == "configMap"
                and ref_ns not in config_maps
                and not vol.source.get("optional")
            ):
                local.append(
                    f"{sp}.volumes[{i}].configMap.name: ConfigMap {ref_ns[1]!r} is not in the given "
                    "files; add its manifest to the command line or mark it optional: true"
                )
            if vol.kind == "secret" and ref_ns not in secrets and not vol.source.get("optional"):
                local.append(
                    f"{sp}.volumes[{i}].secret.secretName: Secret {ref_ns[1]!r} is not in the given "
                    "files; add its manifest to the command line or mark it optional: true"
                )
    if not spec.get("containers"):
        local.append(
            f"{sp}.containers: required value is missing; a Pod needs at least one container"
        )
    inits: list[Container] = []
    mains: list[Container] = []
    seen: set[str] = set()
    for i, raw in enumerate(spec.get("initContainers") or []):
        policy = raw.get("restartPolicy")
        if policy not in (None, "Always"):
            local.append(
                f"{sp}.initContainers[{i}].restartPolicy: only Always is allowed, not {policy!r}"
            )
        kind: Kind = "sidecar" if policy == "Always" else "init"
        inits.append(
            _container(
                raw,
                kind,
                f"{sp}.initContainers[{i}]",
                annotations,
                set_image,
                volumes,
                local,
                frozenset(refused),
            )
        )
    for i, raw in enumerate(spec.get("containers") or []):
        if raw.get("restartPolicy") is not None:
            local.append(f"{sp}.containers[{i}].restartPolicy: only allowed on init containers")
        mains.append(
            _container(
                raw,
                "main",
                f"{sp}.containers[{i}]",
                annotations,
                set_image,
                volumes,
                local,
                frozenset(refused),
            )
        )
    pod_sc = spec.get("securityContext") or {}
    for c in [*inits, *mains]:
        non_root = c.security.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root and c.security.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            local.append(
                f"{c.path}.securityContext: runAsNonRoot is true but runAsUser is 0, so the "
                "kubelet would not start it; set runAsUser to another user or drop runAsNonRoot"
            )
        if not _DNS_LABEL.fullmatch(c.name) or len(c.name) > 63:
            local.append(
                f"{c.path}.name: {c.name!r} is not a valid container name; use lower-case "
                "letters, digits and '-', starting and ending with a letter or digit"
            )
        if c.name in seen:
            local.append(f"{c.path}.name: duplicate container name {c.name!r}; rename one")
        seen.add(c.name)
        _check_refs(c, namespace, config_maps, secrets, local)
    from sidekick.pod.downward import pod_problems

    local += pod_problems(spec, sp, [*inits, *mains], namespace, config_maps, secrets)
    for msg in local:
        add(msg)
    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int | float) and grace < 0:
        # The API server has defaulted a negative value to 1 since Kubernetes 1.27
        # (kubernetes/kubernetes#115606); before, the delete path already took it as 1.
        log.warning(
            "Pod %r: %s.terminationGracePeriodSeconds %s is negative; using 1, as the API "
            "server does. Set 0 or more.",
            name,
            sp,
            grace,
        )
        grace = 1
    return Pod(
        name=name,
        namespace=namespace,
        uid=str(meta.get("uid") or uuid.uuid4()),
        labels=labels,
        annotations=annotations,
        restart_policy=spec.get("restartPolicy") or "Always",
        grace_period=float(30 if grace is None else grace),
        init_containers=inits,
        containers=mains,
        volumes=volumes,
        service_account=str(spec.get("serviceAccountName") or "default"),
        node_name=str(spec.get("nodeName") or socket.gethostname()),
        hostname=str(spec.get("hostname") or name),
        enable_service_links=spec.get("enableServiceLinks") is not False,
        origin=origin,
        security=dict(spec.get("securityContext") or {}),
        share_process_namespace=bool(spec.get("shareProcessNamespace")),
        active_deadline=(
            None
            if spec.get("activeDeadlineSeconds") is None
            else float(spec["activeDeadlineSeconds"])
        ),
    )


def _missing_key(
    c: Container, i: int, ref_kind: str, what: str, ref: dict[str, Any], obj: dict[str, bytes]
) -> str:
    """The problem of a key reference the kubelet cannot resolve (binaryData is not read)."""
    where = f"{c.path}.env[{i}].valueFrom.{ref_kind}.key: {what} {ref.get('name')!r}"
    usable = sorted(env_data(obj))
    if ref["key"] in obj:
        return (
            f"{where}: key {ref['key']!r} is in binaryData, which gives no environment "
            f"variable (the kubelet reads data only); move it to data, use one of {usable}, "
            "or mount the ConfigMap as a volume"
        )
    return f"{where} has no key {ref['key']!r}; use one of {usable} or mark it optional: true"


def _check_refs(
    c: Container,
    namespace: str,
    config_maps: dict[tuple[str, str], dict[str, bytes]],
    secrets: dict[tuple[str, str], dict[str, bytes]],
    problems: list[str],
) -> None:
    """ConfigMaps and Secrets named by env must exist (the kubelet would wait forever)."""
    for i, e in enumerate(c.env):
        src = e.get("valueFrom") or {}
        for ref_kind, store in (("configMapKeyRef", config_maps), ("secretKeyRef", secrets)):
            ref = src.get(ref_kind)
            if ref is None or ref.get("optional"):
                continue
            obj = store.get((namespace, ref.get("name", "")))
            what = "ConfigMap" if ref_kind == "configMapKeyRef" else "Secret"
            if obj is None:
                problems.append(
                    f"{c.path}.env[{i}].valueFrom.{ref_kind}.name: {what} {ref.get('name')!r} is "
                    "not in the given files; add its manifest or mark the reference optional: true"
                )
            elif ref["key"] not in env_data(obj):
                problems.append(_missing_key(c, i, ref_kind, what, ref, obj))
    for i, ef in enumerate(c.env_from):
        for ref_kind, store, what in (
            ("configMapRef", config_maps, "ConfigMap"),
            ("secretRef", secrets, "Secret"),
        ):
            ref = ef.get(ref_kind)
            if ref is None or ref.get("optional"):
                continue
            if (namespace, ref.get("name", "")) not in store:
                problems.append(
                    f"{c.path}.envFrom[{i}].{ref_kind}.name: {what} {ref.get('name')!r} is not in "
                    "the given files; add its manifest or mark the reference optional: true"
                )
