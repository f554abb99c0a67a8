"""In-order acknowledgement: a stream's checkpoint advances only over delivered data.

A *stream* is anything read sequentially by position: one generation of a tailed file, or
the HTTP ingest spool. Each batch a source emits ends at some position of its stream; the
source registers that end with ``AckTracker.track(end)`` and hands the returned ``Ack`` to
the pipeline inside the batch. Sinks finish batches out of order (several outputs, retries,
concurrent requests), so the tracker keeps the batches in emission order and moves
``committed`` only over the longest prefix of batches that are all delivered. That is the
whole at-least-once argument: a checkpoint never covers bytes some output has not got.

The tracker knows nothing of files or checkpoints; ``on_commit(position)`` is the hook a
source uses to persist the new position (tail) or to delete fully delivered segments
(spool). It is called synchronously, once per advance, with the new committed position.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

CommitHook = Callable[[int], None]


class Ack:
    """The token of one emitted batch; ``delivered()`` once every output has it."""

    __slots__ = ("_tracker", "done", "end")

    def __init__(self, tracker: AckTracker, end: int) -> None:
        self._tracker = tracker
        self.end = end
        self.done = False

    def delivered(self) -> None:
        if not self.done:
            self.done = True
            self._tracker._advance()


class AckTracker:
    """Ordered batch ends of one stream; ``committed`` is the end of the delivered prefix."""

    def __init__(self, committed: int = 0, on_commit: CommitHook | None = None) -> None:
        self.committed = committed
        self.on_commit = on_commit
        self._pending: deque[Ack] = deque()
        self.closed = False

    def track(self, end: int) -> Ack:
        """Register the next batch, which ends at ``end`` (positions must not go back)."""
        ack = Ack(self, end)
        self._pending.append(ack)
        return ack

    @property
    def pending(self) -> int:
        """Batches emitted but not yet covered by ``committed``."""
        return len(self._pending)

    @property
    def idle(self) -> bool:
        return not self._pending

    @property
    def emitted(self) -> int:
        """The end of the latest batch registered (``committed`` if none is pending)."""
        return self._pending[-1].end if self._pending else self.committed

    def _advance(self) -> None:
        pending = self._pending
        moved = False
        while pending and pending[0].done:
            end = pending.popleft().end
            if end > self.committed:
                self.committed = end
            moved = True
        if moved and self.on_commit is not None and not self.closed:
            self.on_commit(self.committed)

    def close(self) -> None:
        """Stop calling ``on_commit`` (the stream was replaced, e.g. after a truncation)."""
        self.closed = True
