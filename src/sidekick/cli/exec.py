"""``sidekick exec POD [-c CONTAINER] -- COMMAND...``: a command in a running container."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from sidekick.cli.pod import run_dir_option
from sidekick.core.errors import UserError


@click.command(
    "exec",
    context_settings={"auto_envvar_prefix": "SIDEKICK_UP", "ignore_unknown_options": False},
)
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, metavar="-- COMMAND...")
@click.option(
    "-c",
    "--container",
    default=None,
    metavar="CONTAINER",
    help="Container name (default: the kubectl.kubernetes.io/default-container annotation, "
    "else the first container).",
)
@click.option("-i", "--stdin", is_flag=True, help="Pass stdin to the command (default: none).")
@click.option(
    "-t", "--tty", is_flag=True, help="The command uses this terminal, when there is one."
)
@run_dir_option
def exec_command(
    pod: str,
    command: tuple[str, ...],
    container: str | None,
    stdin: bool,
    tty: bool,
    run_dir: str,
) -> None:
    """Run COMMAND in a running container of a pod started by sidekick up, like kubectl exec.

    The command gets the container's environment, working directory, user and namespaces,
    and its paths are translated like the container's own. Give the --run-dir that sidekick
    up uses. The exit code is the command's; 2 when the pod or container is not running.

    \b
    Example: sidekick exec webserver -c nginx -- cat /var/log/nginx/access.log
    """
    from sidekick.pod.exec import argv_for, check_command, choose, find

    rdir = Path(run_dir)
    name, note = choose(rdir, pod, container)
    if note:
        click.echo(note, err=True)
    target = find(rdir, pod, name)
    if tty and not (sys.stdin.isatty() and stdin):
        click.echo(
            "Unable to use a TTY - input is not a terminal or the right kind of file", err=True
        )
    check_command(target, command[0])
    argv = argv_for(target, list(command))
    if not stdin:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    try:
        if not target.enter:
            os.chdir(target.cwd)
            if (target.uid, target.gid) != (os.getuid(), os.getgid()):
                os.setgroups([])
                os.setgid(target.gid)
                os.setuid(target.uid)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvpe(argv[0], argv, target.env)
    except OSError as exc:
        raise UserError(
            f"cannot run {argv[0]!r} in container {name!r} of pod {pod!r}: {exc.strerror}; "
            "check the command"
        ) from None
