"""Syslog output: RFC 5424 messages over TCP (RFC 6587 octet counting) or UDP (RFC 5426).

``syslog+tcp://HOST:514`` or ``syslog+udp://HOST:514``. Each record becomes::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG

- PRI = facility × 8 + severity. The facility comes from the ``facility`` option (default
  ``user``); the severity from the record's ``log.level`` (``error`` → 3, ``warning`` → 4 ...)
  or else the ``severity`` option (default ``info``).
- TIMESTAMP is the record's ``@timestamp`` cut to microseconds (RFC 5424 allows six digits);
  HOSTNAME is ``host.name``; APP-NAME is the field named by ``app_name_field`` when the record
  has it, else the ``app_name`` option (default ``sidekick``); PROCID is ``-``; MSGID the
  ``msgid`` option (default ``-``). Header fields are cut to RFC 5424's lengths and to
  printable ASCII.
- The other fields travel as one structured-data element, ``[sidekick@32473 k="v" ...]``
  (32473 is the example enterprise number of RFC 5612; change it with ``sd_id``, or drop the
  fields with ``structured_data: false``), so nothing is lost on the way to a syslog server.

Over TCP each message is framed as ``LEN SP MSG`` (octet counting), so a message may hold
newlines. TCP syslog has no acknowledgements: a batch counts as delivered once it is written
and the kernel accepted it; a broken connection raises ``TemporaryError`` and the next send
reconnects and sends the whole batch again (at least once). One connection is kept open and
reused. Over UDP each message is one datagram; a message longer than ``max_datagram_bytes``
(default 2048, the size RFC 5426 says receivers should accept) is truncated, and each
truncation is counted (``truncated``) and logged. UDP confirms nothing, but a host where
nobody listens on the port answers "port unreachable": when the network reports an error
while a batch is sent, the batch is not counted as delivered and is sent again (at least
once), so a stopped receiver holds the checkpoint instead of losing lines. A report that
arrives later (a distant host) or never (a firewall) cannot be tied to a batch.

Left out: TLS (RFC 5425), RFC 3164 output, non-transparent (newline) framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from datetime import UTC, datetime
from typing import Any

import msgspec

from sidekick.core.durations import parse_duration
from sidekick.core.errors import TemporaryError
from sidekick.ship.records import DELIVERED, HOST_NAME, MESSAGE, TIMESTAMP, Record, SendResult
from sidekick.ship.sinks import OutputSpec
from sidekick.ship.sinks._options import Target, load_options, option_error, parse_target
from sidekick.ship.sinks.base import BaseSink

log = logging.getLogger("sidekick.ship.sinks.syslog")

LEVEL = "log.level"
FACILITIES = {
    name: code
    for code, name in enumerate(
        [
            "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
            "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
            "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
        ]
    )
}  # fmt: skip
SEVERITIES = {
    "emerg": 0, "emergency": 0, "panic": 0,
    "alert": 1,
    "crit": 2, "critical": 2, "fatal": 2,
    "err": 3, "error": 3,
    "warn": 4, "warning": 4,
    "notice": 5,
    "info": 6, "informational": 6, "information": 6,
    "debug": 7, "trace": 7,
}  # fmt: skip

_SKIP_IN_SD = frozenset({MESSAGE, TIMESTAMP, HOST_NAME})
_SD_NAME_BAD = re.compile(r'[^\x21-\x7e]|[= \]"]')
_HEADER_BAD = re.compile(r"[^\x21-\x7e]")
_TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,6})?\d*(Z|[+-]\d\d:\d\d)$")


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of a syslog output (URL query or config file)."""

    facility: str | int = "user"  # a name (user, daemon, local0 ... local7) or 0..23
    severity: str | int = "info"  # used when a record has no log.level
    app_name: str = "sidekick"
    app_name_field: str | None = None  # a record field that, when present, gives the APP-NAME
    hostname: str | None = None  # when a record has no host.name (default: this host's name)
    msgid: str = "-"
    structured_data: bool = True
    sd_id: str = "sidekick@32473"
    max_datagram_bytes: int = 2048  # UDP only
    timeout: str | float = 10.0  # to connect and to write a batch (TCP), a duration like 10s


