"""Kubernetes metadata from a container log's path, with no API server to ask.

The kubelet names every container's log file after the container, so the path alone says
whose lines they are:

``/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart count>.log``
    ``k8s.namespace.name``, ``k8s.pod.name``, ``k8s.pod.uid``, ``k8s.container.name`` and
    ``k8s.container.restart_count`` (an int). Rotated files (``0.log.20240501-100000``) keep
    their metadata.
``/var/log/containers/<pod>_<namespace>_<container>-<container id>.log``
    the same names (no uid, no restart count there) and ``container.id``.

Only the last components are read, so a tree mounted or copied elsewhere (a DaemonSet that
mounts the host's ``/var/log/pods`` at another path) is recognised as well. Names are checked
against what Kubernetes allows (a namespace and a container name are DNS labels, a pod name a
DNS subdomain), so an unrelated file whose name happens to contain underscores gets nothing.
The tail source calls ``k8s_fields`` once per file, not per line.

Left out: labels and annotations, which only the API server knows.
"""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"
_PODS = re.compile(
    rf"(?:^|/)(?P<ns>{_LABEL})_(?P<pod>{_SUBDOMAIN})_(?P<uid>[0-9a-fA-F-]{{8,64}})"
    rf"/(?P<container>{_LABEL})/(?P<restarts>\d{{1,9}})\.log(?:\.[^/]*)?$"
)
_CONTAINERS = re.compile(
    rf"(?:^|/)(?P<pod>{_SUBDOMAIN})_(?P<ns>{_LABEL})_(?P<container>{_LABEL})"
    rf"-(?P<id>[0-9a-f]{{64}})\.log$"
)


def k8s_fields(path: str) -> dict[str, str | int]:
    """The Kubernetes fields ``path`` names; empty if it follows neither kubelet layout."""
    m = _PODS.search(path)
    if m is not None:
        return {
            "k8s.namespace.name": m["ns"],
            "k8s.pod.name": m["pod"],
            "k8s.pod.uid": m["uid"],
            "k8s.container.name": m["container"],
            "k8s.container.restart_count": int(m["restarts"]),
        }
    m = _CONTAINERS.search(path)
    if m is not None:
        return {
            "k8s.namespace.name": m["ns"],
            "k8s.pod.name": m["pod"],
            "k8s.container.name": m["container"],
            "container.id": m["id"],
        }
    return {}
