"""A container's environment, built the kubelet's way.

``envFrom`` first, then ``env`` in order, each value ``$(VAR)``-expanded against the variables
declared before it; then ``command`` and ``args`` are expanded against all of them. Mount paths
are translated after expansion, once. The host's PATH (with this Python's bin directory first,
so ``sidekick`` is found), HOME, LANG, LC_ALL and TZ are passed as an image would provide them,
plus HOSTNAME (the pod name) and the run markers.

Left out: expanding ``command`` and ``args``, translating mount paths and the image's tool
directory on PATH (``container.ContainerRunner``), the service variables themselves
(``servicelinks``) and resource values (``downward``).
"""

from __future__ import annotations

import os
import sys

from sidekick.pod.expand import expand
from sidekick.pod.hygiene import CONTAINER_ENV, RUN_ENV
from sidekick.pod.manifest import Container, Manifests, Pod, env_data

POD_IP = "127.0.0.1"


def _field(pod: Pod, path: str) -> str:
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
        "status.hostIP": POD_IP,
        "status.hostIPs": POD_IP,
        "spec.nodeName": pod.node_name,
        "spec.serviceAccountName": pod.service_account,
    }
    if path in simple:
        return simple[path]
    for prefix, store in (
        ("metadata.labels", pod.labels),
        ("metadata.annotations", pod.annotations),
    ):
        if path.startswith(prefix + "['"):
            return store.get(path[len(prefix) + 2 : -2], "")
    return ""


def declared_env(pod: Pod, c: Container, manifests: Manifests) -> dict[str, str]:
    """The container's declared variables, expanded as the kubelet does (not yet translated).

    The service variables (``sidekick.pod.servicelinks``) come last, under the declared ones,
    and ``$(VAR)`` in a value may name them.
    """
    from collections import ChainMap

    from sidekick.pod.downward import env_resource
    from sidekick.pod.servicelinks import service_env

    services = service_env(pod, manifests.services)
    env: dict[str, str] = {}
    for ef in c.env_from:
        prefix = str(ef.get("prefix") or "")
        for ref_kind, store in (
            ("configMapRef", manifests.config_maps),
            ("secretRef", manifests.secrets),
        ):
            ref = ef.get(ref_kind)
            if ref is not None:
                data = env_data(store.get((pod.namespace, ref.get("name", "")), {}))
                for k, v in data.items():
                    env[prefix + k] = v.decode(errors="replace")
    for e in c.env:
        name = e["name"]
        src = e.get("valueFrom")
        if not src:
            env[name] = expand(str(e.get("value") or ""), ChainMap(env, services))
            continue
        if "fieldRef" in src:
            env[name] = _field(pod, src["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in src:
            env[name] = env_resource(c, pod.all_containers, src["resourceFieldRef"])
        for ref_kind, store in (
            ("configMapKeyRef", manifests.config_maps),
            ("secretKeyRef", manifests.secrets),
        ):
            ref = src.get(ref_kind)
            if ref is not None:
                data = env_data(store.get((pod.namespace, ref.get("name", "")), {}))
                value = data.get(ref["key"])
                if value is not None:
                    env[name] = value.decode(errors="replace")
    for key, text in services.items():
        env.setdefault(key, text)
    return env


def base_env(pod: Pod, c: Container, run_id: str) -> dict[str, str]:
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    if bindir not in path.split(":"):
        path = f"{bindir}:{path}"
    env = {
        "PATH": path,
        "HOME": os.environ.get("HOME", "/root"),
        "HOSTNAME": pod.hostname or pod.name,
    }
    for k in ("LANG", "LC_ALL", "TZ"):
        if k in os.environ:
            env[k] = os.environ[k]
    env[RUN_ENV] = run_id
    env[CONTAINER_ENV] = f"{pod.name}/{c.name}"
    return env
