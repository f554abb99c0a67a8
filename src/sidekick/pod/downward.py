"""The downward API: a Pod's own fields and resources, as env values and as volume files.

``fieldRef`` reads the Pod's metadata; ``resourceFieldRef`` reads a container's requests and
limits from the spec, as the kubelet does:

* CPU values are counted in millicores and divided by the divisor (``1`` or ``1m``), memory and
  ephemeral storage in bytes (divisor ``1``, ``1k``, ``1Mi``, ...); the result is rounded **up**
  to a whole number (``250m`` with divisor ``1`` gives ``1``).
* A limit that is not set is the node's allocatable amount. Here the node is this machine:
  ``os.cpu_count()`` cores, ``MemTotal`` of ``/proc/meminfo`` and the size of the filesystem of
  ``/``. A request that is not set is its limit when that is set (the API server's default),
  else 0.

``downwardAPI`` and ``projected`` volumes are written the kubelet's way (its AtomicWriter): the
files live in a timestamped directory ``..<time>``, ``..data`` is a symlink to it, and each
top-level name is a symlink through ``..data``. Labels and annotations files hold ``key="value"``
lines sorted by key, values quoted like Go's ``%q``, without a final newline.

Left out: the files are written once, when the Pod starts (the Pod's labels cannot change
here); hugepages resources; Pod-level ``spec.resources``; the ``kubernetes.io/config.*``
annotations the kubelet adds to what a Pod sees.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sidekick.pod.manifest import Container, Pod

POD_IP = "127.0.0.1"

RESOURCES = (
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
)
_CPU_DIVISORS = ("1m", "1")
_BYTE_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")

# The fields a downwardAPI volume may hold (the API server refuses the others there).
VOLUME_FIELDS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
)

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{k: Decimal(10) ** (3 * i) for i, k in enumerate("kMGTPE", 1)},
    **{k: Decimal(2) ** (10 * i) for i, k in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
}
_QUANTITY = re.compile(
    r"([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE])?)"
)


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity (``500m``, ``1.5``, ``128Mi``, ``1e3``) as a number."""
    text = str(value).strip()
    m = _QUANTITY.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a quantity")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a quantity") from None
    if m.group(2):
        return number * Decimal(10) ** int(m.group(2)[1:])
    return number * _SUFFIXES[m.group(3) or ""]


@functools.cache
def node_allocatable() -> dict[str, Decimal]:
    """This machine's capacity, standing for the node's allocatable resources."""
    memory = Decimal(0)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory = Decimal(int(line.split()[1]) * 1024)
                    break
    except OSError:
        pass
    return {
        "cpu": Decimal(os.cpu_count() or 1),
        "memory": memory,
        "ephemeral-storage": Decimal(shutil.disk_usage("/").total),
    }


def _amount(c: Container, resource: str) -> Decimal:
    kind, _, name = resource.partition(".")
    limits = (c.resources or {}).get("limits") or {}
    requests = (c.resources or {}).get("requests") or {}
    if kind == "limits":
        if name in limits:
            return parse_quantity(limits[name])
        return node_allocatable()[name]
    if name in requests:
        return parse_quantity(requests[name])
    if name in limits:  # the API server defaults a missing request to the limit
        return parse_quantity(limits[name])
    return Decimal(0)


def resource_value(c: Container, resource: str, divisor: object = None) -> str:
    """The value of ``resource`` of ``c`` divided by ``divisor``, rounded up, as a string."""
    amount = _amount(c, resource)
    div = parse_quantity(divisor if divisor not in (None, "", 0) else "1")
    if resource.endswith(".cpu"):
        # Millicores, as the kubelet's Quantity.MilliValue() (itself rounded up).
        milli, div_milli = math.ceil(amount * 1000), math.ceil(div * 1000)
        return str(math.ceil(Decimal(milli) / Decimal(div_milli)))
    return str(math.ceil(Decimal(math.ceil(amount)) / Decimal(math.ceil(div))))


