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
"""

from __future__ import annotations

import base64
import logging
import re
import shlex
import signal
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import yaml

from sidekick.core.errors import ConfigError
from sidekick.core.sizes import parse_size
from sidekick.core.yamlload import YAMLLimitError, load_all, read_bounded

if TYPE_CHECKING:
    from sidekick.pod.job import JobSpec
    from sidekick.pod.servicelinks import Service

log = logging.getLogger("sidekick.up")

COMMAND_ANNOTATION = "sidekick.dev/command."
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

    @property
    def all_containers(self) -> list[Container]:
        return [*self.init_containers, *self.containers]


@dataclass
class Manifests:
    pods: list[Pod]
    config_maps: dict[tuple[str, str], dict[str, bytes]]
    secrets: dict[tuple[str, str], dict[str, bytes]]
    services: list[Service] = field(default_factory=list)  # for the service variables


# --- schema validation ---------------------------------------------------------------------

_TYPE_WORDS = {
    "integer": "an integer",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "number": "a number",
}


class _Schemas:
    """The newest schema version the package ships, loaded once per kind."""

    def __init__(self) -> None:
        from kubernetes_validate import utils

        self._utils = utils
        self.version = utils.latest_version()
        self._dir = f"kubernetes-json-schema/v{self.version}-local-strict"
        self._defs: Any = None
        self._validators: dict[str, Any] = {}

    def validator(self, kind: str, api_version: str) -> Any:
        import jsonschema  # type: ignore[import-untyped]
        from referencing import Registry, Resource

        group = api_version.split("/")[0].split(".")[0] + "-" if "/" in api_version else ""
        name = f"{kind.lower()}-{group}{api_version.rsplit('/', 1)[-1]}"
        if name not in self._validators:
            try:
                schema = self._utils.schema_contents(f"{self._dir}/{name}.json", self.version)
            except FileNotFoundError:
                return None
            if self._defs is None:
                self._defs = self._utils.schema_contents(
                    f"{self._dir}/_definitions.json", self.version
                )
            registry = Resource.from_contents(schema) @ Registry()
            registry = Resource.from_contents(self._defs) @ registry
            self._validators[name] = jsonschema.Draft202012Validator(schema, registry=registry)
        return self._validators[name]


_schemas: _Schemas | None = None


def field_path(parts: list[str | int] | Any) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _describe(error: Any) -> str:
    path = field_path(list(error.absolute_path))
    v = error.validator
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = f"{path}." if path else ""
        return "; ".join(
            f"{where}{name}: unknown field; remove it or fix its spelling" for name in extra
        )
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        where = f"{path}." if path else ""
        return f"{where}{missing}: required value is missing"
    if v == "type":
        types = error.validator_value
        types = [types] if isinstance(types, str) else [t for t in types if t != "null"]
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return f"{path}: must be {words}, not {error.instance!r}"
    if v == "enum":
        choices = ", ".join(repr(c) for c in error.validator_value if c is not None)
        return f"{path}: {error.instance!r} is not one of {choices}"
    if v == "oneOf" and all("type" in s for s in error.validator_value):
        kinds = sorted(
            {
                t
                for s in error.validator_value
                for t in ([s["type"]] if isinstance(s["type"], str) else s["type"])
                if t != "null"
            }
        )
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in kinds)
        return f"{path}: must be {words}, not {error.instance!r}"
    return f"{path or '(document)'}: {error.message}"


def _strip_nulls(value: Any, path: list[str | int], problems: list[str]) -> Any:
    """Drop ``key: null`` (the API server reads it as unset); report null list items and NULs."""
    if isinstance(value, dict):
        return {
            k: _strip_nulls(v, [*path, str(k)], problems) for k, v in value.items() if v is not None
        }
    if isinstance(value, list):
        for i, item in enumerate(value):
            if item is None:
                problems.append(f"{field_path([*path, i])}: must not be null; remove the item")
        return [_strip_nulls(v, [*path, i], problems) for v in value if v is not None]
    if isinstance(value, str) and "\x00" in value:
        # No path, argument or environment value of a process can hold one.
        problems.append(f"{field_path(path)}: contains a NUL character; remove it")
    return value


def schema_problems(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of ``doc`` as ``field.path: what is wrong``."""
    global _schemas
    if _schemas is None:
        _schemas = _Schemas()
    validator = _schemas.validator(str(doc.get("kind")), str(doc.get("apiVersion")))
    if "apiVersion" not in doc:
        return ["apiVersion: required value is missing; use v1 (apps/v1 for a Deployment)"]
    if validator is None:
        return [
            f"apiVersion {doc.get('apiVersion')!r} with kind {doc.get('kind')!r} is not in the "
            f"Kubernetes {_schemas.version} schema; use apiVersion v1 for Pod, ConfigMap and "
            "Secret, apps/v1 for Deployment and batch/v1 for Job"
        ]
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(e) for e in errors]


