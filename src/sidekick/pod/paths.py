"""Volumes as directories under the run dir, and mount paths translated to them.

A container cannot see ``/var/log/nginx`` as its volume without a mount namespace, so the
opposite is done: every occurrence of a container's ``mountPath`` in its command, args, env
values, ``workingDir``, probe and hook commands, and in the files of the ConfigMaps it mounts, is
rewritten to the directory that backs the volume. Longer mount paths win (``/etc/nginx/conf.d``
before ``/etc/nginx``), and a mount path only matches at path boundaries: ``/data`` is rewritten
in ``/data``, ``/data/x``, ``--dir=/data`` and ``file:///data/x``, but not in ``/database`` or
``/srv/data``.

Layout of ``<run-dir>/<pod>/``::

    volumes/<volume>/                 emptyDir and secret volumes (shared by all containers)
    configmaps/<volume>/<container>/  a ConfigMap volume, one translated copy per container
    image/<container>/...             files a known image provides (see ``images``)
    state/<container>/                pid files and temp directories of such images
    logs/<container>.log              the container's output, read by ``sidekick logs``

What it leaves out: a program that builds paths at run time from pieces, or reads a path
from a file that is not a mounted ConfigMap, sees the unmounted path.

``readOnly`` mounts and ConfigMap and Secret volumes are made read-only for the container
that mounts them by :mod:`sidekick.pod.readonly` (a private mount namespace) where that is
allowed; elsewhere ``sidekick up`` warns that they stay writable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sidekick.core.errors import ConfigError
from sidekick.pod import downward, readonly, termination, tmpfs
from sidekick.pod.images import image_files
from sidekick.pod.manifest import Container, Manifests, Pod

log = logging.getLogger("sidekick.up")


class Translator:
    """Rewrite container paths to host paths, longest container path first."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = dict(table)
        keys = sorted((k for k in table if k != "/"), key=len, reverse=True)
        self._re = (
            re.compile(
                # Not inside a longer name or path (`/srv/data`, `/database`), except right
                # after `scheme://`, where an empty authority leaves a path: `file:///data`.
                r"(?:(?<![\w.~/-])|(?<=://))("
                + "|".join(re.escape(k) for k in keys)
                + r")(?![\w.-])"
            )
            if keys
            else None
        )

    def __call__(self, text: str) -> str:
        if self._re is None:
            return text
        return self._re.sub(lambda m: self.table[m.group(1)], text)


@dataclass
class PodDirs:
    root: Path
    logs: Path
    translators: dict[str, Translator] = field(default_factory=dict)
    state: dict[str, Path] = field(default_factory=dict)
    size_limits: list[tuple[str, Path, int]] = field(default_factory=list)
    read_only: dict[str, list[str]] = field(default_factory=dict)  # container -> host paths
    # container -> its terminationMessagePath's host file (sidekick.pod.termination)
    termination: dict[str, Path] = field(default_factory=dict)

    def log_file(self, container: str) -> Path:
        return self.logs / f"{container}.log"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _items(
    source: dict[str, object], data: dict[str, bytes], where: str
) -> list[tuple[str, bytes, int]]:
    default_mode = int(source.get("defaultMode") or 0o644)  # type: ignore[call-overload]
    items = source.get("items")
    out: list[tuple[str, bytes, int]] = []
    if items:
        for item in items:  # type: ignore[attr-defined]
            key = item["key"]
            if key not in data:
                if source.get("optional"):
                    continue
                raise ConfigError(
                    f"{where}: key {key!r} is not in the object; use one of {sorted(data)}"
                )
            out.append((item["path"], data[key], int(item.get("mode") or default_mode)))
    else:
        out = [(k, v, default_mode) for k, v in data.items()]
    return out