def resource_problems(
    ref: dict[str, Any], where: str, containers: dict[str, Container], *, volume: bool
) -> list[str]:
    """What is wrong with a ``resourceFieldRef`` (empty when it can be honoured)."""
    problems = []
    resource = str(ref.get("resource", ""))
    if resource not in RESOURCES:
        problems.append(
            f"{where}.resource: {resource!r} is not supported; use one of {', '.join(RESOURCES)}"
        )
        return problems
    name = ref.get("containerName")
    if volume and not name:
        problems.append(
            f"{where}.containerName: required in a volume; name the container whose "
            "resources to read"
        )
    elif name and name not in containers:
        problems.append(
            f"{where}.containerName: no container named {name!r}; use one of "
            f"{', '.join(containers)}"
        )
    divisor = ref.get("divisor")
    if divisor not in (None, ""):
        allowed = _CPU_DIVISORS if resource.endswith(".cpu") else _BYTE_DIVISORS
        try:
            ok = any(parse_quantity(divisor) == parse_quantity(a) for a in allowed)
        except ValueError:
            ok = False
        if not ok:
            problems.append(
                f"{where}.divisor: {divisor!r} is not a valid divisor for {resource}; use one "
                f"of {', '.join(allowed)}"
            )
    for c in containers.values() if not name else [containers.get(str(name))]:
        if c is None:
            continue
        for kind in ("limits", "requests"):
            for key, value in ((c.resources or {}).get(kind) or {}).items():
                try:
                    parse_quantity(value)
                except ValueError:
                    problems.append(
                        f"{c.path}.resources.{kind}.{key}: {value!r} is not a quantity; write "
                        "it like 500m, 2 or 128Mi"
                    )
    return problems


def field_value(pod: Pod, path: str) -> str:
    """A ``fieldRef`` value; whole label and annotation maps formatted as the kubelet does."""
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
        "metadata.labels": format_map(pod.labels),
        "metadata.annotations": format_map(pod.annotations),
    }
    if path in simple:
        return simple[path]
    for prefix, store in (
        ("metadata.labels", pod.labels),
        ("metadata.annotations", pod.annotations),
    ):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return store.get(path[len(prefix) + 2 : -2], "")
    return ""