# --- reading documents ---------------------------------------------------------------------


def load_documents(paths: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """All non-empty YAML documents of ``paths`` (``-`` is stdin), with their file names.

    Files are read up to a size limit and documents are measured with their aliases expanded
    before they are built (``sidekick.core.yamlload``), so an alias bomb is an error.
    """
    import sys

    out: list[tuple[str, dict[str, Any]]] = []
    for p in paths:
        try:
            if p == "-":
                data = read_bounded(sys.stdin.buffer)
            else:
                with open(p, "rb") as f:
                    data = read_bounded(f)
        except OSError as exc:
            raise ConfigError(
                f"manifest {p!r} cannot be read ({exc.strerror}); check the path"
            ) from None
        except YAMLLimitError as exc:
            raise ConfigError(f"manifest {p!r} {exc}") from None
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"manifest {p!r} is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                f"{exc.start}); save it as UTF-8"
            ) from None
        try:
            docs = load_all(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: {_yaml_problem(exc)}; fix the YAML syntax there") from None
        except YAMLLimitError as exc:
            raise ConfigError(f"manifest {p!r}: {exc}") from None
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc:
                raise ConfigError(
                    f"{p}: document {i + 1} is not a Kubernetes object (no kind); "
                    "each document needs apiVersion, kind and metadata"
                )
            if doc["kind"] == "List" and isinstance(doc.get("items"), list):
                out.extend((p, item) for item in doc["items"] if isinstance(item, dict))
            else:
                out.append((p, doc))
    return out


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error as one line: where, what, and the construct it was reading."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return "not valid YAML: " + " ".join(str(exc).split())
    mark = exc.problem_mark
    text = f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context:
        text += f" ({exc.context}"
        if exc.context_mark is not None:
            text += (
                f" that starts at line {exc.context_mark.line + 1}, "
                f"column {exc.context_mark.column + 1}"
            )
        text += ")"
    return text


def _name(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return str(meta.get("name", "")) if isinstance(meta, dict) else ""


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
            data = {k: str(v).encode() for k, v in (doc.get("data") or {}).items()}
            for k, v in (doc.get("binaryData") or {}).items():
                data[k] = base64.b64decode(v)
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


# --- building a Pod --------------------------------------------------------------------------


def _action(raw: dict[str, Any], where: str, problems: list[str]) -> Action | None:
    if "exec" in raw:
        return ExecAction([str(c) for c in (raw["exec"] or {}).get("command") or []])
    if "httpGet" in raw:
        h = raw["httpGet"]
        return HTTPGetAction(
            port=h["port"],
            path=h.get("path") or "/",
            host=h.get("host") or "",
            scheme=(h.get("scheme") or "HTTP").upper(),
            headers=[(x["name"], x["value"]) for x in h.get("httpHeaders") or []],
        )
    if "tcpSocket" in raw:
        t = raw["tcpSocket"]
        return TCPSocketAction(port=t["port"], host=t.get("host") or "")
    if "sleep" in raw:
        return SleepAction(float(raw["sleep"]["seconds"]))
    if "grpc" in raw:
        problems.append(
            f"{where}.grpc: gRPC probes are not supported by sidekick up; "
            "use exec with a health-check command, httpGet or tcpSocket"
        )
        return None
    problems.append(f"{where}: needs one of exec, httpGet, tcpSocket")
    return None


def _probe(raw: dict[str, Any] | None, where: str, problems: list[str]) -> Probe | None:
    if not raw:
        return None
    action = _action(raw, where, problems)
    if action is None:
        return None
    if isinstance(action, SleepAction):
        problems.append(f"{where}.sleep: sleep is a lifecycle hook, not a probe; use exec")
        return None
    probe = Probe(
        action=action,
        initial_delay=float(raw.get("initialDelaySeconds") or 0),
        period=float(raw.get("periodSeconds") or 10),
        timeout=float(raw.get("timeoutSeconds") or 1),
        success_threshold=int(raw.get("successThreshold") or 1),
        failure_threshold=int(raw.get("failureThreshold") or 3),
        grace_period=(
            None
            if raw.get("terminationGracePeriodSeconds") is None
            else float(raw["terminationGracePeriodSeconds"])
        ),
    )
    return probe


def _command_override(text: str, where: str, problems: list[str]) -> list[str]:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = yaml.safe_load(stripped)
        except yaml.YAMLError:
            value = None
        if isinstance(value, list) and value and all(isinstance(x, str | int) for x in value):
            return [str(x) for x in value]
        problems.append(
            f"{where}: {text!r} is not a list of strings; write it like [nginx, -g, 'daemon off;']"
        )
        return []
    try:
        argv = shlex.split(stripped)
    except ValueError as exc:
        problems.append(f"{where}: {text!r} cannot be split into words ({exc}); fix the quoting")
        return []
    if not argv:
        problems.append(f"{where}: is empty; give the command to run")
    return argv


def _image_key(image: str) -> list[str]:
    """``docker.io/library/nginx:1.25`` -> [the full ref, ``library/nginx``, ``nginx``]."""
    ref = image.split("@")[0]
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref.rsplit(":", 1)[0]
    keys = [image, ref]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        keys.append("/".join(parts[1:]))
    keys.append(parts[-1])
    return keys


def _container(
    raw: dict[str, Any],
    kind: Kind,
    where: str,
    annotations: dict[str, str],
    set_image: dict[str, str],
    volumes: dict[str, Volume],
    problems: list[str],
    refused: frozenset[str] = frozenset(),
) -> Container:
    name = raw["name"]
    image = str(raw.get("image") or "")
    command = [str(c) for c in raw.get("command") or []]
    args = [str(a) for a in raw.get("args") or []]
    given = len(problems)
    if not command:
        note = annotations.get(COMMAND_ANNOTATION + name)
        if note is not None:
            command = _command_override(
                note, f"metadata.annotations[{COMMAND_ANNOTATION + name}]", problems
            )
        else:
            for key in _image_key(image) if image else []:
                if key in set_image and set_image[key].strip() == "[]":
                    # The image has no ENTRYPOINT: the args alone are the command.
                    command, args = args, []
                    if not command:
                        problems.append(
                            f"{where}: container {name!r} has neither command nor args, and "
                            f"--set-image {key}=[] says image {image!r} has no entrypoint; give "
                            "the container command: [...] or --set-image IMAGE=COMMAND"
                        )
                    break
                if key in set_image:
                    command = _command_override(set_image[key], f"--set-image {key}", problems)
                    break
            else:
                from sidekick.pod.images import default_argv

                command, problem = default_argv(image, name, args, where, COMMAND_ANNOTATION + name)
                if command:
                    args = []  # the image's ENTRYPOINT and CMD are combined with them
                elif problem:
                    problems.append(problem)
    if not command and len(problems) == given:
        problems.append(f"{where}: container {name!r} has no command; add command: [...]")
    ports = [
        Port(int(p["containerPort"]), p.get("name") or "", p.get("protocol") or "TCP")
        for p in raw.get("ports") or []
    ]
    mounts: list[VolumeMount] = []
    for i, m in enumerate(raw.get("volumeMounts") or []):
        mwhere = f"{where}.volumeMounts[{i}]"
        if m["name"] in refused:
            continue  # its volume is refused already; a second error would mislead
        if m["name"] not in volumes:
            problems.append(
                f"{mwhere}.name: no volume named {m['name']!r} in spec.volumes; add it or fix the name"
            )
            continue
        if not str(m["mountPath"]).startswith("/"):
            problems.append(f"{mwhere}.mountPath: {m['mountPath']!r} must be an absolute path")
            continue
        if m.get("subPathExpr"):
            problems.append(f"{mwhere}.subPathExpr: not supported by sidekick up; use subPath")
        sub = str(m.get("subPath") or "")
        if sub.startswith("/") or ".." in sub.split("/"):
            problems.append(f"{mwhere}.subPath: {sub!r} must be a relative path without '..'")
        mounts.append(
            VolumeMount(
                m["name"], str(m["mountPath"]).rstrip("/") or "/", sub, bool(m.get("readOnly"))
            )
        )
    for i, e in enumerate(raw.get("env") or []):
        src = e.get("valueFrom") or {}
        ewhere = f"{where}.env[{i}].valueFrom"
        if "fileKeyRef" in src:
            problems.append(f"{ewhere}.fileKeyRef: not supported by sidekick up; set value instead")
        fref = src.get("fieldRef")
        if fref is not None and not _field_supported(str(fref.get("fieldPath", ""))):
            problems.append(
                f"{ewhere}.fieldRef.fieldPath: {fref.get('fieldPath')!r} is not available locally; "
                "use metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], "
                "metadata.annotations['k'], status.podIP, status.hostIP, spec.nodeName or "
                "spec.serviceAccountName"
            )
    lifecycle = raw.get("lifecycle") or {}
    sig = lifecycle.get("stopSignal")
    if sig and sig not in signal.Signals.__members__:
        problems.append(
            f"{where}.lifecycle.stopSignal: {sig!r} is not a signal name; use one like SIGTERM or SIGQUIT"
        )
    post_start = (
        _action(lifecycle["postStart"], f"{where}.lifecycle.postStart", problems)
        if lifecycle.get("postStart")
        else None
    )
    pre_stop = (
        _action(lifecycle["preStop"], f"{where}.lifecycle.preStop", problems)
        if lifecycle.get("preStop")
        else None
    )
    c = Container(
        name=name,
        kind=kind,
        image=image,
        command=command,
        args=args,
        working_dir=str(raw.get("workingDir") or ""),
        env=list(raw.get("env") or []),
        env_from=list(raw.get("envFrom") or []),
        ports=ports,
        mounts=mounts,
        startup_probe=_probe(raw.get("startupProbe"), f"{where}.startupProbe", problems),
        readiness_probe=_probe(raw.get("readinessProbe"), f"{where}.readinessProbe", problems),
        liveness_probe=_probe(raw.get("livenessProbe"), f"{where}.livenessProbe", problems),
        post_start=post_start,
        pre_stop=pre_stop,
        stop_signal=str(lifecycle.get("stopSignal") or ""),
        path=where,
        resources=dict(raw.get("resources") or {}),
        termination_message_path=str(raw.get("terminationMessagePath") or "/dev/termination-log"),
        termination_message_policy=str(raw.get("terminationMessagePolicy") or "File"),
        security=dict(raw.get("securityContext") or {}),
    )
    if not c.termination_message_path.startswith("/"):
        problems.append(
            f"{where}.terminationMessagePath: {c.termination_message_path!r} must be an "
            "absolute path"
        )
    if raw.get("stdin") or raw.get("tty") or raw.get("stdinOnce"):
        given_fields = ", ".join(f"{k}: true" for k in ("stdin", "stdinOnce", "tty") if raw.get(k))
        log.warning(
            "%s: container %r sets %s; sidekick up gives containers no terminal and stdin "
            "from /dev/null, so attach to it is not possible (use sidekick exec to run commands "
            "in it).",
            where,
            name,
            given_fields,
        )
    for pname, probe in (
        ("startupProbe", c.startup_probe),
        ("livenessProbe", c.liveness_probe),
    ):
        if probe is not None and probe.success_threshold != 1:
            problems.append(f"{where}.{pname}.successThreshold: must be 1")
    if kind == "init" and (c.readiness_probe or c.liveness_probe or c.startup_probe):
        problems.append(
            f"{where}: probes are only allowed on init containers with restartPolicy: Always"
        )
    for probe, pname in (
        (c.startup_probe, "startupProbe"),
        (c.readiness_probe, "readinessProbe"),
        (c.liveness_probe, "livenessProbe"),
    ):
        action = probe.action if probe else None
        if (
            isinstance(action, HTTPGetAction | TCPSocketAction)
            and isinstance(action.port, str)
            and not action.port.isdigit()
            and not any(p.name == action.port for p in ports)
        ):
            problems.append(
                f"{where}.{pname}: port name {action.port!r} is not in the container's ports; "
                "add it or use the port number"
            )
    return c


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

_FIELDS = {
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "status.hostIPs",
    "spec.nodeName",
    "spec.serviceAccountName",
}


def _field_supported(path: str) -> bool:
    return path in _FIELDS or path.startswith(("metadata.labels['", "metadata.annotations['"))


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
    )


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
            elif ref["key"] not in obj:
                problems.append(
                    f"{c.path}.env[{i}].valueFrom.{ref_kind}.key: {what} {ref.get('name')!r} has no "
                    f"key {ref['key']!r}; use one of {sorted(obj)} or mark it optional: true"
                )
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
