"""``sidekick sync``: keep a git ref published into a shared volume, atomically.

Layers, lowest first: ``git`` (runs the git CLI with timeouts and redaction), ``publish``
(the repository, worktrees and link under ``--root``), ``metrics``, ``hooks`` (after-publish
command and webhook), ``remote`` (credentials, ``ls-remote`` and the fetch), ``status_files``
(``--touch-file`` and ``--error-file``), ``syncer`` (the loop: triggers, recovery, back-off)
and ``app`` (wiring with the admin server and the process runtime) with ``git_setup`` (the git
runner's settings), ``preflight`` (the checks before the first sync) and ``pid1`` (as PID 1,
a bare init in front of the real process). ``config`` is the typed configuration they all
read; ``sidekick.cli.sync`` builds it from flags, environment and file.
"""
