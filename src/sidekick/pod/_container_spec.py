"""One container of a Pod spec read into a ``Container``: its command, ports, mounts, env,
probes and lifecycle hooks, with the checks the schema cannot make.

A container without ``command`` gets one from the ``sidekick.dev/command.NAME`` annotation,
else from a ``--set-image`` flag (``IMAGE=[]``: the image has no entrypoint, so the args are the
command), else from its image's ENTRYPOINT and CMD (``sidekick.pod.images``); one with none is
refused, named, with the fix. gRPC probes, ``subPathExpr``, ``fileKeyRef`` and ``fieldRef``
paths that have no local value are refused with what to use instead; ``stdin`` and ``tty`` are
warned about, since ``sidekick up`` gives containers neither.

Left out: what needs the whole Pod (volumes, container names, the ConfigMaps and Secrets that
env names, runAsNonRoot against runAsUser): ``_pod_spec`` checks those.
"""

from __future__ import annotations

import logging
import shlex
import signal
from typing import Any

import yaml

from sidekick.pod.manifest import (
    Action,
    Container,
    ExecAction,
    HTTPGetAction,
    Kind,
    Port,
    Probe,
    SleepAction,
    TCPSocketAction,
    Volume,
    VolumeMount,
)

log = logging.getLogger("sidekick.up")

COMMAND_ANNOTATION = "sidekick.dev/command."


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
    for field in (
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ):
        value = raw.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            # The API server's validateProbe refuses these (ValidateNonnegativeField); a
            # negative period or timeout would make the probe spin.
            problems.append(
                f"{where}.{field}: {value!r} is negative; use 0 or more (0 is the default)"
            )
    grace = raw.get("terminationGracePeriodSeconds")
    if grace is not None:
        # As the API server validates a Probe (the field's doc: "Minimum value is 1"; not
        # for readiness probes, whose failure kills nothing).
        if where.endswith(".readinessProbe"):
            problems.append(
                f"{where}.terminationGracePeriodSeconds: readiness probes cannot set it, "
                "as a failed one kills nothing; remove it"
            )
            grace = None
        elif isinstance(grace, bool) or not isinstance(grace, int) or grace < 1:
            problems.append(
                f"{where}.terminationGracePeriodSeconds: {grace!r} is not a whole number of "
                "seconds of at least 1; set 1 or more, or remove it to use the Pod's "
                "terminationGracePeriodSeconds"
            )
            grace = None
    probe = Probe(
        action=action,
        initial_delay=float(raw.get("initialDelaySeconds") or 0),
        period=float(raw.get("periodSeconds") or 10),
        timeout=float(raw.get("timeoutSeconds") or 1),
        success_threshold=int(raw.get("successThreshold") or 1),
        failure_threshold=int(raw.get("failureThreshold") or 3),
        grace_period=None if grace is None else float(grace),
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
    if kind == "init" and "lifecycle" in raw:
        # The API server's validateInitContainers forbids it, as it forbids probes.
        problems.append(
            f"{where}.lifecycle: hooks are only allowed on init containers with "
            "restartPolicy: Always; remove it or make the container a sidecar"
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
