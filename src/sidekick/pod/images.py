"""What a few well-known images would run when a container gives no ``command``.

There are no images locally, so a container without ``command`` has nothing to run. For the
images the seed systems use without a command, this module knows the image's entrypoint and
the files of the image that entrypoint needs, rewritten for a host process:

* ``nginx`` runs ``nginx -c /etc/nginx/nginx.conf -g "daemon off;"`` (stopped with SIGQUIT,
  the image's STOPSIGNAL, so requests in flight finish) with the image's own
  ``nginx.conf`` (logs in ``/var/log/nginx``, ``include /etc/nginx/conf.d/*.conf``) and its
  ``default.conf`` (port 80, ``/usr/share/nginx/html``). These paths are translated like mount
  paths, so a ConfigMap mounted at ``/etc/nginx/conf.d`` or an emptyDir at ``/var/log/nginx``
  is used exactly as in the cluster. The pid file and temp directories go to the run dir.

Anything else needs ``command``, the ``sidekick.dev/command.<container>`` annotation or
``--set-image``. The list is short on purpose: every entry is a promise about an image.
"""

from __future__ import annotations

import os
import signal

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


def default_command(image: str) -> list[str]:
    return list(NGINX_COMMAND) if image_name(image) == "nginx" else []


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
