"""Run the real ``git`` CLI from asyncio, safely.

Every call is an argv list (never a shell), runs with a per-call timeout, and is started in
its own process group so a timeout or a cancelled sync kills git *and* the helpers it
spawned (``ssh``, ``git-remote-http``, ``git-upload-pack``) instead of leaving them holding
locks. Output is captured and every message that leaves this module is passed through
``Redactor`` so a password in a URL or read from a password file never reaches a log line,
an error or a metric.

It leaves out any knowledge of what the commands mean: ``publish`` and ``syncer`` decide
which commands to run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sidekick.core.errors import TemporaryError

log = logging.getLogger("sidekick.sync.git")

# user:password@ in any URL-looking text; the user name is kept because it helps debugging.
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*:)[^@/\s]*@")


class GitError(TemporaryError):
    """A git command failed or timed out; the message is already redacted."""

    def __init__(self, message: str, *, stderr: str = "", returncode: int | None = None) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode


@dataclass
class Redactor:
    """Removes secrets from text: passwords inside URLs and any registered secret value."""

    secrets: set[str] = field(default_factory=set)

    def add(self, secret: str) -> None:
        # Very short values would redact ordinary words; such a password is guessable anyway.
        if len(secret) >= 3:
            self.secrets.add(secret)

    def __call__(self, text: str) -> str:
        out = _URL_PASSWORD.sub(r"\g<pre>REDACTED@", text)
        for secret in self.secrets:
            out = out.replace(secret, "REDACTED")
        return out


@dataclass(frozen=True)
class GitResult:
    stdout: str
    stderr: str
    seconds: float


# Settings git reads only from "protected" (system or global) configuration, never from the
# command line in git before 2.46: git-sync's --git-config-add=safe.directory:* works because
# git-sync keeps its settings in a private global file, so these go into one too.
PROTECTED_KEYS = frozenset({"safe.directory"})


def private_global_config(pairs: Iterable[tuple[str, str]], env: Mapping[str, str]) -> str:
    """Write ``pairs`` to a new private global git config that includes the user's own."""
    fd, path = tempfile.mkstemp(prefix="sidekick-sync.", suffix=".gitconfig")
    atexit.register(_remove_quietly, path)
    own = env.get("GIT_CONFIG_GLOBAL") or os.path.join(env.get("HOME", "/"), ".gitconfig")
    lines = [f"[include]\n\tpath = {_quoted(own)}\n"]
    for key, value in pairs:
        section, _, name = key.rpartition(".")
        lines.append(f"[{section}]\n\t{name} = {_quoted(value)}\n")
    with os.fdopen(fd, "w") as f:
        f.writelines(lines)
    return path


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class Git:
    """Runs ``git`` commands in a repository directory with a fixed environment."""

    def __init__(
        self,
        binary: str = "git",
        *,
        env: Mapping[str, str] | None = None,
        redact: Redactor | None = None,
        config: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.binary = binary
        self.redact = redact or Redactor()
        # The environment is built once by the caller; git must never prompt on a terminal.
        base = dict(env if env is not None else os.environ)
        base.setdefault("GIT_TERMINAL_PROMPT", "0")
        base["LC_ALL"] = "C"
        self.env = base
        # Settings go to git through GIT_CONFIG_COUNT/KEY_n/VALUE_n rather than "-c" so the
        # argv is git-sync's ("git fetch <url> ..."): a --git wrapper that looks at "$1" or
        # greps the URL out of its arguments works unchanged. Children (submodule updates)
        # inherit them just as they would "-c".
        self.config = [kv for kv in config if kv[0].lower() not in PROTECTED_KEYS]
        protected = [kv for kv in config if kv[0].lower() in PROTECTED_KEYS]
        if protected:
            self.env["GIT_CONFIG_GLOBAL"] = private_global_config(protected, self.env)
        self.calls = 0

    def hook_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with the git set-up this runner gives git: its SSH command, its private
        global config and its settings (``--git-config`` and the rest).

        For hooks: git-sync's exechook inherits git-sync's own environment, to which it
        added ``GIT_CONFIG_GLOBAL`` (its private config holding those settings) and
        ``GIT_SSH_COMMAND``, so a ``git`` the hook runs is configured as git-sync's.
        ``LC_ALL=C``, which this runner sets for parsing git's messages, is left out.
        """
        out = dict(env)
        for key in ("GIT_SSH_COMMAND", "GIT_CONFIG_GLOBAL", "GIT_TERMINAL_PROMPT"):
            if key in self.env:
                out[key] = self.env[key]
        out.update(self._config_env((), out))
        return out

    def _ownership_hint(self, cwd: str | os.PathLike[str], err: str) -> str:
        """Why git may not see a repository that is there: its directory has another owner.

        git then says only "not in a git directory" for some commands; an emptyDir belongs to
        root while the sidecar runs as another user, so say what to do.
        """
        if "dubious ownership" not in err and "not in a git directory" not in err:
            return ""
        try:
            owner = os.stat(cwd).st_uid
        except OSError:
            return ""
        if owner == os.geteuid() or "GIT_CONFIG_GLOBAL" in self.env:
            return ""
        return (
            f" ({os.fspath(cwd)!r} belongs to uid {owner}, not to this process's uid "
            f"{os.geteuid()}, and git refuses such repositories (dubious ownership); add "
            "--git-config-add=safe.directory:* as with git-sync, or give the volume to this user)"
        )

    def _config_env(
        self, extra: Iterable[tuple[str, str]], env: Mapping[str, str]
    ) -> dict[str, str]:
        pairs = [*self.config, *extra]
        if not pairs:
            return {}
        try:
            start = int(env.get("GIT_CONFIG_COUNT", "0") or "0")
        except ValueError:
            start = 0
        out = {"GIT_CONFIG_COUNT": str(start + len(pairs))}
        for n, (key, value) in enumerate(pairs, start):
            out[f"GIT_CONFIG_KEY_{n}"] = key
            out[f"GIT_CONFIG_VALUE_{n}"] = value
        return out

    async def run(
        self,
        *args: str,
        cwd: str | os.PathLike[str],
        timeout: float,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        config: Iterable[tuple[str, str]] = (),
    ) -> GitResult:
        """Run ``git <args>`` in ``cwd``; raise ``GitError`` on failure or timeout.

        ``config`` adds settings for this call only, on top of the runner's own.
        """
        argv = [self.binary, *args]
        # Only the subcommand: its arguments may hold a URL with a password in it.
        what = "git " + args[0] if args else "git"
        full_env = self.env if env is None else {**self.env, **env}
        full_env = {**full_env, **self._config_env(config, full_env)}
        started = time.monotonic()
        self.calls += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=os.fspath(cwd),
                env=full_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise GitError(
                f"git binary {self.binary!r} was not found; install git or point --git at it"
            ) from None
        except NotADirectoryError:
            raise GitError(f"{what}: working directory {os.fspath(cwd)!r} is missing") from None
        try:
            out_b, err_b = await run_with_deadline(proc, timeout)
        except TimeoutError:
            raise GitError(
                f"{what} did not finish within {timeout:g}s and was killed; "
                "check the network or raise --sync-timeout"
            ) from None
        seconds = time.monotonic() - started
        out = out_b.decode("utf-8", "replace")
        err = self.redact(err_b.decode("utf-8", "replace"))
        log.debug("%s exited %s in %.3fs", what, proc.returncode, seconds)
        if check and proc.returncode != 0:
            detail = last_lines(err) or f"exit status {proc.returncode}"
            detail += self._ownership_hint(cwd, err)
            raise GitError(f"{what} failed: {detail}", stderr=err, returncode=proc.returncode)
        return GitResult(out, err, seconds)


async def run_with_deadline(
    proc: asyncio.subprocess.Process, timeout: float, stdin: bytes | None = None
) -> tuple[bytes, bytes]:
    """``communicate`` with a deadline; on timeout or cancellation kill the process group."""
    try:
        async with asyncio.timeout(timeout):
            return await proc.communicate(stdin)
    except BaseException:
        kill_group(proc)
        with contextlib.suppress(Exception):
            # Reap it so no zombie is left behind; the kill makes this quick.
            await asyncio.shield(asyncio.wait_for(proc.wait(), 5))
        raise


def kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def remaining(deadline: float) -> float:
    """Seconds left until the monotonic ``deadline`` (at least a sliver, so git gets a try)."""
    return max(0.01, deadline - time.monotonic())


def last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-n:]).rstrip(".")
