"""What an image runs when a container leaves it to the image, and what that image needs.

Kubernetes combines a container's ``command`` and ``args`` with the image's ENTRYPOINT and CMD
(the table in "Define a Command and Arguments for a Container"): ``command`` replaces
ENTRYPOINT and, given without ``args``, drops CMD too; ``args`` replace CMD; with neither the
image runs ENTRYPOINT + CMD. There are no images here, so the ENTRYPOINT and CMD come from:

* ``podman image inspect``, when podman is installed and has the image locally (never pulled);
* otherwise a short table of official images (``busybox``, ``alpine``, ``debian``, ``ubuntu``,
  ``python``, ``golang``, ``httpd``, ``nginx``, ``node``, ``redis``, ``postgres``), matched only
  by their official names (``python:3.12``, ``docker.io/library/python``), because another
  publisher's ``python`` may set an ENTRYPOINT. Every entry is a promise about an image.

The program the combination names must exist on this machine (``python3``, ``sh``); an image's
own entrypoint script (``docker-entrypoint.sh`` of node, redis, postgres and nginx) is replaced
by what it does with its arguments: it runs them, prefixing its server when the first one is an
option. Its other set-up (initdb, dropping privileges) is not done.

For nginx the image's files are provided too, rewritten for a host process: ``nginx -c
/etc/nginx/nginx.conf -g "daemon off;"`` (stopped with SIGQUIT, the image's STOPSIGNAL, so
requests in flight finish) with the image's own ``nginx.conf`` (logs in ``/var/log/nginx``,
``include /etc/nginx/conf.d/*.conf``) and its ``default.conf`` (port 80,
``/usr/share/nginx/html``). These paths are translated like mount paths, so a ConfigMap mounted
at ``/etc/nginx/conf.d`` or an emptyDir at ``/var/log/nginx`` is used exactly as in the
cluster. The pid file and temp directories go to the run dir.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

NGINX_COMMAND = ["nginx", "-c", "/etc/nginx/nginx.conf", "-g", "daemon off;"]

_NGINX_CONF = """\
# The nginx image's /etc/nginx/nginx.conf, as run by sidekick up (pid and temp files moved
# to the run dir; workers run as {user} because the host has no "nginx" user).
user {user};
worker_processes 1;
error_log /var/log/nginx/error.log notice;
pid {state}/nginx.pid;
events {{
    worker_connections 1024;
}}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" '
                    '"$http_user_agent" "$http_x_forwarded_for"';
    access_log /var/log/nginx/access.log main;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {state}/client_body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    include /etc/nginx/conf.d/*.conf;
}}
"""

_NGINX_DEFAULT = """\
server {
    listen 80;
    listen [::]:80;
    server_name localhost;
    location / {
        root /usr/share/nginx/html;
        index index.html index.htm;
    }
    error_page 500 502 503 504 /50x.html;
    location = /50x.html {
        root /usr/share/nginx/html;
    }
}
"""

_NGINX_INDEX = "<!DOCTYPE html>\n<html><body><h1>Welcome to nginx!</h1></body></html>\n"


def image_name(image: str) -> str:
    """``docker.io/library/nginx:1.27-alpine`` -> ``nginx``."""
    ref = image.split("@")[0].rsplit("/", 1)[-1]
    return ref.split(":")[0]


def stop_signal(image: str, command: list[str]) -> signal.Signals:
    """The image's STOPSIGNAL: nginx's image stops with SIGQUIT (graceful), others SIGTERM."""
    if image_name(image) == "nginx" and command and os.path.basename(command[0]) == "nginx":
        return signal.SIGQUIT
    return signal.SIGTERM


def implicit_args(image: str, argv: list[str]) -> list[str]:
    """Make a program's built-in default paths explicit, so they are translated too.

    nginx reads ``/etc/nginx/nginx.conf`` unless told otherwise; in the image that is the
    image's file (or a mounted ConfigMap), so ``nginx -g "daemon off;"`` gets ``-c`` added.
    """
    if (
        image_name(image) == "nginx"
        and argv
        and os.path.basename(argv[0]) == "nginx"
        and "-c" not in argv
        and not any(a in ("-h", "-v", "-V", "-?") for a in argv[1:])
    ):
        return [argv[0], "-c", "/etc/nginx/nginx.conf", *argv[1:]]
    return argv


# --- ENTRYPOINT and CMD ------------------------------------------------------------------------


def _option(first: str) -> bool:
    return first.startswith("-")


def _node_wants_node(first: str) -> bool:
    """node's docker-entrypoint.sh: an option, or something that is not a program, goes to node."""
    if first.startswith("-") or shutil.which(first, path=host_path()) is None:
        return True
    return os.path.isfile(first) and not os.access(first, os.X_OK)


def _redis_wants_server(first: str) -> bool:
    return first.startswith("-") or first.endswith(".conf")


@dataclass(frozen=True)
class EntrypointScript:
    """An image's entrypoint script that ends in ``exec "$@"``, as it treats its arguments."""

    name: str  # its file name, e.g. docker-entrypoint.sh
    server: str  # what it puts in front of arguments it does not run themselves
    prefix_when: Callable[[str], bool]

    def host_argv(self, rest: list[str]) -> list[str]:
        if not rest:
            return [self.server]
        return [self.server, *rest] if self.prefix_when(rest[0]) else rest


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: list[str]
    cmd: list[str]
    source: str  # where it was read, for messages
    script: EntrypointScript | None = field(default=None, compare=False)


def _official(
    entrypoint: list[str], cmd: list[str], script: EntrypointScript | None = None
) -> ImageConfig:
    return ImageConfig(entrypoint, cmd, "the official image's", script)


# What each official image's Dockerfile sets (Docker Hub "library" images, Debian-based tags).
OFFICIAL_IMAGES: dict[str, ImageConfig] = {
    "busybox": _official([], ["sh"]),
    "alpine": _official([], ["/bin/sh"]),
    "debian": _official([], ["bash"]),
    "ubuntu": _official([], ["/bin/bash"]),
    "python": _official([], ["python3"]),
    "golang": _official([], ["bash"]),  # no CMD of its own: its Debian base's
    "httpd": _official([], ["httpd-foreground"]),
    "nginx": _official(
        ["/docker-entrypoint.sh"],
        ["nginx", "-g", "daemon off;"],
        EntrypointScript("docker-entrypoint.sh", "nginx", lambda first: False),
    ),
    "node": _official(
        ["docker-entrypoint.sh"],
        ["node"],
        EntrypointScript("docker-entrypoint.sh", "node", _node_wants_node),
    ),
    "redis": _official(
        ["docker-entrypoint.sh"],
        ["redis-server"],
        EntrypointScript("docker-entrypoint.sh", "redis-server", _redis_wants_server),
    ),
    "postgres": _official(
        ["docker-entrypoint.sh"],
        ["postgres"],
        EntrypointScript("docker-entrypoint.sh", "postgres", _option),
    ),
}
# The alpine tags of an image without a CMD of its own inherit alpine's.
_ALPINE_CMD = {"golang": ["/bin/sh"]}
# Mirrors that publish the same busybox image.
_BUSYBOX_MIRRORS = (
    "registry.k8s.io/busybox",
    "k8s.gcr.io/busybox",
    "gcr.io/google-containers/busybox",
)


def official_name(image: str) -> str:
    """``python`` for ``python:3.12``, ``docker.io/library/python@sha256:..``; else ``""``."""
    ref = image.split("@")[0]
    head, _, last = ref.rpartition("/")
    repo = f"{head}/{last.split(':')[0]}" if head else last.split(":")[0]
    if repo in _BUSYBOX_MIRRORS:
        return "busybox"
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "library/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix) :]
            break
    return repo if repo in OFFICIAL_IMAGES else ""


def _tag(image: str) -> str:
    last = image.split("@")[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


_inspected: dict[str, ImageConfig | None] = {}


def podman_config(image: str) -> ImageConfig | None:
    """ENTRYPOINT and CMD of ``image`` from podman's local storage, or None (nothing is pulled)."""
    if image in _inspected:
        return _inspected[image]
    config = None
    if shutil.which("podman") is not None:
        try:
            result = subprocess.run(
                ["podman", "image", "inspect", "--format", "{{json .Config}}", image],
                capture_output=True,
                text=True,
                timeout=20,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            result = None
        if result is not None and result.returncode == 0:
            try:
                data = json.loads(result.stdout.strip().splitlines()[0])
            except (ValueError, IndexError):
                data = None
            if isinstance(data, dict):
                official = OFFICIAL_IMAGES.get(official_name(image))
                entrypoint = [str(a) for a in data.get("Entrypoint") or []]
                script = official.script if official is not None else None
                if script is not None and (
                    not entrypoint or os.path.basename(entrypoint[0]) != script.name
                ):
                    script = None
                config = ImageConfig(
                    entrypoint,
                    [str(a) for a in data.get("Cmd") or []],
                    "podman image inspect's",
                    script,
                )
    _inspected[image] = config
    return config


def image_config(image: str) -> ImageConfig | None:
    """What ``image`` sets as ENTRYPOINT and CMD, if podman or the table knows it."""
    if not image:
        return None
    config = podman_config(image)
    if config is not None:
        return config
    name = official_name(image)
    if not name:
        return None
    official = OFFICIAL_IMAGES[name]
    if name in _ALPINE_CMD and "alpine" in _tag(image):
        return ImageConfig([], _ALPINE_CMD[name], official.source)
    return official


def host_path() -> str:
    """The PATH containers get (see ``_container_env.base_env``)."""
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return path if bindir in path.split(":") else f"{bindir}:{path}"


@dataclass
class Resolved:
    argv: list[str]
    from_image: str = ""  # "ENTRYPOINT", "CMD" or "ENTRYPOINT and CMD" when argv[0] is the image's


def combine(config: ImageConfig, args: list[str]) -> Resolved:
    """Kubernetes' rule for a container without ``command``: ENTRYPOINT + (args or CMD)."""
    rest = args if args else config.cmd
    if config.entrypoint:
        if config.script is not None:
            argv = config.script.host_argv(list(rest))
            from_image = "" if argv and args and argv[0] == args[0] else "ENTRYPOINT"
            return Resolved(argv, from_image)
        return Resolved([*config.entrypoint, *rest], "ENTRYPOINT")
    return Resolved(list(rest), "" if args else "CMD")


def missing_program(argv: list[str]) -> bool:
    """True when ``argv[0]`` names a program this machine does not have."""
    if not argv:
        return True
    program = argv[0]
    if "/" in program:
        return os.path.isabs(program) and not os.path.exists(program)
    return shutil.which(program, path=host_path()) is None


def image_files(image: str, command: list[str], state_dir: str) -> dict[str, str]:
    """Files of ``image`` the container's command may read, by their path in the image."""
    if image_name(image) != "nginx" or not command or os.path.basename(command[0]) != "nginx":
        return {}
    user = "root" if os.geteuid() == 0 else ""
    conf = _NGINX_CONF.format(user=user or "nobody", state=state_dir)
    if not user:
        conf = conf.replace("user nobody;\n", "")
    mime = "/etc/nginx/mime.types"
    files = {
        "/etc/nginx/nginx.conf": conf,
        "/etc/nginx/conf.d/default.conf": _NGINX_DEFAULT,
        "/usr/share/nginx/html/index.html": _NGINX_INDEX,
        "/usr/share/nginx/html/50x.html": "<html><body><h1>An error occurred.</h1></body></html>\n",
    }
    if os.path.exists(mime):
        with open(mime) as f:
            files[mime] = f.read()
    return files


def default_argv(
    image: str, container: str, args: list[str], where: str, annotation: str
) -> tuple[list[str], str]:
    """What a container without ``command`` runs: (argv, "") or ([], the problem to report).

    ``annotation`` is the annotation that would give the container its command.
    """
    config = image_config(image)
    if config is None:
        if args:
            return [], (
                f"{where}: container {container!r} has args but no command, and sidekick up does "
                f"not know the ENTRYPOINT of image {image!r}; if it has none (then args are the "
                f"command, as with busybox), run with --set-image {shlex.quote(image + '=[]')}, "
                f"otherwise give it: --set-image {shlex.quote(image + '=PROGRAM')} "
                "(args are appended) or command: [...] in the container"
            )
        key = image or container
        return [], (
            f"{where}: container {container!r} has no command and sidekick up does not know what "
            f"image {image!r} runs; add command: [...] to the container, or the annotation "
            f"{annotation}: '[program, arg]', or run with "
            f"--set-image {shlex.quote(key + '=PROGRAM ARGS')}"
        )
    resolved = combine(config, args)
    if resolved.from_image and missing_program(resolved.argv):
        return [], (
            f"{where}: container {container!r} has no command, and image {image!r} runs "
            f"{shlex.join(resolved.argv)} (from {config.source} {resolved.from_image}), but "
            f"{resolved.argv[0] if resolved.argv else '(nothing)'!r} is not on this machine; "
            f"install it, add command: [...] to the container, or run with "
            f"--set-image {shlex.quote(image + '=PROGRAM')}"
        )
    return resolved.argv, ""
