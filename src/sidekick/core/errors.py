"""The error hierarchy of sidekick.

    SidekickError                 anything sidekick raises on purpose
    ├── UserError                 the user's input is wrong; the CLI prints it and exits 2
    │   └── ConfigError           a flag, environment variable, config file or manifest field
    ├── PermanentError            retrying cannot help (a 4xx, a rejected record, a bad ref)
    └── TemporaryError            retrying later may help (a refused connection, a 503, a timeout)

Messages name the thing, the value and the fix, in one sentence:
``--output "ftp://x": unknown scheme "ftp"; use file:, stdout:, http: or https:``.
Only ``sidekick.cli`` turns these into exit codes.
"""

from __future__ import annotations


class SidekickError(Exception):
    """Base of every error sidekick raises on purpose."""


class UserError(SidekickError):
    """The user's input is wrong. Printed as one sentence; exit code 2."""


class ConfigError(UserError):
    """A configuration value (flag, env var, file, manifest field) is invalid."""


class PermanentError(SidekickError):
    """An operation failed and retrying it unchanged cannot succeed."""


class TemporaryError(SidekickError):
    """An operation failed but may succeed if retried later.

    ``retry_after`` (seconds), when set, is the peer's own hint (``Retry-After``).
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
