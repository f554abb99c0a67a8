"""The remote repository as one sync sees it: the credentials git is given, the commit
``--ref`` names there, and the fetch of exactly that commit.

Credentials are read again on every sync, so a rotated secret is used at once:
``--password-file`` through an askpass script that reads the file when git asks, and
``--askpass-url`` asked for ``username=``/``password=`` lines (counted in
``git_sync_askpass_calls{status}``), as git-sync does. ``--ref`` is resolved with git-sync's
``git ls-remote`` argv (a full commit hash needs no lookup; a tag wins over a branch of the
same name, as in git), and the fetch asks for the object ``ls-remote`` listed, so what is
published is exactly what it saw: the commit, or for an annotated tag the tag object, which
every server serves (one speaking git's protocol v0 serves only objects it advertised, and
the commit a tag peels to is not one of them).

It leaves out when to fetch and what to do with the commit (``syncer``), the on-disk layout
(``publish``) and the other credentials: ``--credential`` helpers (``credentials``) and
GitHub App tokens (``github_app``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path

import aiohttp

from sidekick.core.errors import PermanentError, TemporaryError
from sidekick.sync.config import SyncConfig
from sidekick.sync.git import Git, GitError, Redactor, remaining
from sidekick.sync.metrics import SyncMetrics
from sidekick.sync.publish import SHA, Tree

# Answers git's two prompts ("Username for 'https://host': ", "Password for
# 'https://user@host': "), and only for --repo's own scheme, host and port, as git-sync's
# credential for the repository's URL is offered to that host only: a submodule elsewhere
# that asks gets nothing. It holds no secret: it reads the password file named in its
# environment at the moment git asks, so a rotated password is used on the next sync and
# the password never appears in an argv or an environment variable.
_ASKPASS = """#!/bin/sh
url=${1#*\\'}
url=${url%\\'*}
authority=${url#*://}
authority=${authority%%/*}
[ "${url%%://*}://${authority##*@}" = "$SIDEKICK_SYNC_ASKPASS_ORIGIN" ] || exit 1
case "$1" in
  Username*) printf '%s\\n' "$SIDEKICK_SYNC_ASKPASS_USER" ;;
  *) head -n 1 "$SIDEKICK_SYNC_ASKPASS_FILE" ;;
esac
"""


class RefNotFound(PermanentError):
    """The ref names nothing in the remote repository."""


class Remote:
    """``cfg.repo`` as reached from the repository of ``tree``, with this sync's credentials."""

    def __init__(self, cfg: SyncConfig, *, git: Git, tree: Tree, metrics: SyncMetrics) -> None:
        self.cfg = cfg
        self.git = git
        self.redact: Redactor = git.redact
        self.tree = tree
        self.metrics = metrics
        self._askpass_dir: str | None = None
        # Whether this process has fetched: its first sync fetches even when the published
        # tree is current, so a changed --depth takes effect at start, as with git-sync.
        self.fetched_once = False
        self.repo_shown = self.redact(cfg.repo)
        # The commit the last ``resolve`` found -> the object the remote advertised for it
        # (an annotated tag's own id), which ``fetch`` asks for.
        self._advertised: dict[str, str] = {}
        # The credentials' environment of the last sync, kept up to date in place for the
        # hooks: git-sync stores them in git's credential cache, where a git run by a hook
        # finds them, for --repo's URL only.
        self.hook_credentials: dict[str, str] = {}

    async def env(self, deadline: float) -> dict[str, str]:
        """The environment that gives git this sync's credentials (empty without any)."""
        if self.cfg.askpass_url:
            try:
                env = await self._askpass_url_env(deadline)
            except Exception:
                self.metrics.gs_askpass.inc("error")
                raise
            self.metrics.gs_askpass.inc("success")
        else:
            env = self._auth_env()
        self.hook_credentials.clear()
        self.hook_credentials.update(env)
        return env

    async def resolve(self, deadline: float, env: dict[str, str]) -> str:
        """The commit ``--ref`` names in the remote repository."""
        ref = self.cfg.ref
        if SHA.match(ref):
            return ref
        try:
            # git-sync's argv: the URL, the ref and its peeled form, so an annotated tag
            # resolves to its commit rather than to the tag object.
            result = await self.git.run(
                "ls-remote",
                "-q",
                self.cfg.repo,
                ref,
                f"{ref}^{{}}",
                cwd=self.tree.root,
                timeout=remaining(deadline),
                env=env,
            )
        except GitError as exc:
            raise GitError(
                f"cannot list refs of {self.repo_shown}: {exc}; check the URL, the network "
                "and the credentials"
            ) from None
        refs: dict[str, str] = {}
        for line in result.stdout.splitlines():
            sha, _, name = line.partition("\t")
            refs[name.strip()] = sha.strip()
        # git's own order for a short name (git-rev-parse "SPECIFYING REVISIONS"): a tag
        # wins over a branch of the same name, as it does in git-sync's fetch.
        for name in (ref, f"refs/{ref}", f"refs/tags/{ref}", f"refs/heads/{ref}"):
            if name in refs:
                commit = refs.get(f"{name}^{{}}", refs[name])
                self._advertised = {commit: refs[name]}
                return commit
        raise RefNotFound(
            f"ref {ref!r} does not exist in {self.repo_shown} (couldn't find remote ref "
            f"{ref}); set --ref to an existing branch, tag or full 40-character commit hash"
        )

    async def fetch(self, sha: str, deadline: float, env: dict[str, str]) -> None:
        # git-sync's argv, fetching what ls-remote listed rather than the ref so that what
        # is published is exactly what it saw.
        wanted = self._advertised.get(sha, sha)
        args = ["fetch", self.cfg.repo, wanted, "--verbose", "--no-progress", "--prune"]
        args.append("--no-auto-gc")
        if self.cfg.depth > 0:
            args += ["--depth", str(self.cfg.depth)]
        elif (self.tree.gitdir / "shallow").exists():
            # --depth 0 after a shallow fetch: fetch the rest of the history.
            args.append("--unshallow")
        if self.cfg.filter:
            args += ["--filter", self.cfg.filter]
        self.metrics.fetches.inc()
        try:
            await self.git.run(*args, cwd=self.tree.root, timeout=remaining(deadline), env=env)
        except GitError as exc:
            raise GitError(f"cannot fetch {sha[:12]} from {self.repo_shown}: {exc}") from None
        self.fetched_once = True

    def _auth_env(self) -> dict[str, str]:
        path = self.cfg.password_file
        if path is None:
            return {}
        try:
            with open(path, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise TemporaryError(
                f"--password-file {path!r} cannot be read ({exc.strerror}); check the mounted secret"
            ) from None
        self.redact.add(password)
        return {
            "GIT_ASKPASS": self._askpass(),
            "SIDEKICK_SYNC_ASKPASS_ORIGIN": self._origin(),
            "SIDEKICK_SYNC_ASKPASS_USER": self.cfg.username or "",
            "SIDEKICK_SYNC_ASKPASS_FILE": os.path.abspath(path),
        }

    async def _askpass_url_env(self, deadline: float) -> dict[str, str]:
        """git-sync's --askpass-url: ask a URL for ``username=``/``password=`` lines each sync."""
        url = self.cfg.askpass_url or ""
        shown = self.redact(url)
        timeout = aiohttp.ClientTimeout(total=remaining(deadline))
        try:
            # Redirects are not followed, as git-sync's client does not follow them: a 3xx
            # is an answer other than 200.
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, timeout=timeout, allow_redirects=False) as r,
            ):
                body = await r.text()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TemporaryError(f"--askpass-url {shown} failed: {self.redact(str(exc))}") from None
        if status != 200:
            raise TemporaryError(f"--askpass-url {shown} answered {status}, expected 200")
        # As git-sync reads the answer: lines split at newlines (git drops a CR before
        # one when it reads the credential), the last ``username=`` and ``password=``
        # win, other lines are ignored and a missing one is empty. git then uses what
        # it gets, so an answer without a username serves a repository that needs none.
        fields: dict[str, str] = {}
        for line in body.split("\n"):
            key, eq, value = line.removesuffix("\r").partition("=")
            if eq:
                fields[key] = value
        username, password = fields.get("username", ""), fields.get("password", "")
        self.redact.add(password)
        script = self._askpass()
        secret = Path(script).with_name("password")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password + "\n")
        return {
            "GIT_ASKPASS": script,
            "SIDEKICK_SYNC_ASKPASS_ORIGIN": self._origin(),
            "SIDEKICK_SYNC_ASKPASS_USER": username,
            "SIDEKICK_SYNC_ASKPASS_FILE": str(secret),
        }

    def _origin(self) -> str:
        """``scheme://host[:port]`` of ``--repo``, as git names it in its prompts."""
        parts = urllib.parse.urlsplit(self.cfg.repo)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"

    def _askpass(self) -> str:
        if self._askpass_dir is None:
            self._askpass_dir = tempfile.mkdtemp(prefix="sidekick-sync-")
        script = Path(self._askpass_dir) / "askpass"
        if not script.exists():
            script.write_text(_ASKPASS)
            script.chmod(0o700)
        return str(script)

    def aclose(self) -> None:
        if self._askpass_dir is not None:
            shutil.rmtree(self._askpass_dir, ignore_errors=True)
            self._askpass_dir = None


__all__ = ["RefNotFound", "Remote"]
