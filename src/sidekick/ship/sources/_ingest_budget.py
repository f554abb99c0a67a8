"""Memory budgets of the HTTP ingest: how many bytes the requests under way may hold at once.

A request reserves its worst case before it reads or works on a body (``IngestServer`` counts
it and takes two budgets in a fixed order: bodies arriving, bodies being worked on) and waits,
first come first served, while there is no room: a burst of large requests is slowed down,
never refused for lack of memory and never let past the limit. A reservation can shrink as
the request lets go of what it no longer needs, letting the next one in.

Left out: measuring what is really allocated (a reservation is a bound computed up front), and
shares per client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class MemoryBudget:
    """Bytes that requests may hold at once; ``reserve`` waits (first come, first served)
    until there is room. A reservation larger than the whole budget waits for an empty
    budget and then runs alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def reserve(self, n: int) -> AsyncIterator[Reservation]:
        res = Reservation(self, await self._acquire(min(n, self.limit)))
        try:
            yield res
        finally:
            res.release()

    async def _acquire(self, n: int) -> int:
        if not self._waiters and self.used + n <= self.limit:
            self.used += n
            return n
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(n)  # granted just as we were cancelled
            else:
                fut.cancel()
                self._wake()  # we may have been the head that blocked others
            raise
        return n

    def _release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if self.used + n > self.limit:
                return
            self._waiters.popleft()
            self.used += n
            fut.set_result(None)


class Reservation:
    """Part of a ``MemoryBudget`` held by one request; it can give back what it no longer needs."""

    __slots__ = ("budget", "n")

    def __init__(self, budget: MemoryBudget, n: int) -> None:
        self.budget = budget
        self.n = n

    def shrink(self, n: int) -> None:
        if n < self.n:
            self.budget._release(self.n - n)
            self.n = n

    def release(self) -> None:
        self.shrink(0)
