"""Programs that behave as the image's own, where this machine's differ in a way that matters.

A container's command, hooks and probes find programs through ``PATH``, and here that finds
the host's. Two differences break manifests that work in a cluster, so a small directory of
wrappers, ``RUN_DIR/<pod>/state/<container>/bin``, is put first in the container's ``PATH``:

* ``watch`` in images whose userland is BusyBox (``busybox``, ``alpine`` and ``*-alpine`` tags,
  and a few images built on alpine that examples use: ``axeclbr/git``, ``alpine/git``).
  BusyBox's ``watch`` needs no terminal: it prints a header and the command's output every
  ``-n`` seconds. The host's procps ``watch`` is a curses program that exits at once with
  "Error opening terminal" when, as in every container without ``tty: true``, there is no
  terminal and no ``TERM``. The kubelet sets no ``TERM`` either, so with a procps image the
  container fails in a cluster too; the wrapper is only given to BusyBox images.
* ``nginx`` in the nginx image: its built-in configuration file is the image's
  ``/etc/nginx/nginx.conf``, which here is a file in the run dir (``sidekick.pod.images``). The
  wrapper adds ``-c`` with that file unless ``-c`` is given, so ``nginx -s quit`` in a preStop
  hook or ``nginx -s reload`` in a probe signals the container's nginx, as in the image,
  instead of reading the host's configuration.

Left out: every other program of an image (the host's are used as they are).
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from sidekick.pod.images import image_name

_BUSYBOX_NAMES = ("busybox", "alpine")
_ALPINE_BASED = ("axeclbr/git", "alpine/git")

# BusyBox watch: [-n SECONDS] [-t] PROG ARGS; each round clears the screen, prints a header
# "Every Ns: COMMAND   DATE" (unless -t), runs the command through sh and sleeps.
_WATCH = r"""#!/bin/sh
# BusyBox's watch, as in the container's image (it needs no terminal); see sidekick.pod.imagetools.
interval=2
header=1
while getopts n:dt opt; do
  case $opt in
    n) interval=$OPTARG ;;
    t) header= ;;
    d) ;;
    *) echo "Usage: watch [-n SEC] [-t] PROG ARGS" >&2; exit 1 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -eq 0 ]; then
  echo "Usage: watch [-n SEC] [-t] PROG ARGS" >&2
  exit 1
fi
cmd="$*"
while :; do
  printf '\033[H\033[J'
  if [ -n "$header" ]; then
    printf 'Every %ss: %s   %s\n\n' "$interval" "$cmd" "$(date)"
  fi
  sh -c "$cmd"
  sleep "$interval"
done
"""

_NGINX = """#!/bin/sh
# nginx as in the nginx image: its default configuration file is the image's; see
# sidekick.pod.imagetools.
for arg in "$@"; do
  case $arg in
    -c|-h|-v|-V|-\\?) exec {nginx} "$@" ;;
  esac
done
exec {nginx} -c {conf} "$@"
"""


def busybox_userland(image: str) -> bool:
    """Whether ``image``'s programs are BusyBox's (by its name; there are no images here)."""
    ref = image.split("@")[0]
    last = ref.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    path = ref.rsplit(":", 1)[0] if ":" in last else ref
    for prefix in ("docker.io/", "index.docker.io/"):
        path = path.removeprefix(prefix)
    path = path.removeprefix("library/")
    if path in _ALPINE_BASED or path in _BUSYBOX_NAMES:
        return True
    if image_name(image) in _BUSYBOX_NAMES and path.endswith(("/busybox", "/alpine")):
        return True  # registry.k8s.io/busybox and other mirrors
    return "alpine" in tag.split("-") or tag.startswith("alpine")


def tool_dir(image: str, state: Path, nginx_conf: str) -> str:
    """Write the wrappers ``image`` needs under ``state``; return their directory or ""."""
    tools: dict[str, str] = {}
    if busybox_userland(image):
        tools["watch"] = _WATCH
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if image_name(image) == "nginx" and nginx and os.path.isfile(nginx_conf):
        tools["nginx"] = _NGINX.format(nginx=shlex.quote(nginx), conf=shlex.quote(nginx_conf))
    if not tools:
        return ""
    bindir = state / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name, text in tools.items():
        path = bindir / name
        path.write_text(text)
        path.chmod(0o755)
    return str(bindir)
