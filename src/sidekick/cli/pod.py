"""``sidekick up`` (run Pod manifests as local processes) and ``sidekick logs`` (read their output)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import click

from sidekick.core.errors import ConfigError, UserError
from sidekick.core.logs import setup_logging

DEFAULT_RUN_DIR = ".sidekick/run"

run_dir_option = click.option(
    "--run-dir",
    default=DEFAULT_RUN_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where volumes, log files and status of the pods live.",
)


@click.command(context_settings={"auto_envvar_prefix": "SIDEKICK_UP"})
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@run_dir_option
@click.option(
    "--set-image",
    "set_image",
    multiple=True,
    metavar="IMAGE=COMMAND",
    help="The ENTRYPOINT of IMAGE for containers that have no command and no "
    "sidekick.dev/command.<container> annotation (their args are appended), split like a "
    "shell, e.g. --set-image busybox='sleep 1d'; 'IMAGE=[]' says IMAGE has none, so args "
    "alone are the command (repeatable).",
)
@click.option(
    "--isolation",
    type=click.Choice(["on", "off"]),
    default="on",
    show_default=True,
    help="Run each container in its own PID and mount namespaces with a private root, "
    "its securityContext user and readOnlyRootFilesystem, where this machine allows it "
    "(root or user namespaces); 'off' runs plain host processes (for debugging).",
)
@click.option(
    "--fast-backoff",
    is_flag=True,
    help="Restart back-off of 0.1s doubling to 2s instead of 10s doubling to 5m.",
)
@click.option(
    "--admin-addr",
    default="127.0.0.1:0",
    metavar="HOST:PORT|off",
    show_default=True,
    help="HOST:PORT for /status, /healthz, /readyz and /metrics (port 0 picks a free port, "
    "written to RUN_DIR/admin-port); 'off' serves nothing.",
)
@click.option(
    "--shutdown-timeout",
    default=None,
    metavar="DURATION",
    help="How long stopping may take before every process is killed "
    "(default: the longest terminationGracePeriodSeconds, plus 2s per native sidecar, "
    "plus 10s).",
)
@click.option(
    "--color/--no-color",
    "colour",
    default=None,
    help="Colour the output prefixes (default: when a terminal).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Format of sidekick's own messages on stderr (container output is never changed).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Least severe of sidekick's own messages to print.",
)
@click.option(
    "-d",
    "--detach",
    is_flag=True,
    help="Run in the background (output in RUN_DIR/up.log); stop with sidekick down.",
)
def up(
    files: tuple[str, ...],
    run_dir: str,
    set_image: tuple[str, ...],
    isolation: str,
    fast_backoff: bool,
    admin_addr: str,
    shutdown_timeout: str | None,
    colour: bool | None,
    log_format: str,
    log_level: str,
    detach: bool,
) -> None:
    """Run the Pods, Deployments and Jobs in FILE... on this machine, in the foreground.

    FILE is a YAML manifest (one or more documents; - reads stdin). Containers run as host
    processes with the kubelet's lifecycle rules: init containers, native sidecars, probes,
    restarts with back-off, preStop and grace periods. Volumes are directories under
    --run-dir and mount paths are translated to them. Relative paths in commands resolve
    against the directory sidekick up is started from (the containers' working directory
    unless they set workingDir).

    Ctrl-C or SIGTERM stops the pods gracefully; a second Ctrl-C kills them at once. Read
    a container's output again with sidekick logs POD.

    \b
    Exit codes: 0 after a stop or when every pod completed successfully,
                1 when a pod or a Job failed, 2 for a manifest or usage error.
    """
    from sidekick.cli.common import admin_addr as parse_admin
    from sidekick.core.durations import parse_duration
    from sidekick.core.runtime import Shutdown, run
    from sidekick.pod.app import UpConfig
    from sidekick.pod.app import up as run_up
    from sidekick.pod.isolation import Isolation
    from sidekick.pod.manifest import read_manifests

    setup_logging(log_format, log_level)  # type: ignore[arg-type]
    # Until the event loop takes the signals over, SIGTERM ends the command like an error
    # would (exit code 143), so that the isolation probe below is ended and its directory
    # removed; the default action would leave both behind.
    signal.signal(signal.SIGTERM, _terminated)
    # Runs while the manifests are read; ended with the command if it is not collected. The
    # probe and the callback that ends it are made as one step: a SIGTERM waits until both
    # are in place (the probe, killed rather than stopped, does not mind the blocked signal).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        probe = Isolation.start_probe(isolation == "on" and not detach)
        click.get_current_context().call_on_close(probe.cancel)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    images = _set_images(set_image)
    manifests = read_manifests(list(files), set_image=images)
    addr = None if admin_addr == "off" else parse_admin(admin_addr)
    if shutdown_timeout is None:
        # The grace period, plus the 2 s each sidecar may still get after it, plus slack.
        timeout = (
            max(
                p.grace_period + 2.0 * sum(c.kind == "sidecar" for c in p.init_containers)
                for p in manifests.pods
            )
            + 10.0
        )
    else:
        timeout = parse_duration(shutdown_timeout, name="--shutdown-timeout")
    if detach:
        from sidekick.pod import detach as background

        if "-" in files:
            raise UserError("--detach cannot read the manifest from stdin; give a file")
        argv = [a for a in sys.argv[1:] if a not in ("-d", "--detach")]
        sys.exit(background.start(Path(run_dir), [p.name for p in manifests.pods], argv))
    cfg = UpConfig(manifests, Path(run_dir), addr, fast_backoff, colour, isolation == "on", probe)
    held: list[Shutdown] = []

    def main(shutdown: Shutdown) -> Awaitable[int]:
        held.append(shutdown)
        return run_up(cfg, shutdown)

    def on_hup() -> None:
        # A closed terminal must not leave the containers (in their own sessions) running.
        if held and not held[0].is_requested:
            logging.getLogger("sidekick").info("Received SIGHUP, shutting down.")
            held[0].request("SIGHUP")

    code = run(main, shutdown_timeout=timeout, on_hup=on_hup)
    sys.exit(code)


def _set_images(items: tuple[str, ...]) -> dict[str, str]:
    """Parse ``--set-image IMAGE=COMMAND`` flags, refusing any the manifest reader could not use."""
    import shlex

    out: dict[str, str] = {}
    for item in items:
        image, sep, command = item.partition("=")
        if not sep or not image.strip():
            raise UserError(
                f"--set-image {item!r} is not IMAGE=COMMAND; write it like "
                "--set-image busybox='sleep 1d'"
            )
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise UserError(
                f"--set-image {item!r}: the command cannot be split into words ({exc}); "
                "fix the quoting"
            ) from None
        if not words:
            raise UserError(
                f"--set-image {item!r} gives no command; write it like "
                f"--set-image {image}='sleep 1d'"
            )
        out[image] = command
    return out


def _status(run_dir: Path, pod: str) -> dict[str, Any]:
    path = run_dir / pod / "status.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        known = sorted(p.name for p in run_dir.glob("*/status.json") for p in [p.parent])
        raise UserError(
            f"pod {pod!r} not found in run dir {str(run_dir)!r}"
            + (f"; pods there: {', '.join(known)}" if known else "; start it with sidekick up")
            + " (or pass the --run-dir that sidekick up used)"
        ) from None
    except (OSError, ValueError):
        return {}
    return data


@click.command(context_settings={"auto_envvar_prefix": "SIDEKICK_UP"})
@click.argument("pod")
@click.option(
    "-c",
    "--container",
    default=None,
    metavar="CONTAINER",
    help="Container name, main, init or sidecar (default: the first main container).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the pod ends.")
@click.option(
    "--tail", type=int, default=-1, metavar="N", help="Only the last N lines (default -1: all)."
)
@run_dir_option
def logs(pod: str, container: str | None, follow: bool, tail: int, run_dir: str) -> None:
    """Print a container's output from a pod started by sidekick up, like kubectl logs.

    POD is the pod's name (a Deployment's name for a Deployment). The output is read from
    RUN_DIR/POD/logs/, so give the --run-dir that sidekick up used; it works while up runs
    and after it has ended.
    """
    rdir = Path(run_dir)
    status = _status(rdir, pod)
    names = [c["name"] for c in status.get("initContainerStatuses", [])] + [
        c["name"] for c in status.get("containerStatuses", [])
    ]
    if container is None:
        mains = [c["name"] for c in status.get("containerStatuses", [])]
        if not mains:
            raise ConfigError(f"pod {pod!r} has no containers recorded; give -c CONTAINER")
        container = mains[0]
        if len(names) > 1:
            click.echo(f'Defaulted container "{container}" out of: {", ".join(names)}', err=True)
    elif names and container not in names:
        raise ConfigError(
            f"container {container!r} is not in pod {pod!r}; choose one of {', '.join(names)}"
        )
    path = rdir / pod / "logs" / f"{container}.log"
    out = sys.stdout.buffer
    if not path.exists():
        raise UserError(f"container {container!r} of pod {pod!r} has no output yet")
    with open(path, "rb") as f:
        data = f.read()
        if tail >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail else b""
        out.write(data)
        out.flush()
        while follow:
            chunk = f.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if _status(rdir, pod).get("ended"):
                break
            time.sleep(0.2)


@click.command(context_settings={"auto_envvar_prefix": "SIDEKICK_UP"})
@run_dir_option
@click.option(
    "--timeout",
    default="60s",
    show_default=True,
    metavar="DURATION",
    help="How long the graceful stop may take before every process of the run is killed.",
)
def down(run_dir: str, timeout: str) -> None:
    """Stop the pods started by sidekick up --detach in RUN_DIR, gracefully, like Ctrl-C.

    Waits until the run has ended, killing it and every process of the run after --timeout;
    exits 2 when no detached run is found in RUN_DIR.
    """
    from sidekick.core.durations import parse_duration
    from sidekick.pod.detach import stop

    click.echo(stop(Path(run_dir), parse_duration(timeout, name="--timeout")))


commands: list[click.Command] = [up, logs, down]


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
