"""Read Pod manifests: YAML documents -> schema check -> typed Pod objects.

Every document is checked against the Kubernetes OpenAPI schema shipped by the
``kubernetes-validate`` package (strict: unknown fields are errors, as ``kubectl apply``
reports them), and each problem is reported with the path to the field, the way the API
server does: ``spec.containers[1].ports[0].containerPort: must be an integer``. Then come the
checks only a local runner needs (a command for every container, supported volume types and
probe kinds, ConfigMaps and Secrets that exist).

Pod, Deployment (its template, run as one replica), Job (``sidekick.pod.job``), ConfigMap and
Secret are read (a CronJob is refused with how to run its job once); any other
kind is named and skipped. Fields that only matter to a scheduler or a container runtime
(resources, securityContext, affinity, images) are accepted and ignored.

This module holds the types the rest of ``sidekick.pod`` works with and ``read_manifests``,
which sorts the documents by kind and ties the objects together. The steps live beside it:
``_schema`` (loading the documents, the schema check), ``_pod_spec`` (one Pod spec to a
``Pod``) and ``_container_spec`` (one container to a ``Container``).
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sidekick.core.errors import ConfigError
from sidekick.pod._schema import _name, _strip_nulls, load_documents, schema_problems

if TYPE_CHECKING:
    from sidekick.pod.job import JobSpec
    from sidekick.pod.servicelinks import Service

log = logging.getLogger("sidekick.up")

SUPPORTED_KINDS = ("Pod", "Deployment", "DaemonSet", "Job", "ConfigMap", "Secret")

Kind = Literal["init", "sidecar", "main"]
RestartPolicy = Literal["Always", "OnFailure", "Never"]


@dataclass
class ExecAction:
    command: list[str]


@dataclass
class HTTPGetAction:
    port: int | str
    path: str = "/"
    host: str = ""
    scheme: str = "HTTP"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class TCPSocketAction:
    port: int | str
    host: str = ""


@dataclass
class SleepAction:
    seconds: float


Action = ExecAction | HTTPGetAction | TCPSocketAction | SleepAction


@dataclass
class Probe:
    action: Action
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    grace_period: float | None = None  # probe-level terminationGracePeriodSeconds


@dataclass
class VolumeMount:
    name: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False


@dataclass
class Port:
    port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass
class Container:
    name: str
    kind: Kind
    image: str
    command: list[str]
    args: list[str]
    working_dir: str
    env: list[dict[str, Any]]
    env_from: list[dict[str, Any]]
    ports: list[Port]
    mounts: list[VolumeMount]
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    post_start: Action | None = None
    pre_stop: Action | None = None
    stop_signal: str = ""  # lifecycle.stopSignal, e.g. SIGQUIT
    path: str = ""  # field path, e.g. spec.containers[1]
    resources: dict[str, Any] = field(default_factory=dict)  # requests and limits, as written
    termination_message_path: str = "/dev/termination-log"
    termination_message_policy: str = "File"  # or FallbackToLogsOnError
    security: dict[str, Any] = field(default_factory=dict)  # securityContext (isolation)


@dataclass
class Volume:
    name: str
    kind: Literal["emptyDir", "configMap", "secret", "hostPath", "downwardAPI", "projected"]
    source: dict[str, Any]
    size_limit: int | None = None


@dataclass
class Pod:
    name: str
    namespace: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    restart_policy: RestartPolicy
    grace_period: float
    init_containers: list[Container]
    containers: list[Container]
    volumes: dict[str, Volume]
    service_account: str
    node_name: str
    origin: str  # "FILE: Pod/NAME", for messages
    hostname: str = ""
    enable_service_links: bool = True
    job: JobSpec | None = None  # set for a Job's Pod (sidekick.pod.job)
    security: dict[str, Any] = field(default_factory=dict)  # spec.securityContext (isolation)
    share_process_namespace: bool = False
    active_deadline: float | None = None  # spec.activeDeadlineSeconds (the kubelet's)

    @property
    def all_containers(self) -> list[Container]:
        return [*self.init_containers, *self.containers]


class ConfigMapData(dict[str, bytes]):
    """A ConfigMap's ``data`` and ``binaryData`` in one mapping, as its volume shows them.

    ``binary`` names the ``binaryData`` keys: the kubelet reads only ``data`` for ``envFrom``
    and ``configMapKeyRef`` (``makeEnvironmentVariables``), so those keys give no variable.
    """

    binary: frozenset[str] = frozenset()


def env_data(data: dict[str, bytes]) -> dict[str, bytes]:
    """The keys of a ConfigMap or Secret that may become environment variables."""
    binary = data.binary if isinstance(data, ConfigMapData) else frozenset()
    return {k: v for k, v in data.items() if k not in binary} if binary else data


@dataclass
class Manifests:
    pods: list[Pod]
    config_maps: dict[tuple[str, str], dict[str, bytes]]
    secrets: dict[tuple[str, str], dict[str, bytes]]
    services: list[Service] = field(default_factory=list)  # for the service variables


def read_manifests(paths: list[str], *, set_image: dict[str, str] | None = None) -> Manifests:
    """Parse and check ``paths``; raise one ConfigError listing every problem."""
    docs = load_documents(paths)
    problems: list[str] = []
    config_maps: dict[tuple[str, str], dict[str, bytes]] = {}
    secrets: dict[tuple[str, str], dict[str, bytes]] = {}
    pod_docs: list[tuple[str, str, dict[str, Any]]] = []
    jobs: dict[int, JobSpec] = {}  # by index in pod_docs
    service_docs: list[tuple[str, dict[str, Any]]] = []
    for fname, doc in docs:
        kind = str(doc.get("kind"))
        origin = f"{fname}: {kind} {_name(doc)!r}"
        if kind == "CronJob":
            from sidekick.pod.job import cronjob_problem

            problems.append(cronjob_problem(origin, doc))
            continue
        if kind == "Service":
            service_docs.append((fname, doc))
            continue
        if kind not in SUPPORTED_KINDS:
            log.warning(
                "%s: skipped; sidekick up runs Pod, Deployment, Job, ConfigMap and Secret objects "
                "only.",
                origin,
            )
            continue
        nulls: list[str] = []
        doc = _strip_nulls(doc, [], nulls)
        found = nulls + schema_problems(doc)
        if found:
            problems.extend(f"{origin}: {p}" for p in found)
            continue
        ns = str((doc.get("metadata") or {}).get("namespace") or "")
        if kind == "ConfigMap":
            data = ConfigMapData({k: str(v).encode() for k, v in (doc.get("data") or {}).items()})
            binary = doc.get("binaryData") or {}
            for k, v in binary.items():
                data[k] = base64.b64decode(v)
            data.binary = frozenset(binary)
            config_maps[(ns, _name(doc))] = data
        elif kind == "Secret":
            sdata: dict[str, bytes] = {}
            for k, v in (doc.get("data") or {}).items():
                try:
                    sdata[k] = base64.b64decode(str(v), validate=True)
                except ValueError:
                    problems.append(
                        f"{origin}: data.{k}: not valid base64; use stringData for plain text"
                    )
            for k, v in (doc.get("stringData") or {}).items():
                sdata[k] = str(v).encode()
            secrets[(ns, _name(doc))] = sdata
        elif kind == "Job":
            from sidekick.pod.job import job_pod

            job_doc, jobs[len(pod_docs)] = job_pod(origin, doc, ns, problems)
            pod_docs.append((origin, "spec.template.", job_doc))
        elif kind in ("Deployment", "DaemonSet"):  # a DaemonSet: its one Pod on this machine
            spec = doc.get("spec") or {}
            replicas = spec.get("replicas", 1)
            if replicas not in (None, 1):
                log.warning("%s: replicas %s; sidekick up runs one replica.", origin, replicas)
            template = spec.get("template") or {}
            tmeta = dict(template.get("metadata") or {})
            tmeta["name"] = _name(doc)
            tmeta.setdefault("namespace", ns or "default")
            pod_doc = {"metadata": tmeta, "spec": template.get("spec") or {}}
            pod_docs.append((origin, "spec.template.", pod_doc))
        else:
            pod_docs.append((origin, "", doc))
    # Like `kubectl apply -n NS -f`, an object that names no namespace lands in the Pod's.
    namespaces = {
        str((d.get("metadata") or {}).get("namespace") or "default") for _o, _p, d in pod_docs
    }
    for store in (config_maps, secrets):
        for (ns, name), value in list(store.items()):
            if not ns:
                del store[(ns, name)]
                for pod_ns in namespaces:
                    store.setdefault((pod_ns, name), value)
    # Imported here: _pod_spec builds this module's types, so it imports this module.
    from sidekick.pod._pod_spec import _build_pod

    pods: list[Pod] = []
    names: set[str] = set()
    for index, (origin, prefix, doc) in enumerate(pod_docs):
        pod_problems: list[str] = []
        pod = _build_pod(origin, prefix, doc, config_maps, secrets, set_image or {}, pod_problems)
        pod.job = jobs.get(index)
        if pod.name in names:
            pod_problems.append(
                f"{origin}: metadata.name: a second pod named {pod.name!r}; rename one"
            )
        names.add(pod.name)
        problems.extend(pod_problems)
        pods.append(pod)
    from sidekick.pod.servicelinks import read_services

    services = read_services(service_docs, namespaces, pods, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    if not pods:
        raise ConfigError(
            f"no Pod or Deployment in {', '.join(paths)}; give a manifest that defines one"
        )
    return Manifests(pods, config_maps, secrets, services)