def prepare(pod: Pod, manifests: Manifests, run_dir: Path) -> PodDirs:
    """Create the pod's directories (fresh, like a new pod) and every container's translator."""
    root = (run_dir / pod.name).resolve()
    if root.exists():
        tmpfs.unmount_under(root)  # a memory volume left by a run that was killed
        shutil.rmtree(root)
    dirs = PodDirs(root=root, logs=root / "logs")
    dirs.logs.mkdir(parents=True)
    backing: dict[str, Path] = {}
    for vol in pod.volumes.values():
        if vol.kind in ("emptyDir", "secret"):
            backing[vol.name] = root / "volumes" / vol.name
            backing[vol.name].mkdir(parents=True)
            if vol.kind == "emptyDir" and vol.size_limit is not None:
                dirs.size_limits.append((vol.name, backing[vol.name], vol.size_limit))
            if vol.kind == "emptyDir" and vol.source.get("medium") == "Memory":
                size = vol.size_limit or int(downward.node_allocatable()["memory"]) or 2**30
                why = tmpfs.mount(backing[vol.name], size)
                if why:
                    log.warning(
                        "%s: emptyDir %r (medium: Memory) is an ordinary directory here: a tmpfs "
                        "cannot be mounted (%s; it needs root).",
                        pod.origin,
                        vol.name,
                        why,
                    )
        elif vol.kind in ("downwardAPI", "projected"):
            backing[vol.name] = root / "volumes" / vol.name
            if vol.kind == "downwardAPI":
                mode = int(vol.source.get("defaultMode") or 0o644)
                written = downward.volume_files(pod, vol.source, mode)
            else:
                written = downward.projected_files(
                    pod, vol.source, manifests.config_maps, manifests.secrets
                )
            downward.write_atomic(backing[vol.name], written)
        elif vol.kind == "hostPath":
            path = Path(str(vol.source["path"]))
            htype = str(vol.source.get("type") or "")
            if htype == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif htype == "FileOrCreate":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch(exist_ok=True)
            elif htype == "Directory" and not path.is_dir():
                raise ConfigError(
                    f"volume {vol.name!r}: hostPath {str(path)!r} is not a directory; create it "
                    "or use type: DirectoryOrCreate"
                )
            elif htype == "File" and not path.is_file():
                raise ConfigError(
                    f"volume {vol.name!r}: hostPath {str(path)!r} is not a file; create it "
                    "or use type: FileOrCreate"
                )
            backing[vol.name] = path
        if vol.kind == "secret":
            data = manifests.secrets.get((pod.namespace, str(vol.source.get("secretName"))), {})
            for rel, blob, mode in _items(vol.source, data, f"volume {vol.name!r}"):
                _write(backing[vol.name] / rel, blob, mode)

    read_only: list[str] = []
    for c in pod.all_containers:
        state = root / "state" / c.name
        state.mkdir(parents=True)
        dirs.state[c.name] = state
        table: dict[str, str] = {}
        ro: list[tuple[str, str]] = []  # (host path, mount path)
        rw: list[str] = []
        for m in c.mounts:
            vol = pod.volumes[m.name]
            if vol.kind == "configMap":
                base = root / "configmaps" / vol.name / c.name
            else:
                base = backing[vol.name]
            target = base / m.sub_path if m.sub_path else base
            if m.sub_path and vol.kind == "emptyDir":
                target.mkdir(parents=True, exist_ok=True)
            table[m.mount_path] = str(target)
            if m.read_only or vol.kind in ("configMap", "secret", "downwardAPI", "projected"):
                ro.append((str(target), m.mount_path))
            else:
                rw.append(str(target))
            if m.read_only and vol.kind in ("emptyDir", "hostPath"):
                read_only.append(f"{c.name} at {m.mount_path}")
        # Mounts share one host directory per volume: a path the container also reaches
        # through a read-write mount (the same directory, one inside it, or one around it)
        # must stay writable, or the read-write mount would be read-only too.
        shared = [mp for p, mp in ro if any(_under(w, p) or _under(p, w) for w in rw)]
        if shared:
            log.warning(
                "%s: container %s mounts the directory of %s read-write too, so it stays "
                "writable there.",
                pod.origin,
                c.name,
                ", ".join(shared),
            )
        if kept := [p for p, mp in ro if mp not in shared]:
            dirs.read_only[c.name] = kept
        files = image_files(c.image, c.command, str(state))
        image_root = root / "image" / c.name
        mounted = list(table)
        for ipath, text in files.items():
            if any(_under(ipath, mp) for mp in mounted):
                continue  # a volume mounted over this part of the image hides it
            _write(image_root / ipath.lstrip("/"), text.encode(), 0o644)
            # Each directory of the image's files stands for that directory of the image.
            parent = os.path.dirname(ipath)
            table.setdefault(parent, str(image_root / parent.lstrip("/")))
        # The kubelet mounts a fresh file at terminationMessagePath, over any volume there.
        dirs.termination[c.name] = state / "termination-log"
        termination.reset(dirs.termination[c.name])
        table[c.termination_message_path] = str(dirs.termination[c.name])
        translate = Translator(table)
        dirs.translators[c.name] = translate
        # Image files may name mounted paths (nginx.conf names /var/log/nginx).
        for ipath in files:
            host = image_root / ipath.lstrip("/")
            if host.exists():
                host.write_text(translate(host.read_text()))
        for m in c.mounts:
            vol = pod.volumes[m.name]
            if vol.kind != "configMap":
                continue
            base = root / "configmaps" / vol.name / c.name
            if base.exists():
                continue
            base.mkdir(parents=True)
            data = manifests.config_maps.get((pod.namespace, str(vol.source.get("name"))), {})
            for rel, blob, mode in _items(vol.source, data, f"volume {vol.name!r}"):
                # Binary data is never rewritten.
                with contextlib.suppress(UnicodeDecodeError):
                    blob = translate(blob.decode()).encode()
                _write(base / rel, blob, mode)
    from sidekick.pod.exec import write_info

    write_info(pod, dirs)
    if read_only and not readonly.available():
        log.warning(
            "%s: readOnly mounts (%s) are not enforced: making them needs a mount namespace "
            "(run sidekick up as root); writes will succeed.",
            pod.origin,
            ", ".join(read_only),
        )
    return dirs


def check_container_paths(c: Container, translate: Translator) -> str:
    """The host working directory of ``c`` (created if it is inside a volume)."""
    if not c.working_dir:
        return ""
    wd = translate(c.working_dir)
    if not os.path.isdir(wd):
        if wd != c.working_dir:
            os.makedirs(wd, exist_ok=True)
        else:
            raise ConfigError(
                f"{c.path}.workingDir: {c.working_dir!r} does not exist on this machine; "
                "mount a volume there or create the directory"
            )
    return wd