def _header(value: Any, limit: int) -> str:
    text = _HEADER_BAD.sub("_", str(value))[:limit]
    return text or "-"


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _sd_value(value: Any) -> str:
    text = value if type(value) is str else msgspec.json.encode(value).decode()
    if "\\" in text or '"' in text or "]" in text:
        return _sd_escape(text)
    return text


def _timestamp(value: Any) -> str:
    if isinstance(value, str):
        m = _TS.match(value)
        if m:
            return m.group(1) + (m.group(2) or "") + m.group(3)
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class SyslogSink(BaseSink):
    """Formats records as RFC 5424 and writes them to one kept-open TCP connection or UDP socket."""

    def __init__(self, spec: OutputSpec) -> None:
        target = parse_target(spec.url, default_port=514)
        opts = load_options(Options, target, spec.options)
        self.transport = "udp" if target.scheme == "syslog+udp" else "tcp"
        self.name = f"syslog+{self.transport} {target.hostport}"
        self.host, self.port = target.host, target.port

        facility = opts.facility
        if isinstance(facility, str) and facility.isdigit():
            facility = int(facility)
        if isinstance(facility, str):
            if facility.lower() not in FACILITIES:
                raise option_error(
                    target,
                    "facility",
                    f"is {facility!r}",
                    "use user, daemon, local0 ... local7 or 0..23",
                )
            facility = FACILITIES[facility.lower()]
        if not 0 <= facility <= 23:
            raise option_error(target, "facility", f"is {facility}", "use a number from 0 to 23")
        self.facility = facility
        self.default_severity = self._severity(target, opts.severity)
        self.app_name = _header(opts.app_name, 48)
        self.app_name_field = opts.app_name_field
        self.hostname = _header(opts.hostname or socket.gethostname(), 255)
        self.msgid = _header(opts.msgid, 32)
        if _SD_NAME_BAD.search(opts.sd_id) or not opts.sd_id or len(opts.sd_id) > 32:
            raise option_error(
                target,
                "sd_id",
                f"is {opts.sd_id!r}",
                "use a name like fields@32473 (no spaces, =, ] or quotes)",
            )
        self.sd_id = opts.sd_id if opts.structured_data else None
        if opts.max_datagram_bytes < 480:
            raise option_error(
                target,
                "max_datagram_bytes",
                f"is {opts.max_datagram_bytes}",
                "use at least 480 (RFC 5426's minimum)",
            )
        self.max_datagram = opts.max_datagram_bytes
        self.timeout = parse_duration(opts.timeout, name=f"output {target.url!r}: option 'timeout'")
        self.truncated = 0  # UDP messages cut to max_datagram_bytes
        self._sd_names: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpErrors | None = None

    @staticmethod
    def _severity(target: Target, value: str | int) -> int:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, str):
            if value.lower() not in SEVERITIES:
                raise option_error(
                    target,
                    "severity",
                    f"is {value!r}",
                    "use emerg, alert, crit, err, warning, notice, info, debug or 0..7",
                )
            return SEVERITIES[value.lower()]
        if not 0 <= value <= 7:
            raise option_error(target, "severity", f"is {value}", "use a number from 0 to 7")
        return value

    # ------------------------------------------------------------------ formatting

    def _sd_name(self, key: str) -> str:
        """An SD-PARAM name (printable ASCII without ``= ]"`` and space, at most 32), cached."""
        name = self._sd_names.get(key)
        if name is None:
            if len(self._sd_names) > 4096:
                self._sd_names.clear()
            name = self._sd_names[key] = _SD_NAME_BAD.sub("_", key)[:32]
        return name

    def format(self, record: Record) -> bytes:
        """One RFC 5424 message (without framing)."""
        level = record.get(LEVEL)
        severity = (
            SEVERITIES.get(level.lower(), self.default_severity)
            if isinstance(level, str)
            else self.default_severity
        )
        pri = self.facility * 8 + severity
        host = record.get(HOST_NAME)
        hostname = _header(host, 255) if host else self.hostname
        app = self.app_name
        if self.app_name_field is not None:
            value = record.get(self.app_name_field)
            if value:
                app = _header(value, 48)
        sd = "-"
        if self.sd_id is not None:
            params = [
                f'{self._sd_name(k)}="{_sd_value(v)}"'
                for k, v in record.items()
                if k not in _SKIP_IN_SD and v is not None
            ]
            if params:
                sd = f"[{self.sd_id} {' '.join(params)}]"
        message = record.get(MESSAGE)
        msg = message if isinstance(message, str) else ("" if message is None else str(message))
        head = f"<{pri}>1 {_timestamp(record.get(TIMESTAMP))} {hostname} {app} - {self.msgid} {sd}"
        return (head + (" " + msg if msg else "")).encode("utf-8", "surrogateescape")

    # ------------------------------------------------------------------ sending

    async def send(self, records: list[Record]) -> SendResult:
        if not records:
            return DELIVERED
        messages = [self.format(r) for r in records]
        async with self._lock:
            if self.transport == "udp":
                await self._send_udp(messages)
            else:
                await self._send_tcp(messages)
        return DELIVERED

    async def _connect_tcp(self) -> asyncio.StreamWriter:
        writer = self._writer
        # A peer that closed its side shows up as EOF on our (otherwise unused) reader.
        if writer is not None and (writer.is_closing() or (self._reader and self._reader.at_eof())):
            await self._drop_tcp()
            writer = None
        if writer is not None:
            return writer
        try:
            reader, new = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise TemporaryError(f"{self.name}: cannot connect: {exc or 'timed out'}") from None
        self._reader, self._writer = reader, new
        log.info("%s: connected", self.name)
        return new

    async def _send_tcp(self, messages: list[bytes]) -> None:
        writer = await self._connect_tcp()
        frame = b"".join(b"%d %s" % (len(m), m) for m in messages)
        try:
            writer.write(frame)
            await asyncio.wait_for(writer.drain(), self.timeout)
        except (OSError, TimeoutError) as exc:
            await self._drop_tcp()
            raise TemporaryError(
                f"{self.name}: connection lost while sending {len(messages)} messages "
                f"({exc or 'timed out'}); they will be sent again"
            ) from None

    async def _drop_tcp(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _send_udp(self, messages: list[bytes]) -> None:
        if self._udp is None:
            loop = asyncio.get_running_loop()
            try:
                self._udp, self._udp_protocol = await loop.create_datagram_endpoint(
                    lambda: _UdpErrors(self.name), remote_addr=(self.host, self.port)
                )
            except OSError as exc:
                raise TemporaryError(f"{self.name}: cannot open a UDP socket: {exc}") from None
        assert self._udp_protocol is not None
        errors = self._udp_protocol.errors
        cut = 0
        for m in messages:
            if len(m) > self.max_datagram:
                # Cut on a character boundary so the receiver still gets valid UTF-8.
                m = m[: self.max_datagram].decode("utf-8", "ignore").encode()
                cut += 1
            self._udp.sendto(m)
        # A report of this batch's first datagram may still be on its way through the loop
        # or pending on the socket; the others' sends already failed if it came back.
        await asyncio.sleep(0)
        pending = self._udp.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if pending:
            self._udp_protocol.error_received(OSError(pending, os.strerror(pending)))
        if self._udp_protocol.errors != errors:
            raise TemporaryError(
                f"{self.name}: the network reports errors for a batch of {len(messages)} "
                "datagrams (is anyone listening?); it will be sent again"
            )
        if cut:
            self.truncated += cut
            log.warning(
                "%s: %d messages longer than max_datagram_bytes=%d were truncated (%d so far)",
                self.name,
                cut,
                self.max_datagram,
                self.truncated,
            )

    @property
    def udp_errors(self) -> int:
        """Errors reported for the UDP socket (each means lost datagrams)."""
        return self._udp_protocol.errors if self._udp_protocol is not None else 0

    def counters(self) -> dict[str, int]:
        """Output-specific counts for ``/metrics`` (see ship.metrics.OutputEventsCollector)."""
        return {"truncated": self.truncated, "udp_errors": self.udp_errors}

    async def aclose(self) -> None:
        await self._drop_tcp()
        if self._udp is not None:
            self._udp.close()
            self._udp = None


class _UdpErrors(asyncio.DatagramProtocol):
    """Counts and logs the errors a UDP peer reports (ICMP port unreachable: nobody listens)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors = 0

    def error_received(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors & (self.errors - 1) == 0:  # 1st, 2nd, 4th, 8th ...: visible, not a flood
            log.warning(
                "%s: the network reports %s; datagrams sent around now were probably lost "
                "(%d such errors so far)",
                self.name,
                exc,
                self.errors,
            )


def create(spec: OutputSpec) -> SyslogSink:
    return SyslogSink(spec)
