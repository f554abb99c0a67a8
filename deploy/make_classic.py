"""Write the classic-sidecar and podman variants of a manifest that uses native sidecars.

Native sidecars (``initContainers`` with ``restartPolicy: Always``) need Kubernetes >= 1.29, and
``podman kube play`` runs init containers to completion, so a sidecar there would block the Pod
forever. The classic variant moves each native sidecar into ``containers`` (after the main
containers, so ``kubectl exec``/``logs`` still default to the app) and drops its
``restartPolicy``. What is lost: start order (the app may start before its sidecars are ready)
and stop order (sidecars get SIGTERM together with the app).

The podman variant is the classic one plus what ``podman kube play`` (4.x) needs: it has no
Services, so the port a Service targets gets a ``hostPort`` of the same number (published on the
host) and replicas is 1; a Pod with init containers gets ``restartPolicy: OnFailure`` (podman
applies the Pod's policy to init containers and would rerun them forever under Always); it cannot resolve the Downward API field ``metadata.namespace``, which
becomes the literal ``podman``; and it does not expand ``$(VAR)`` in command/args, so the
variant carries them expanded.

The variants are generated, not hand-kept, and a test checks the committed ones are current
(deploy/regenerate-variants.sh rewrites all of them):

    python deploy/make_classic.py examples/webapp/webapp.yaml > examples/webapp/webapp-classic.yaml
    python deploy/make_classic.py --podman examples/webapp/webapp.yaml > examples/webapp/webapp-podman.yaml
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml

POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
}


class _NoAliases(yaml.SafeDumper):
    # The hand-written manifests share securityContext blocks through YAML anchors; the
    # generated file spells each one out so it reads on its own.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Files embedded in ConfigMaps stay readable as literal blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_NoAliases.add_representer(str, _text)


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    path = POD_SPEC_PATHS.get(doc.get("kind", ""))
    if path is None:
        return None
    spec = doc
    for key in path:
        spec = spec[key]
    return spec


def classic(doc: dict[str, Any]) -> dict[str, Any]:
    """The same object with its native sidecars turned into ordinary containers."""
    doc = copy.deepcopy(doc)
    spec = _pod_spec(doc)
    if spec is None:
        return doc
    inits = spec.get("initContainers") or []
    sidecars = [c for c in inits if c.get("restartPolicy") == "Always"]
    remaining = [c for c in inits if c.get("restartPolicy") != "Always"]
    if not sidecars:
        return doc
    for container in sidecars:
        del container["restartPolicy"]
    spec["containers"] = list(spec["containers"]) + sidecars
    if remaining:
        spec["initContainers"] = remaining
    else:
        del spec["initContainers"]
    return doc


_REF = re.compile(r"\$\$|\$\((\w+)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` rule: a defined variable is replaced, ``$$`` is one ``$`` (so
    ``$$(VAR)`` stays literal), an undefined reference is left as written."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REF.sub(one, text)


def podman(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The classic variant adapted to ``podman kube play``: one replica (each would be a Pod
    on the same host ports), Services become hostPorts, and ``$(VAR)`` references in command
    and args are expanded here because podman passes them through literally."""
    docs = [classic(d) for d in docs]
    for doc in docs:
        if doc.get("kind") in {"Deployment", "StatefulSet"}:
            doc["spec"]["replicas"] = 1
            spec = doc["spec"]["template"]["spec"]
            if spec.get("initContainers"):
                # podman 4 applies the Pod's restartPolicy to init containers too: under
                # Always it restarts a finished init container over and over (and may then fail
                # to remove it). OnFailure runs it once; a main container that exits 0 is then
                # not restarted, which only matters for programs that should never exit.
                spec["restartPolicy"] = "OnFailure"
    published = {
        str(p.get("targetPort", p["port"]))
        for d in docs
        if d.get("kind") == "Service"
        for p in d["spec"]["ports"]
    }
    for doc in docs:
        spec = _pod_spec(doc)
        if spec is None:
            continue
        for container in spec["containers"]:
            for port in container.get("ports") or []:
                if port.get("name") in published or str(port["containerPort"]) in published:
                    port["hostPort"] = port["containerPort"]
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("fieldRef") or {}
                if ref.get("fieldPath") == "metadata.namespace":
                    del env["valueFrom"]
                    env["value"] = "podman"
            values = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
            for key in ("command", "args"):
                if key in container:
                    container[key] = [expand(str(a), values) for a in container[key]]
    return docs


def render(source: Path, variant: str = "classic") -> str:
    docs = [d for d in yaml.safe_load_all(source.read_text()) if d]
    if variant == "podman":
        header = (
            f"# Generated from {source.name} by deploy/make_classic.py --podman; do not edit.\n"
            "# For podman kube play: classic sidecars; the Service's port published as a hostPort.\n"
        )
        out = podman(docs)
    else:
        header = (
            f"# Generated from {source.name} by deploy/make_classic.py; do not edit by hand.\n"
            "# Classic sidecars (ordinary containers) for Kubernetes < 1.29.\n"
        )
        out = [classic(d) for d in docs]
    return header + yaml.dump_all(out, Dumper=_NoAliases, sort_keys=False, width=100)


def main(argv: list[str]) -> int:
    variant = "classic"
    if argv[:1] == ["--podman"]:
        variant, argv = "podman", argv[1:]
    if len(argv) != 1:
        print("usage: make_classic.py [--podman] MANIFEST.yaml > VARIANT.yaml", file=sys.stderr)
        return 2
    sys.stdout.write(render(Path(argv[0]), variant))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
