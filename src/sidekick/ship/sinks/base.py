"""``BaseSink``: the defaults of the capabilities the ``Sink`` protocol declares.

Every output states how many batches it may have in flight at once (``concurrency``) and
which output-specific events it counts (``counters()``, read for ``/metrics``). Most outputs
send one batch at a time and count nothing of their own; they inherit these defaults, and
the pipeline and the metrics read the attributes directly instead of probing for them.
"""

from __future__ import annotations


class BaseSink:
    concurrency: int = 1  # batches in flight at once; checkpoints still advance in order

    def counters(self) -> dict[str, int]:
        """Output-specific event counts by name (``bad_responses``, ``truncated``); none here."""
        return {}
