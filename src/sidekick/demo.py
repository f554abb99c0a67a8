"""The README's main job, and the static-site example's offline demo repository.

``python -m sidekick.demo`` (``make demo``) runs the ``webapp`` example (seed 001: a Flask app,
an nginx reverse proxy and a log sidecar) with ``sidekick up`` and its embedded defaults, and
prints the URL to curl once nginx answers; each request then shows up in the log sidecar's
output. Ctrl-C stops the Pod. If the example's nginx port (8080) is taken, the example is copied
to a temporary directory with a free port instead, so the demo does not depend on a quiet machine.

``python -m sidekick.demo init-repo DIR`` creates the small git repository the static-site
example publishes when no ``GIT_REPO`` is given, so that example works offline. It lives here,
in the package, because the manifest's init container runs it from the sidekick image (scripts
belong in the image, not in the podSpec).

What it leaves out: it is not a general launcher; it runs one example, from a source checkout
(the examples are not in the wheel).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

EXAMPLE_PORT = 8080
READY_TIMEOUT_S = 60.0

DEMO_INDEX = """\
<!doctype html>
<html>
<head><title>sidekick static-site demo</title><link rel="stylesheet" href="style.css"></head>
<body>
<h1>Published by sidekick sync</h1>
<p>This page comes from a demo git repository created inside the Pod. Commit a change to it and
the site serves the new revision without a restart.</p>
</body>
</html>
"""
DEMO_STYLE = "body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }\n"


def _git(repo: Path, *args: str) -> None:
    # Identity given on the command line: the container's HOME is read-only and has no config.
    # The repository is in a volume that belongs to root while the container runs as another
    # user: git refuses such a repository unless safe.directory says otherwise, and reads that
    # setting only from a global config file (a private one, in the container's /tmp).
    env = {**os.environ, "GIT_CONFIG_GLOBAL": _private_gitconfig()}
    subprocess.run(
        ["git", "-c", "user.name=sidekick demo", "-c", "user.email=demo@sidekick.invalid", *args],
        cwd=repo,
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )


@functools.cache
def _private_gitconfig() -> str:
    fd, path = tempfile.mkstemp(prefix="sidekick-demo.", suffix=".gitconfig")
    with os.fdopen(fd, "w") as f:
        f.write("[safe]\n\tdirectory = *\n")
    atexit.register(os.unlink, path)
    return path


def init_repo(directory: Path) -> str:
    """Create the demo repository in ``directory`` unless one is there; say which happened."""
    if (directory / ".git").exists():
        return f"demo repository {directory} exists; leaving it as it is"
    directory.mkdir(parents=True, exist_ok=True)
    _git(directory, "init", "-q", "-b", "main")
    (directory / "index.html").write_text(DEMO_INDEX)
    (directory / "style.css").write_text(DEMO_STYLE)
    _git(directory, "add", "index.html", "style.css")
    _git(directory, "commit", "-q", "-m", "Demo site")
    return f"created demo repository {directory} (branch main, one commit)"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def example_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "examples" / "webapp"
    if not (here / "webapp.yaml").is_file():
        raise SystemExit(
            f"sidekick demo: error: the webapp example is not at {here}; run the demo from a "
            "source checkout (make demo)"
        )
    return here


def prepare(workdir: Path) -> tuple[Path, int]:
    """The manifest to run and the port nginx listens on (8080, or a free one if taken)."""
    source = example_dir()
    if _port_free(EXAMPLE_PORT):
        return source / "webapp.yaml", EXAMPLE_PORT
    port = _free_port()
    copy = workdir / "webapp"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = copy / "webapp.yaml"
    manifest.write_text(manifest.read_text().replace(str(EXAMPLE_PORT), str(port)))
    print(f"sidekick demo: port {EXAMPLE_PORT} is taken; using {port}", flush=True)
    return manifest, port


def search_path(path: str) -> str:
    """``path`` with this Python's bin directory first and the sbin directories last."""
    parts = [str(Path(sys.executable).parent), *[p for p in path.split(os.pathsep) if p]]
    parts += [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in parts]
    return os.pathsep.join(parts)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="sidekick-demo-") as tmp:
        workdir = Path(tmp)
        manifest, port = prepare(workdir)
        command = [
            sys.executable,
            "-m",
            "sidekick",
            "up",
            str(manifest),
            "--run-dir",
            str(workdir / "run"),
        ]
        # The example's app container runs `python3`; make it this interpreter's (which has
        # Flask when installed with `make install`). Debian puts nginx in /usr/sbin, which a
        # normal user's PATH lacks.
        env = dict(os.environ)
        env["PATH"] = search_path(env.get("PATH", ""))
        # nginx is the one program the Pod runs besides this Python and sidekick itself.
        if shutil.which("nginx", path=env["PATH"]) is None:
            print(
                "sidekick demo: error: nginx is not installed; run the demo with `make demo`, "
                "which installs it (scripts/system-deps.sh demo, as root or with sudo), or "
                "install Debian's nginx package yourself",
                file=sys.stderr,
            )
            return 2
        print("sidekick demo: " + " ".join(command[2:]), flush=True)
        # From the repository root: the app container's command annotation names its script
        # relative to it.
        up = subprocess.Popen(command, env=env, cwd=example_dir().parents[1])
        try:
            url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not _ready(url + "readyz"):
                if up.poll() is not None:
                    print("sidekick demo: sidekick up exited before the app was ready", flush=True)
                    return up.returncode or 1
                if time.monotonic() > deadline:
                    print(
                        f"sidekick demo: {url} not ready after {READY_TIMEOUT_S:.0f}s", flush=True
                    )
                    return 1
                time.sleep(0.2)
            print(
                f"\nsidekick demo: ready. Try:  curl {url}\n"
                "Each request appears in the log-shipper's output below. Ctrl-C stops the Pod.\n",
                flush=True,
            )
            return up.wait()
        except KeyboardInterrupt:
            # The terminal sent SIGINT to the whole process group, `up` included; wait for its
            # orderly shutdown (a second Ctrl-C makes `up` kill at once).
            while True:
                try:
                    return up.wait()
                except KeyboardInterrupt:
                    up.send_signal(signal.SIGINT)
        finally:
            if up.poll() is None:
                up.terminate()
                up.wait()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["init-repo"]:
        if len(args) != 2:
            print("usage: python -m sidekick.demo init-repo DIR", file=sys.stderr)
            return 2
        print(init_repo(Path(args[1])), flush=True)
        return 0
    if args:
        print("usage: python -m sidekick.demo [init-repo DIR]", file=sys.stderr)
        return 2
    return run_demo()


if __name__ == "__main__":
    sys.exit(main())
