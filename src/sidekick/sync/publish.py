"""The published tree on disk: the local repository, its worktrees and the atomic link.

Layout under ``--root``::

    .git/                    the local repository (never read by consumers)
    .worktrees/<sha>         one complete checkout per published revision
    <link> -> .worktrees/<sha>   a relative symlink, replaced with rename(2)

Each revision is checked out into ``.worktrees/build-*`` and renamed to its final name only
when complete, so a directory named after a hash is always a whole tree (even after a crash
mid-checkout). The link is swapped by creating a temporary symlink and renaming it over the
old one, so a reader resolves either the old or the new revision, never a mix or nothing.
As with git-sync, anything in ``.worktrees`` other than the current worktree is removed once
it has been stale for ``--stale-worktree-timeout`` (at once by default); a worktree's
staleness counts from its mtime, set when it stops being current, so it survives restarts.
A ``--root`` that is not a repository is emptied first, as git-sync documents.

The link is relative so the volume can be mounted at a different path in the consumer.
It leaves out what to publish and when (``syncer``) and the git transport (``git``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from sidekick.core.errors import PermanentError
from sidekick.sync.git import Git, GitError, remaining

log = logging.getLogger("sidekick.sync")

SHA = re.compile(r"^[0-9a-f]{40}$")
WORKTREES = ".worktrees"
# Lock files a killed git leaves behind. Syncs are serialized inside this process and git
# children are killed on timeout, so any of these present when a sync starts is stale.
_LOCKS = ("index.lock", "shallow.lock", "config.lock", "HEAD.lock", "packed-refs.lock")


class RootNotOurs(PermanentError):
    """``--root`` cannot be made ours: its link is a real directory, or it cannot be emptied."""


class Tree:
    """The repository, worktrees and link under one ``--root``."""

    def __init__(self, root: Path, link: Path, git: Git, owned: set[str] | None = None) -> None:
        self.root = root
        self.link = link
        self.git = git
        # Other names under root this program writes (--touch-file, --error-file).
        self.owned = owned or set()
        self.worktrees = root / WORKTREES
        self.gitdir = root / ".git"
        self._remote_url: str | None = None

    # ---- the repository ---------------------------------------------------------------

    def is_repo(self) -> bool:
        """A cheap check done on every sync (no subprocess): the files git needs exist."""
        head = self.gitdir / "HEAD"
        try:
            text = head.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        if not (text.startswith("ref: ") or SHA.match(text.strip())):
            return False
        return (self.gitdir / "objects").is_dir() and (self.gitdir / "config").is_file()

    def _foreign_entries(self) -> list[str]:
        ours = {".git", WORKTREES, *self.owned}
        if self.link.parent == self.root:
            ours.add(self.link.name)
        out = []
        for entry in sorted(os.listdir(self.root)):
            if entry in ours or entry.startswith(f".{self.link.name}.tmp-"):
                continue
            out.append(entry)
        return out

    async def ensure_repo(
        self, url: str, deadline: float, *, look_for_partial: bool = False
    ) -> list[str]:
        """Create or repair the local repository; return the recoveries done (kinds).

        With ``look_for_partial`` (at start and after a failed sync: a listing of every
        object directory is too dear for each poll), temporary object files a git that died
        mid-write left behind are removed too.
        """
        recoveries: list[str] = []
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.is_repo():
            foreign = self._foreign_entries()
            if foreign:
                await asyncio.to_thread(self._empty_root, foreign)
            if self.gitdir.exists() or self.worktrees.exists():
                log.warning(
                    "Repository in %s is missing or corrupt; re-initialising it "
                    "(the current revision stays published meanwhile).",
                    self.root,
                )
                recoveries.append("repository")
                await asyncio.to_thread(shutil.rmtree, self.gitdir, True)
            await self.git.run(
                "init", "--quiet", str(self.root), cwd=self.root.parent, timeout=remaining(deadline)
            )
            info = self.gitdir / "info"
            info.mkdir(exist_ok=True)
            (info / "exclude").write_text(
                f"/{WORKTREES}/\n/{self.link.name}\n/.{self.link.name}.tmp-*\n"
            )
            self._remote_url = None
        if self._remote_url != url:
            await self.git.run(
                "config", "remote.origin.url", url, cwd=self.root, timeout=remaining(deadline)
            )
            self._remote_url = url
        for lock in self._stale_locks():
            log.warning("Removing stale git lock %s left by an interrupted git command.", lock)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            recoveries.append("lock")
        if look_for_partial:
            partial = await asyncio.to_thread(self._remove_partial_objects)
            if partial:
                log.warning(
                    "Removed %d temporary object file(s) (%d bytes) left by an interrupted "
                    "git command (a full disk, a kill).",
                    *partial,
                )
                recoveries.append("partial")
        return recoveries

    def _remove_partial_objects(self) -> tuple[int, int] | None:
        """Delete git's temporary object and pack files (``tmp_obj_*``, ``tmp_pack_*``,
        ``tmp_idx_*``, gc's ``.tmp-*``); return how many and their size, or None.

        A git that dies writing them (ENOSPC, a timeout's kill) leaves them behind, and on a
        full volume they keep it full. Syncs are serialized and git children are killed on
        timeout, so none is in use when a sync starts; git itself would remove them only
        after two weeks.
        """
        count = size = 0
        for directory in _object_dirs(self.gitdir / "objects"):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if not entry.name.startswith(("tmp_", ".tmp-")):
                    continue
                with contextlib.suppress(OSError):
                    length = entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
                    count += 1
                    size += length
        return (count, size) if count else None

    def _empty_root(self, entries: list[str]) -> None:
        """git-sync's rule for a ``--root`` that is not a repository: remove its contents
        (not the directory, which may be a mounted volume). What this program wrote there
        itself (link, worktrees, touch and error files) is left to the usual recovery."""
        log.warning(
            "--root %s is not a git repository; removing the %d entries in it (%s), as "
            "git-sync does.",
            self.root,
            len(entries),
            ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else ""),
        )
        for name in entries:
            path = self.root / name
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise RootNotOurs(
                    f"--root {str(self.root)!r} is not a git repository and {name!r} in it "
                    f"cannot be removed ({exc.strerror}); point --root at a subdirectory of "
                    "the volume, or at an empty or missing directory"
                ) from None

    def _stale_locks(self) -> list[Path]:
        found = [self.gitdir / name for name in _LOCKS if (self.gitdir / name).exists()]
        admin = self.gitdir / "worktrees"
        if admin.is_dir():
            for wt in admin.iterdir():
                found.extend(
                    wt / name for name in ("index.lock", "HEAD.lock") if (wt / name).exists()
                )
        return found

    # ---- worktrees --------------------------------------------------------------------

    def current(self) -> tuple[str, Path] | None:
        """The revision the link points at and the directory it resolves to, or None."""
        try:
            target = os.readlink(self.link)
        except OSError:
            return None
        path = Path(os.path.normpath(self.link.parent / target))
        sha = path.name[:40]
        if not SHA.match(sha):
            return None
        return sha, path

    def in_layout(self, path: Path) -> bool:
        """Whether ``path`` is where this layout keeps worktrees (``.worktrees/<name>``)."""
        return path.parent == self.worktrees

    async def remove_old_layout(self, path: Path, deadline: float) -> None:
        """Remove a worktree an older layout kept at ``<root>/<sha>`` (git-sync v3's), and
        git's record of it, once the link no longer points there, as git-sync v4 does when
        it upgrades a root in place. Anything else the link pointed at is left alone."""
        if path.parent != self.root or not SHA.match(path.name):
            return
        log.info(
            "Removing %s, a worktree of an older layout; worktrees now live in %s.",
            path,
            self.worktrees,
        )
        await asyncio.to_thread(self._remove_entry, path)
        if self._has_orphans():
            await self.git.run("worktree", "prune", cwd=self.root, timeout=remaining(deadline))

    def sparse_patterns(self, path: Path) -> list[str] | None:
        """The sparse-checkout patterns ``path`` was checked out with, or None for all files
        (git keeps them in the worktree's ``info/sparse-checkout``)."""
        admin = _admin_dir(path)
        if admin is None:
            return None
        try:
            text = (admin / "info" / "sparse-checkout").read_text(encoding="utf-8")
        except OSError:
            return None
        return parse_patterns(text)

    async def is_modified(self, path: Path, deadline: float) -> bool:
        """Whether a tracked file of ``path`` was changed or removed since the checkout.

        git-sync checks its current worktree out again on its first sync (``reset --hard``),
        which puts such files back; files added beside them stay. Only asked on the first
        sync of a process: it reads every file's metadata.
        """
        args = ["status", "--porcelain", "--untracked-files=no", "--ignore-submodules=all"]
        try:
            result = await self.git.run(*args, cwd=path, timeout=remaining(deadline))
        except GitError:
            return True
        return result.stdout.strip() != ""

    async def lacks_submodules(self, path: Path, submodules: str, deadline: float) -> bool:
        """Whether ``path`` lacks a submodule checkout that ``--submodules`` asks for.

        git-sync checks its current worktree out again on its first sync (``submodule
        update --init``, with ``--recursive`` for recursive), so a restart with submodules
        turned on, or from shallow to recursive, fills them in; turning them off, or from
        recursive to shallow, leaves what is there. ``git submodule status`` marks one not
        checked out with ``-`` (``+`` or ``U``: not at the recorded commit).
        """
        if submodules == "off" or not (path / ".gitmodules").exists():
            return False
        args = ["submodule", "status"]
        if submodules == "recursive":
            args.append("--recursive")
        try:
            result = await self.git.run(*args, cwd=path, timeout=remaining(deadline))
        except GitError:
            return True
        return any(line[:1] in ("-", "+", "U") for line in result.stdout.splitlines())

    def is_complete(self, path: Path, sha: str) -> bool:
        """Whether ``path`` is an intact worktree of ``sha`` (no subprocess: cheap per poll).

        It checks the worktree's ``.git`` file, its administrative directory in the repository
        and the checked-out commit. Files edited inside the tree are not looked for: that
        would stat every file on every poll.
        """
        admin = _admin_dir(path)
        if admin is None:
            return False
        try:
            head = (admin / "HEAD").read_text(encoding="utf-8").strip()
        except OSError:
            return False
        return head == sha

    async def build(
        self,
        sha: str,
        *,
        deadline: float,
        submodules: str,
        depth: int,
        sparse_patterns: Sequence[str] | None,
        env: dict[str, str],
    ) -> Path:
        """Check ``sha`` out into a new complete worktree and return its path."""
        self.worktrees.mkdir(exist_ok=True)
        build = self.worktrees / f"build-{sha[:12]}-{secrets.token_hex(3)}"
        args = ["worktree", "add", "--force", "--detach"]
        if sparse_patterns is not None:
            args.append("--no-checkout")
        try:
            await self.git.run(*args, str(build), sha, cwd=self.root, timeout=remaining(deadline))
            if sparse_patterns is not None:
                await self.git.run(
                    "sparse-checkout",
                    "set",
                    "--no-cone",
                    *sparse_patterns,
                    cwd=build,
                    timeout=remaining(deadline),
                )
                await self.git.run(
                    "reset", "--quiet", "--hard", sha, cwd=build, timeout=remaining(deadline)
                )
            if submodules != "off" and (build / ".gitmodules").exists():
                sub = ["submodule", "update", "--init"]
                if submodules == "recursive":
                    sub.append("--recursive")
                if depth > 0:
                    sub += ["--depth", str(depth)]
                await self.git.run(*sub, cwd=build, timeout=remaining(deadline), env=env)
            final = await self._free_name(sha)
            os.rename(build, final)
            admin = _admin_dir(final)
            if admin is not None:
                self._relocated(admin, build, final)
        except BaseException:
            await asyncio.shield(self._discard(build))
            raise
        return final

    def _relocated(self, admin: Path, build: Path, final: Path) -> None:
        """Point git's records at the worktree's final name, without a subprocess.

        What ``git worktree repair`` would do: the repository's record of the worktree
        (gitrepository-layout: worktrees/<id>/gitdir) follows it, and the worktree's ``.git``
        file becomes relative, like the link, so git works in it wherever the volume is
        mounted. Submodule repositories record their working tree as ``core.worktree``,
        which still names the build directory; ``git worktree repair`` leaves those alone
        (and ``git worktree move`` refuses trees with submodules), so they are rewritten.
        """
        (admin / "gitdir").write_text(f"{final / '.git'}\n")
        (final / ".git").write_text(f"gitdir: {os.path.relpath(admin, final)}\n")
        modules = admin / "modules"
        if not modules.is_dir():
            return
        old = f"/{WORKTREES}/{build.name}"
        new = f"/{WORKTREES}/{final.name}"
        pattern = re.compile(r"^(\s*worktree\s*=\s*)(.*)$", re.MULTILINE)

        def fix(match: re.Match[str]) -> str:
            value = match.group(2)
            if value.endswith(old) or old + "/" in value:
                value = value.replace(old + "/", new + "/")
                if value.endswith(old):
                    value = value[: -len(old)] + new
            return match.group(1) + value

        for gitdir in _module_gitdirs(modules):
            config = gitdir / "config"
            text = config.read_text(encoding="utf-8")
            fixed = pattern.sub(fix, text)
            if fixed != text:
                tmp = config.with_name("config.sidekick-tmp")
                tmp.write_text(fixed, encoding="utf-8")
                os.replace(tmp, config)

    async def _free_name(self, sha: str) -> Path:
        """``.worktrees/<sha>``, unless that holds a broken tree the link still points at.

        Then the repaired tree gets a suffix: replacing the broken one in place would leave
        readers with no tree at all while the new one is built.
        """
        final = self.worktrees / sha
        cur = self.current()
        if not final.exists():
            return final
        if cur is None or cur[1] != final:
            await asyncio.to_thread(shutil.rmtree, final, True)
            # A damaged tree may have lost its .git file but not git's record of it, which
            # would then name the same directory as the new tree's record, and git's next
            # prune drops one of the two duplicates, maybe the new one.
            await self.git.run("worktree", "prune", cwd=self.root, timeout=30)
            return final
        n = 1
        while (self.worktrees / f"{sha}-{n}").exists():
            n += 1
        return self.worktrees / f"{sha}-{n}"

    async def _discard(self, path: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, path, True)
        with contextlib.suppress(Exception):
            await self.git.run("worktree", "prune", cwd=self.root, timeout=30)

    # ---- the link ---------------------------------------------------------------------

    def swap(self, path: Path) -> None:
        """Point the link at ``path`` atomically (relative symlink + rename over the old)."""
        self.link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(path, self.link.parent)
        tmp = self.link.parent / f".{self.link.name}.tmp-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        try:
            os.replace(tmp, self.link)
        except IsADirectoryError:
            tmp.unlink()
            raise RootNotOurs(
                f"link {str(self.link)!r} is a real directory, not a symlink; sidekick sync will "
                "not delete it, so remove it or choose another --link"
            ) from None

    # ---- cleanup ----------------------------------------------------------------------

    def mark_stale(self, path: Path) -> None:
        """Start ``path``'s stale timer: it has just stopped being the current worktree.

        The timer is the directory's mtime, as with git-sync, so it survives a restart.
        """
        try:
            os.utime(path)
        except OSError as exc:
            log.warning("Cannot mark worktree %s as stale: %s.", path, exc.strerror)

    async def remove_stale(self, current: Path, timeout: float, deadline: float) -> int:
        """Remove every entry of ``.worktrees`` but ``current`` whose mtime is ``timeout``
        seconds old or more: old worktrees, unfinished builds, stray files."""
        try:
            entries = list(os.scandir(self.worktrees))
        except OSError:
            return 0
        cutoff = time.time() - timeout
        removed = 0
        for entry in entries:
            path = Path(entry.path)
            if path == current or entry.name == current.name:
                continue
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if timeout > 0 and mtime > cutoff:
                continue
            await asyncio.to_thread(self._remove_entry, path)
            removed += 1
        if removed and self._has_orphans():
            await self.git.run("worktree", "prune", cwd=self.root, timeout=remaining(deadline))
        return removed

    def _remove_entry(self, path: Path) -> None:
        """Delete a worktree and the repository's record of it (``git worktree remove``
        without the subprocess or its refusal to delete damaged trees), or a stray file."""
        if path.is_symlink() or not path.is_dir():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        admin = _admin_dir(path)
        shutil.rmtree(path, ignore_errors=True)
        if admin is not None and admin.parent == self.gitdir / "worktrees":
            shutil.rmtree(admin, ignore_errors=True)

    def _has_orphans(self) -> bool:
        """Whether git records a worktree whose directory is gone (then ``worktree prune``)."""
        admin = self.gitdir / "worktrees"
        try:
            entries = list(admin.iterdir())
        except OSError:
            return False
        for entry in entries:
            try:
                target = Path((entry / "gitdir").read_text(encoding="utf-8").strip())
            except OSError:
                return True
            if not target.parent.is_dir():
                return True
        return False

    def worktree_count(self) -> int:
        """Directories under ``.worktrees`` (finished or not)."""
        try:
            return sum(1 for _ in os.scandir(self.worktrees))
        except OSError:
            return 0


def parse_patterns(text: str) -> list[str]:
    """Sparse-checkout patterns: the lines that are neither blank nor comments."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _object_dirs(objects: Path) -> list[str]:
    """``objects/`` itself and its subdirectories (``00``..``ff``, ``pack``)."""
    try:
        subdirs = [e.path for e in os.scandir(objects) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return [str(objects), *subdirs]


def _module_gitdirs(directory: Path) -> Iterator[Path]:
    """The submodule repositories under a ``modules`` directory, nested ones included.

    A submodule's name may hold slashes (``modules/lib/ui``), so a directory that is not a
    repository itself is searched further.
    """
    try:
        entries = sorted(p for p in directory.iterdir() if p.is_dir())
    except OSError:
        return
    for entry in entries:
        if (entry / "HEAD").is_file() and (entry / "config").is_file():
            yield entry
            yield from _module_gitdirs(entry / "modules")
        else:
            yield from _module_gitdirs(entry)


def _admin_dir(worktree: Path) -> Path | None:
    """The repository's administrative directory for ``worktree``, from its ``.git`` file."""
    try:
        pointer = (worktree / ".git").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not pointer.startswith("gitdir: "):
        return None
    admin = Path(pointer[len("gitdir: ") :])
    return admin if admin.is_absolute() else worktree / admin
