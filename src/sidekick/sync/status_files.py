"""git-sync's two files that report how syncs go: ``--touch-file`` and ``--error-file``.

``--error-file`` holds git-sync's JSON record of the last failure and is removed by the next
success (a setting refused at start is written to it as plain text, as git-sync does);
``--touch-file`` is touched when a revision is published and on the first success of the
process. A relative path is under ``--root``, and its first component counts as ours there (``owned_names``): ``publish`` keeps it when it empties a root that is not a
repository. A file that cannot be written is a warning, never a failed sync.

It leaves out when a sync has succeeded or failed, and the failure count and limit the
record carries (``syncer``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from sidekick.sync.config import SyncConfig

log = logging.getLogger("sidekick.sync")


def owned_names(cfg: SyncConfig) -> set[str]:
    """Names directly under ``root`` that ``--touch-file``/``--error-file`` put there."""
    out = set()
    for path in (cfg.touch_file, cfg.error_file):
        if path and not os.path.isabs(path):
            out.add(Path(path).parts[0])
    return out


class StatusFiles:
    """``cfg.touch_file`` and ``cfg.error_file``, under ``root`` unless absolute."""

    def __init__(self, cfg: SyncConfig, root: Path) -> None:
        self.cfg = cfg
        self.root = root

    def _beside_root(self, path: str) -> Path:
        return Path(path) if os.path.isabs(path) else self.root / path

    def succeeded(self, *, touch: bool) -> None:
        # git-sync touches the file when a sync publishes a revision, and on its first
        # successful sync (a restart over a current tree), never on an idle poll.
        if touch and self.cfg.touch_file:
            path = self._beside_root(self.cfg.touch_file)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            except OSError as exc:
                log.warning("Cannot touch --touch-file %s: %s.", path, exc.strerror)
        if self.cfg.error_file:
            path = self._beside_root(self.cfg.error_file)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("Cannot remove --error-file %s: %s.", path, exc.strerror)

    def failed(self, message: str, *, giving_up: bool, fail_count: int, max_failures: int) -> None:
        """git-sync's record, the JSON of the line it logs: ``Msg``, ``Err`` (the error, git's
        own words included) and ``Args``, compact as Go writes it, with no trailing newline,
        replaced atomically and readable by all (0644)."""
        if self.cfg.error_file:
            record = _record(message, giving_up, fail_count, max_failures)
            write_error_file(self._beside_root(self.cfg.error_file), record)


def write_error_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, readable by all (0644) as git-sync leaves
    it; a file that cannot be written is a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("Cannot write --error-file %s: %s.", path, exc.strerror)


def export_refused_setting(root: str | None, error_file: str | None, message: str) -> None:
    """git-sync's record of a setting it refuses at start: the message alone, as plain text
    (not the JSON of a failed sync), in ``--error-file`` (relative paths under ``root``)."""
    if not error_file or (root is None and not os.path.isabs(error_file)):
        return
    write_error_file(Path(root or "/", error_file), message)


def _record(message: str, giving_up: bool, fail_count: int, max_failures: int) -> str:
    """git-sync's two failure lines: the retry carries the count, the abort the limit too."""
    args: dict[str, int] = {"failCount": fail_count}
    if giving_up:
        args["maxFailures"] = max_failures
    record = {
        "Msg": "too many failures, aborting" if giving_up else "error syncing repo, will retry",
        "Err": message,
        "Args": args,
    }
    return json.dumps(record, separators=(",", ":"))


__all__ = ["StatusFiles", "export_refused_setting", "owned_names", "write_error_file"]
