"""Service environment variables, as the kubelet injects them into every container.

For each Service of the Pod's namespace given in the same run (unless the Pod sets
``enableServiceLinks: false``), and always for the API server's ``kubernetes`` Service, a
container gets, with the name upper-cased and ``-`` turned into ``_``::

    WEBAPP_SERVICE_HOST=127.0.0.1         WEBAPP_SERVICE_PORT=8080
    WEBAPP_SERVICE_PORT_<PORTNAME>=8080   (each named port)
    WEBAPP_PORT=tcp://127.0.0.1:8080      (the first port)
    WEBAPP_PORT_8080_TCP=tcp://127.0.0.1:8080
    WEBAPP_PORT_8080_TCP_PROTO=tcp  WEBAPP_PORT_8080_TCP_PORT=8080  WEBAPP_PORT_8080_TCP_ADDR=127.0.0.1

The kubelet's rules are kept: a Service without a cluster IP (``clusterIP: None``, an
``ExternalName``) gets none; declared ``env`` wins over them; ``$(VAR)`` in ``env`` values and in
``command``/``args`` can name them.

What differs: every Pod shares this machine's network and there is no proxy, so the host is
``127.0.0.1`` and each port is where the Service's Pods listen, its ``targetPort`` (a named
target port is looked up in the ports of the Pods its selector picks in this run); ``up`` says
so once when that differs from ``port``. ``kubernetes`` is ``127.0.0.1:443``, where no API
server answers: the variables let programs that only check for them run, but a client that
really uses the in-cluster configuration fails, as it would without a service account token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sidekick.pod.manifest import Pod

log = logging.getLogger("sidekick.up")

HOST = "127.0.0.1"


@dataclass
class ServicePort:
    port: int  # what the variables carry: where the Service is reached here
    declared: int  # spec.ports[].port
    name: str
    protocol: str


@dataclass
class Service:
    name: str
    namespace: str
    ports: list[ServicePort]


API_SERVER = Service("kubernetes", "default", [ServicePort(443, 443, "https", "TCP")])


def _pod_port(pods: list[Pod], namespace: str, selector: dict[str, str], name: str) -> int | None:
    for pod in pods:
        if pod.namespace != namespace or not selector:
            continue
        if any(pod.labels.get(k) != v for k, v in selector.items()):
            continue
        for c in pod.all_containers:
            for p in c.ports:
                if p.name == name:
                    return p.port
    return None


def services(docs: list[tuple[str, dict[str, Any]]], pods: list[Pod]) -> list[Service]:
    """The Services of ``docs`` (namespace, Service object) that have a cluster IP."""
    out: list[Service] = []
    for namespace, doc in docs:
        spec = doc.get("spec") or {}
        name = str((doc.get("metadata") or {}).get("name") or "")
        if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
            continue
        ports: list[ServicePort] = []
        for p in spec.get("ports") or []:
            declared = int(p["port"])
            target = p.get("targetPort", declared)
            if isinstance(target, str) and not target.isdigit():
                found = _pod_port(pods, namespace, dict(spec.get("selector") or {}), target)
                reached = declared if found is None else found
            else:
                reached = int(target)
            if reached != declared:
                log.info(
                    "Service %s: port %d is reached at %s:%d here (its targetPort); its "
                    "variables say %d.",
                    name,
                    declared,
                    HOST,
                    reached,
                    reached,
                )
            ports.append(
                ServicePort(reached, declared, str(p.get("name") or ""), p.get("protocol") or "TCP")
            )
        if ports:
            out.append(Service(name, namespace, ports))
    return out


def _var(name: str) -> str:
    return name.upper().replace("-", "_")


def service_env(pod: Pod, known: list[Service]) -> dict[str, str]:
    """The service variables of ``pod``'s containers, in the kubelet's order."""
    chosen: dict[str, Service] = {"kubernetes": API_SERVER}
    if pod.enable_service_links:
        for svc in known:
            if svc.namespace == pod.namespace and not (
                svc.name == "kubernetes" and svc.namespace == "default"
            ):
                chosen[svc.name] = svc
    env: dict[str, str] = {}
    for svc in sorted(chosen.values(), key=lambda s: s.name):
        prefix = _var(svc.name)
        env[f"{prefix}_SERVICE_HOST"] = HOST
        env[f"{prefix}_SERVICE_PORT"] = str(svc.ports[0].port)
        for p in svc.ports:
            if p.name:
                env[f"{prefix}_SERVICE_PORT_{_var(p.name)}"] = str(p.port)
        for i, p in enumerate(svc.ports):
            proto = p.protocol.lower()
            url = f"{proto}://{HOST}:{p.port}"
            if i == 0:
                env[f"{prefix}_PORT"] = url
            base = f"{prefix}_PORT_{p.port}_{p.protocol.upper()}"
            env[base] = url
            env[f"{base}_PROTO"] = proto
            env[f"{base}_PORT"] = str(p.port)
            env[f"{base}_ADDR"] = HOST
    return env


def read_services(
    docs: list[tuple[str, dict[str, Any]]],
    namespaces: set[str],
    pods: list[Pod],
    problems: list[str],
) -> list[Service]:
    """Check the Service documents (file name, object) and resolve them against ``pods``.

    A Service that names no namespace lands in each Pod's, as ConfigMaps do.
    """
    from sidekick.pod._schema import _name, _strip_nulls, schema_problems

    placed: list[tuple[str, dict[str, Any]]] = []
    for fname, doc in docs:
        origin = f"{fname}: Service {_name(doc)!r}"
        nulls: list[str] = []
        doc = _strip_nulls(doc, [], nulls)
        found = nulls + schema_problems(doc)
        if found:
            problems.extend(f"{origin}: {p}" for p in found)
            continue
        log.info(
            "%s: skipped as an object (no proxy runs here); its service environment "
            "variables go to the Pods of its namespace.",
            origin,
        )
        ns = str((doc.get("metadata") or {}).get("namespace") or "")
        placed.extend((n, doc) for n in ([ns] if ns else sorted(namespaces)))
    return services(placed, pods)
