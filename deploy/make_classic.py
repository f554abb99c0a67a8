"""Write the classic-sidecar variant of a manifest that uses native sidecars.

Native sidecars (``initContainers`` with ``restartPolicy: Always``) need Kubernetes >= 1.29, and
``podman kube play`` runs init containers to completion, so a sidecar there would block the Pod
forever. The classic variant moves each native sidecar into ``containers`` (after the main
containers, so ``kubectl exec``/``logs`` still default to the app) and drops its
``restartPolicy``. What is lost: start order (the app may start before its sidecars are ready)
and stop order (sidecars get SIGTERM together with the app).

The variants are generated, not hand-kept, and a test checks the committed ones are current:

    python deploy/make_classic.py examples/webapp/webapp.yaml > examples/webapp/webapp-classic.yaml
"""

from __future__ import annotations

import copy
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


def classic(doc: dict[str, Any]) -> dict[str, Any]:
    """The same object with its native sidecars turned into ordinary containers."""
    doc = copy.deepcopy(doc)
    path = POD_SPEC_PATHS.get(doc.get("kind", ""))
    if path is None:
        return doc
    spec = doc
    for key in path:
        spec = spec[key]
    inits = spec.get("initContainers") or []
    sidecars = [c for c in inits if c.get("restartPolicy") == "Always"]
    if not sidecars:
        return doc
    for container in sidecars:
        del container["restartPolicy"]
    spec["containers"] = list(spec["containers"]) + sidecars
    remaining = [c for c in inits if c.get("restartPolicy") != "Always"]
    if remaining:
        spec["initContainers"] = remaining
    else:
        del spec["initContainers"]
    return doc


def render(source: Path) -> str:
    docs = [d for d in yaml.safe_load_all(source.read_text()) if d]
    header = (
        f"# Generated from {source.name} by deploy/make_classic.py; do not edit by hand.\n"
        "# Classic sidecars (ordinary containers) for Kubernetes < 1.29 and podman kube play.\n"
    )
    body = yaml.dump_all([classic(d) for d in docs], Dumper=_NoAliases, sort_keys=False, width=100)
    return header + body


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: make_classic.py MANIFEST.yaml > MANIFEST-classic.yaml", file=sys.stderr)
        return 2
    sys.stdout.write(render(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