def go_quote(text: str) -> str:
    """``text`` quoted like Go's ``%q`` (``strconv.Quote``)."""
    out = ['"']
    named = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t"}
    named["\v"] = r"\v"
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch in named:
            out.append(named[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def format_map(values: dict[str, str]) -> str:
    return "\n".join(f"{k}={go_quote(values[k])}" for k in sorted(values))


def volume_files(
    pod: Pod, source: dict[str, Any], default_mode: int
) -> list[tuple[str, bytes, int]]:
    """The files of a ``downwardAPI`` volume (or projected source): (path, data, mode)."""
    containers = {c.name: c for c in pod.all_containers}
    out = []
    for item in source.get("items") or []:
        mode = int(item.get("mode") or default_mode)
        if item.get("fieldRef"):
            value = field_value(pod, str(item["fieldRef"].get("fieldPath", "")))
        else:
            ref = item["resourceFieldRef"]
            value = resource_value(
                containers[str(ref["containerName"])], str(ref["resource"]), ref.get("divisor")
            )
        out.append((str(item["path"]), value.encode(), mode))
    return out


def write_atomic(target: Path, files: list[tuple[str, bytes, int]]) -> None:
    """Write ``files`` under ``target`` in the kubelet's ``..data`` symlink layout."""
    target.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{time.time_ns() % 10**9}"
    data_dir = target / stamp
    data_dir.mkdir()
    for rel, blob, mode in files:
        path = data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        path.chmod(mode)
    data_dir.chmod(0o755)
    tmp = target / "..data_tmp"
    tmp.symlink_to(stamp)
    tmp.replace(target / "..data")
    for top in sorted({rel.split("/")[0] for rel, _b, _m in files}):
        link = target / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")


# --- checks, when the manifest is read --------------------------------------------------------

_REFUSED_SOURCES = {
    "serviceAccountToken": "a service account token is issued by a cluster's API server, and "
    "there is none here; put a token in a Secret and project that instead",
    "clusterTrustBundle": "trust bundles are cluster objects, and there is no cluster here; put "
    "the certificates in a ConfigMap and project that instead",
    "podCertificate": "pod certificates are issued by a cluster's signers, and there is no "
    "cluster here; put the certificate in a Secret and project that instead",
}


def _items_problems(
    items: list[dict[str, Any]], where: str, keys: dict[str, bytes] | None, optional: bool
) -> list[str]:
    problems = []
    for j, item in enumerate(items):
        rel = str(item.get("path", ""))
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            problems.append(
                f"{where}.items[{j}].path: {rel!r} must be a relative path without '..'"
            )
        if keys is not None and "key" in item and item["key"] not in keys and not optional:
            problems.append(
                f"{where}.items[{j}].key: {item['key']!r} is not in the object; use one of "
                f"{sorted(keys)} or mark it optional: true"
            )
    return problems


def _downward_problems(
    source: dict[str, Any], where: str, containers: dict[str, Container]
) -> list[str]:
    problems = []
    items = list(source.get("items") or [])
    problems += _items_problems(items, where, None, False)
    for j, item in enumerate(items):
        iwhere = f"{where}.items[{j}]"
        fref, rref = item.get("fieldRef"), item.get("resourceFieldRef")
        if bool(fref) == bool(rref):
            problems.append(f"{iwhere}: needs exactly one of fieldRef and resourceFieldRef")
        elif fref:
            path = str(fref.get("fieldPath", ""))
            keyed = path.startswith(("metadata.labels['", "metadata.annotations['"))
            if path not in VOLUME_FIELDS and not (keyed and path.endswith("']")):
                problems.append(
                    f"{iwhere}.fieldRef.fieldPath: {path!r} cannot be in a volume; use "
                    f"{', '.join(VOLUME_FIELDS)} or metadata.labels['KEY'] (status and spec "
                    "fields only go to env)"
                )
        else:
            problems += resource_problems(
                rref, f"{iwhere}.resourceFieldRef", containers, volume=True
            )
    return problems


def volume_problems(
    raw: dict[str, Any],
    where: str,
    containers: dict[str, Container],
    namespace: str,
    config_maps: dict[tuple[str, str], dict[str, bytes]],
    secrets: dict[tuple[str, str], dict[str, bytes]],
) -> list[str]:
    """What is wrong with a ``downwardAPI`` or ``projected`` volume (empty when it is fine)."""
    if "downwardAPI" in raw:
        return _downward_problems(raw["downwardAPI"] or {}, f"{where}.downwardAPI", containers)
    problems: list[str] = []
    for i, src in enumerate((raw.get("projected") or {}).get("sources") or []):
        swhere = f"{where}.projected.sources[{i}]"
        for kind, why in _REFUSED_SOURCES.items():
            if kind in src:
                problems.append(f"{swhere}.{kind}: not supported by sidekick up: {why}")
        if "downwardAPI" in src:
            problems += _downward_problems(
                src["downwardAPI"] or {}, f"{swhere}.downwardAPI", containers
            )
        for kind, store, what in (
            ("configMap", config_maps, "ConfigMap"),
            ("secret", secrets, "Secret"),
        ):
            if kind not in src:
                continue
            ref = src[kind] or {}
            optional = bool(ref.get("optional"))
            obj = store.get((namespace, str(ref.get("name", ""))))
            if obj is None and not optional:
                problems.append(
                    f"{swhere}.{kind}.name: {what} {ref.get('name')!r} is not in the given files; "
                    "add its manifest to the command line or mark it optional: true"
                )
            problems += _items_problems(
                list(ref.get("items") or []), f"{swhere}.{kind}", obj, optional
            )
    return problems


def projected_files(
    pod: Pod,
    source: dict[str, Any],
    config_maps: dict[tuple[str, str], dict[str, bytes]],
    secrets: dict[tuple[str, str], dict[str, bytes]],
) -> list[tuple[str, bytes, int]]:
    """The files of a ``projected`` volume, source by source: (path, data, mode)."""
    default_mode = int(source.get("defaultMode") or 0o644)
    out: list[tuple[str, bytes, int]] = []
    for src in source.get("sources") or []:
        if "downwardAPI" in src:
            out += volume_files(pod, src["downwardAPI"] or {}, default_mode)
        for kind, store in (("configMap", config_maps), ("secret", secrets)):
            if kind not in src:
                continue
            ref = src[kind] or {}
            data = store.get((pod.namespace, str(ref.get("name", ""))), {})
            items = ref.get("items")
            if not items:
                out += [(k, v, default_mode) for k, v in data.items()]
                continue
            for item in items:
                if item["key"] in data:
                    mode = int(item.get("mode") or default_mode)
                    out.append((str(item["path"]), data[item["key"]], mode))
    return out


def pod_problems(
    spec: dict[str, Any],
    where: str,
    containers: list[Container],
    namespace: str,
    config_maps: dict[tuple[str, str], dict[str, bytes]],
    secrets: dict[tuple[str, str], dict[str, bytes]],
) -> list[str]:
    """The downward API's problems in a Pod spec: volumes and ``resourceFieldRef`` in env."""
    by_name = {c.name: c for c in containers}
    problems: list[str] = []
    for i, raw in enumerate(spec.get("volumes") or []):
        if "downwardAPI" in raw or "projected" in raw:
            problems += volume_problems(
                raw, f"{where}.volumes[{i}]", by_name, namespace, config_maps, secrets
            )
    for c in containers:
        for i, e in enumerate(c.env):
            ref = (e.get("valueFrom") or {}).get("resourceFieldRef")
            if ref is not None:
                problems += resource_problems(
                    ref, f"{c.path}.env[{i}].valueFrom.resourceFieldRef", by_name, volume=False
                )
    return problems


def env_resource(c: Container, containers: list[Container], ref: dict[str, Any]) -> str:
    """A ``resourceFieldRef`` env value of container ``c``."""
    name = ref.get("containerName")
    target = next((x for x in containers if x.name == name), c) if name else c
    return resource_value(target, str(ref["resource"]), ref.get("divisor"))
