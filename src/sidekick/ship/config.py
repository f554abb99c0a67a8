r"""The typed configuration of ``sidekick ship`` (the ``ship:`` section of ``--config``).

Built once by the CLI from the config file < ``SIDEKICK_SHIP_*`` environment < flags and
passed down; nothing below reads the environment. Sizes accept ``64MiB``/``1Mi``/bytes and
durations ``500ms``/``30s``; ``__post_init__`` turns them into ints (bytes) and floats
(seconds), so after construction every size field holds an ``int`` and every duration a
``float`` (use ``size()``/``seconds()`` to read them with a precise type).

Example::

    ship:
      inputs:
        - file:///var/log/nginx/*.log
        - http://0.0.0.0:8081?parser=json
        - url: file:///var/log/app/*.log
          parser: json
        - url: file:///var/log/worker/*.log
          multiline_start: '^\d{4}-'
      outputs:
        - url: http://collector:9000/ingest
          options: {gzip: true}
      parser: nginx
      fields: {env: prod}
      state_dir: /var/lib/sidekick
      batch: {max_bytes: 512KiB, max_records: 10000, timeout: 0s}
      retry: {initial: 500ms, max: 30s}
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from sidekick.core.durations import parse_duration
from sidekick.core.errors import ConfigError
from sidekick.core.sizes import parse_size

Size = int | str
Duration = float | str


def size(value: Size) -> int:
    return value if isinstance(value, int) else parse_size(value)


def seconds(value: Duration) -> float:
    return value if isinstance(value, float) else parse_duration(value)


class InputConfig(msgspec.Struct, forbid_unknown_fields=True):
    """One input in mapping form: its URL and the options that override the global ones
    (the same as ``?parser=...&multiline_start=...`` in the URL)."""

    url: str
    parser: str | None = None
    multiline_start: str | None = None
    follow_symlinks: bool | None = None
    exclude: list[str] | None = None  # glob patterns of files not to tail
    k8s_metadata: str | None = None  # path or none


class OutputConfig(msgspec.Struct, forbid_unknown_fields=True):
    """One output: its URL (scheme picks the sink), options for that kind of sink, and the
    components it reads (``inputs``: input or transform names, a route's branch as
    ``name.branch``; unset in the list form, which sends every input to the output)."""

    url: str
    options: dict[str, Any] = {}
    inputs: list[str] | None = None


class BatchConfig(msgspec.Struct, forbid_unknown_fields=True):
    """How outputs group records: a batch is sent once it reaches ``max_bytes`` or
    ``max_records``; while an output is busy, waiting records join the next batch.
    ``timeout`` (seconds) is how long a free output waits for more records before sending a
    small batch (0: send at once; raise it to make fewer, larger requests)."""

    max_bytes: Size = "512KiB"
    max_records: int = 10000
    timeout: Duration = 0.0
    # Reading pauses while the records waiting for an output (besides those it is sending)
    # take this many times ``max_bytes`` of memory; the in-flight limit still bounds the
    # total over all outputs.
    max_queued: int = 2

    def __post_init__(self) -> None:
        self.max_bytes = parse_size(self.max_bytes, name="batch.max_bytes")
        self.timeout = parse_duration(self.timeout, name="batch.timeout")
        if self.max_records < 1:
            raise ConfigError("config field 'batch.max_records' must be at least 1; raise it")
        if self.max_queued < 1:
            raise ConfigError("config field 'batch.max_queued' must be at least 1; raise it")


class RetryConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Back-off between attempts of a failing output (seconds); retries never stop."""

    initial: Duration = 0.5
    max: Duration = 30.0

    def __post_init__(self) -> None:
        self.initial = parse_duration(self.initial, name="retry.initial")
        self.max = parse_duration(self.max, name="retry.max")


class IngestConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Options of the HTTP ingest input (``--input http://HOST:PORT``)."""

    token_file: str | None = None
    spool_max_bytes: Size = "1GiB"
    max_body_bytes: Size = "10MiB"
    max_records_per_request: int = 10000
    # Connections open at once (capped at half the open-file limit); at the limit a new one
    # closes the longest-idle connection, or gets 503 if every one has a request under way.
    max_connections: int = 512
    # Seconds a client has to send complete request headers (from connecting, or from the
    # first byte after a keep-alive pause), to send a body, and may stay idle between requests.
    header_timeout: Duration = 10.0
    body_timeout: Duration = 30.0
    keepalive_timeout: Duration = 75.0

    def __post_init__(self) -> None:
        self.spool_max_bytes = parse_size(self.spool_max_bytes, name="ingest.spool_max_bytes")
        self.max_body_bytes = parse_size(self.max_body_bytes, name="ingest.max_body_bytes")
        if self.max_connections < 1:
            raise ConfigError(
                f"config field 'ingest.max_connections' is {self.max_connections}; give at least 1"
            )
        for name in ("header_timeout", "body_timeout", "keepalive_timeout"):
            value = parse_duration(getattr(self, name), name=f"ingest.{name}")
            if not value > 0:  # NaN too
                raise ConfigError(
                    f"config field 'ingest.{name}' is {value:g}s; give a duration above 0, like 10s"
                )
            setattr(self, name, value)


class ShipConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Everything ``sidekick ship`` runs with."""

    # file:///glob (tail) or http://HOST:PORT (ingest), each an URL string (options after
    # "?") or {url, parser, multiline_start}; at least one. sources.resolve_input reads them.
    # A list (each input is named by its URL) or a mapping of names to inputs.
    inputs: list[str | InputConfig] | dict[str, str | InputConfig] = []
    # Named stages between inputs and outputs: name -> {type, inputs, ...options of the
    # type}; checked and built by ship.graph.
    transforms: dict[str, dict[str, Any]] = {}
    # Each an URL string or {url, options, inputs}; normalised to OutputConfig. A list (each
    # output reads every input) or a mapping of names to outputs (each names its inputs).
    outputs: list[str | OutputConfig] | dict[str, str | OutputConfig] = []
    # raw, json, nginx, apache, cri, docker or regex:PATTERN; for inputs that do not name
    # their own.
    parser: str = "raw"
    # A line matching this regex starts a new record; others join the previous one (for
    # file inputs that do not name their own).
    multiline_start: str | None = None
    # Added to every record (--field k=v).
    fields: dict[str, str] = {}
    # Directory for the checkpoint, the dead-letter file and the ingest spool (required).
    state_dir: str = ""
    # A pending multi-line group is shipped after this long without a new line (seconds).
    multiline_timeout: Duration = 1.0
    # Where existing files start on the very first run (files seen later start at 0).
    start_at: Literal["beginning", "end"] = "beginning"
    # Longer lines are split into pieces marked log.flags=["partial"].
    max_line_bytes: Size = "1MiB"
    # Reading pauses while this many bytes are read but not delivered by every output.
    max_inflight_bytes: Size = "64MiB"
    # Bytes read from a file per read call (large enough to amortise per-chunk work, small
    # enough to stay in the CPU cache: 256 KiB measured faster and leaner than 1 MiB).
    read_bytes: Size = "256KiB"
    # How often globs are re-evaluated (seconds); inotify wakes the reader earlier.
    poll_interval: Duration = 0.25
    # Use inotify where the kernel has it; false polls only (for volumes whose writers
    # inotify cannot see, like some network filesystems).
    inotify: bool = True
    # Follow symlinks (the matched file or a directory below the glob's base directory)
    # whose target lies outside that base directory; false refuses and counts them.
    follow_symlinks: bool = False
    # Tailed files held open at once, over all file inputs (0: half the open-file limit);
    # fully read, idle files beyond it are closed and reopened when they grow.
    max_open_files: int = 0
    # How long a renamed or deleted file is kept open after its last growth (seconds).
    rotate_wait: Duration = 1.0
    # How often the checkpoint is written at most (seconds).
    checkpoint_interval: Duration = 1.0
    # On SIGTERM inputs keep reading (files to their end, HTTP ingest keeps accepting) until
    # no input has seen new data for this long (seconds), all within --shutdown-timeout.
    drain_quiet: Duration = 1.0
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    # Filled in by the CLI (hostname, Downward-API env); empty means not set.
    host_name: str = ""
    pod_name: str = ""
    pod_namespace: str = ""
    container_name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.outputs, dict):
            self.outputs = {
                k: OutputConfig(o) if isinstance(o, str) else o for k, o in self.outputs.items()
            }
        else:
            self.outputs = [OutputConfig(o) if isinstance(o, str) else o for o in self.outputs]
        if self.max_open_files < 0:
            raise ConfigError(
                f"config field 'max_open_files' is {self.max_open_files}; "
                "give a positive number, or 0 for half the open-file limit"
            )
        self.max_line_bytes = parse_size(self.max_line_bytes, name="max_line_bytes")
        self.max_inflight_bytes = parse_size(self.max_inflight_bytes, name="max_inflight_bytes")
        self.read_bytes = parse_size(self.read_bytes, name="read_bytes")
        self.poll_interval = parse_duration(self.poll_interval, name="poll_interval")
        self.rotate_wait = parse_duration(self.rotate_wait, name="rotate_wait")
        self.multiline_timeout = parse_duration(self.multiline_timeout, name="multiline_timeout")
        self.checkpoint_interval = parse_duration(
            self.checkpoint_interval, name="checkpoint_interval"
        )
        self.drain_quiet = parse_duration(self.drain_quiet, name="drain_quiet")

    @property
    def output_configs(self) -> list[OutputConfig]:
        outs = self.outputs.values() if isinstance(self.outputs, dict) else self.outputs
        return [o if isinstance(o, OutputConfig) else OutputConfig(o) for o in outs]

    @property
    def input_entries(self) -> list[str | InputConfig]:
        """Every input, whichever form the config gave them in."""
        if isinstance(self.inputs, dict):
            return list(self.inputs.values())
        return list(self.inputs)

    def static_fields(self) -> dict[str, Any]:
        """Fields every record carries: host, Kubernetes identity, ``--field``s."""
        out: dict[str, Any] = {}
        if self.host_name:
            out["host.name"] = self.host_name
        if self.pod_name:
            out["k8s.pod.name"] = self.pod_name
        if self.pod_namespace:
            out["k8s.namespace.name"] = self.pod_namespace
        if self.container_name:
            out["k8s.container.name"] = self.container_name
        out.update(self.fields)
        return out
