"""Process lifecycle: named, owned asyncio tasks and signal-driven shutdown.

``run(main, shutdown_timeout=...)`` is the one entry point a program uses. It installs signal
handlers that only set state: the first SIGTERM or SIGINT sets ``shutdown.requested`` and the
program drains; if it has not finished ``shutdown_timeout`` seconds later it is cancelled; a
second SIGINT cancels it at once. SIGHUP calls the program's ``on_hup`` (``sync`` re-syncs); a
program without one logs the SIGHUP and goes on (SIGHUP's default action would end the process
without a drain).

Every background task is created through a ``TaskGroup``-like ``TaskOwner`` that names it
(``"sink elasticsearch"``) so liveness can say which one died, and that cancels and awaits all
of them when one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sidekick.core.durations import format_duration
from sidekick.core.ratelog import RateLimitedLog

log = logging.getLogger("sidekick")

# What asyncio reports when a listening socket's accept fails for want of descriptors.
_ACCEPT_EXHAUSTED = "socket.accept() out of system resource"


class Shutdown:
    """Shutdown state shared by a program's tasks."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.signal_name: str | None = None
        self.forced = False

    def request(self, reason: str) -> None:
        self.signal_name = reason
        self.requested.set()

    @property
    def is_requested(self) -> bool:
        return self.requested.is_set()


class TaskOwner:
    """Owns named tasks: spawns them, reports the dead, cancels them together."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], str] = {}
        self.failed: tuple[str, BaseException] | None = None

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks[task] = name
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.failed is None:
            self.failed = (self._tasks.get(task, task.get_name()), exc)
            log.error("Task %r failed: %s", self.failed[0], exc, exc_info=exc)

    def alive(self) -> tuple[bool, str]:
        """Liveness: false once any owned task has ended with an error."""
        if self.failed is not None:
            return False, f"task {self.failed[0]!r} died: {self.failed[1]}"
        return True, "ok"

    @property
    def names(self) -> list[str]:
        return [n for t, n in self._tasks.items() if not t.done()]

    async def wait_until(self, shutdown: Shutdown) -> None:
        """Return when shutdown is requested or any task ends; re-raise a task's error."""
        stop = asyncio.ensure_future(shutdown.requested.wait())
        try:
            pending = {t for t in self._tasks if not t.done()}
            if self.failed is None:
                await asyncio.wait({stop, *pending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if self.failed is not None:
            _name, exc = self.failed
            await self.cancel_all(5.0)
            raise exc

    async def cancel_all(self, timeout: float) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for t in pending:
                log.warning(
                    "Task %r did not stop within %s.", self._tasks[t], format_duration(timeout)
                )


Main = Callable[[Shutdown], Awaitable[int | None]]


def run(
    main: Main,
    *,
    shutdown_timeout: float = 30.0,
    on_hup: Callable[[], None] | None = None,
) -> int:
    """Run ``main`` until it returns; translate signals into a graceful drain."""
    return asyncio.run(_run(main, shutdown_timeout, on_hup))


async def _run(main: Main, shutdown_timeout: float, on_hup: Callable[[], None] | None) -> int:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_exception_handler(RateLimitedLog(log)))
    shutdown = Shutdown()
    task: asyncio.Task[int | None] = asyncio.ensure_future(main(shutdown))
    deadline: asyncio.TimerHandle | None = None

    def on_timeout() -> None:
        log.warning(
            "Shutdown did not finish within %s; cancelling.", format_duration(shutdown_timeout)
        )
        shutdown.forced = True
        task.cancel()

    def on_signal(signum: int) -> None:
        nonlocal deadline
        name = signal.Signals(signum).name
        if not shutdown.is_requested:
            log.info(
                "Received %s, shutting down (timeout %s).", name, format_duration(shutdown_timeout)
            )
            shutdown.request(name)
            deadline = loop.call_later(shutdown_timeout, on_timeout)
        elif signum == signal.SIGINT:
            log.warning("Received second SIGINT, exiting now.")
            shutdown.forced = True
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM)
    loop.add_signal_handler(signal.SIGINT, on_signal, signal.SIGINT)

    def ignore_hup() -> None:
        log.warning("Received SIGHUP; ignoring it (this program has no configuration reload).")

    loop.add_signal_handler(signal.SIGHUP, on_hup if on_hup is not None else ignore_hup)
    try:
        code = await task
    except asyncio.CancelledError:
        code = 130 if shutdown.signal_name == "SIGINT" else 1
    finally:
        if deadline is not None:
            deadline.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return int(code or 0)


def _exception_handler(
    rate: RateLimitedLog,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """asyncio's handler, except for a listening socket out of descriptors: asyncio reports
    that with a traceback for every connection waiting in the backlog, hundreds of lines a
    second while the limit lasts; here it is one line a minute, with a count."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_EXHAUSTED:
            loop.default_exception_handler(context)
            return
        exc = context.get("exception")
        rate.error(
            "accept",
            "Out of file descriptors (%s): a listening socket waits a second before it "
            "accepts again; raise the open-file limit (ulimit -n).",
            exc.strerror if isinstance(exc, OSError) else exc,
        )

    return handle
