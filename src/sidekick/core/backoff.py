"""Jittered exponential back-off, shared by sink retries, git syncs and container restarts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays ``initial * factor**n``, capped at ``maximum``, with "equal jitter".

    Jitter keeps many sidecars that failed together from retrying together; half the
    delay is kept fixed so the back-off still grows. ``jitter=0`` gives exact delays
    (the kubelet's container restart back-off has none).
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    attempts: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        if self.jitter <= 0:
            return base
        return base * (1 - self.jitter) + self._rng.uniform(0, base * self.jitter)

    def peek(self) -> float:
        """The un-jittered delay the next call would be based on."""
        return min(self.maximum, self.initial * self.factor**self.attempts)

    def reset(self) -> None:
        self.attempts = 0
