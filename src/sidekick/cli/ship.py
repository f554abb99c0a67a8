"""`sidekick ship`: tail files (and receive HTTP-posted logs), ship every line at least once.

Builds one ``ShipConfig`` from the ``ship:`` section of ``--config`` < ``SIDEKICK_SHIP_*``
environment < flags, checks it completely (``prepare``) so a user mistake is one sentence and
exit code 2 before anything starts, then runs the shipper under the shared runtime. The
Downward-API variables ``POD_NAME``, ``POD_NAMESPACE`` and ``CONTAINER_NAME`` and the host
name are read here, once, and passed down in the config.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from prometheus_client import CollectorRegistry

from sidekick.cli.common import admin_addr, common_options, init_logging, key_values, overrides
from sidekick.core.config import build_config, load_yaml_file
from sidekick.core.durations import parse_duration
from sidekick.core.errors import ConfigError, UserError
from sidekick.core.limits import raise_open_files_limit
from sidekick.core.runtime import Shutdown, run

FLAGS = {
    "inputs": "inputs",
    "outputs": "outputs",
    "parser": "parser",
    "multiline_start": "multiline_start",
    "state_dir": "state_dir",
    "start_at": "start_at",
    "max_line_bytes": "max_line_bytes",
    "max_inflight_bytes": "max_inflight_bytes",
    "ingest_token_file": "ingest.token_file",
    "spool_max_bytes": "ingest.spool_max_bytes",
    "ingest_max_body_bytes": "ingest.max_body_bytes",
    "ingest_max_records": "ingest.max_records_per_request",
    "ingest_max_connections": "ingest.max_connections",
    "ingest_header_timeout": "ingest.header_timeout",
    "ingest_body_timeout": "ingest.body_timeout",
    "ingest_keepalive_timeout": "ingest.keepalive_timeout",
    "follow_symlinks": "follow_symlinks",
    "max_open_files": "max_open_files",
    "drain_quiet": "drain_quiet",
}


@click.command(context_settings={"auto_envvar_prefix": "SIDEKICK_SHIP"})
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="URL",
    help="file:///glob/*.log to tail, or http://HOST:PORT to receive POSTed logs; "
    "?parser=KIND&multiline_start=REGEX after it overrides the global ones. Repeatable.",
)
@click.option(
    "--output",
    "outputs",
    multiple=True,
    metavar="URL",
    help="stdout:, file:///path, http(s)://host:port/path (more in docs/ship.md). Repeatable.",
)
@click.option(
    "--parser",
    metavar="KIND",
    help="raw (default), json, nginx, apache or regex:PATTERN; for inputs without ?parser=.",
)
@click.option(
    "--multiline-start", metavar="REGEX", help="A line matching REGEX starts a new record."
)
@click.option(
    "--field", "fields", multiple=True, metavar="K=V", help="Add K=V to every record. Repeatable."
)
@click.option("--state-dir", metavar="DIR", help="Directory for checkpoints, dead letters, spool.")
@click.option(
    "--start-at",
    type=click.Choice(["beginning", "end"]),
    help="Where files already present at the first start are read from (default beginning).",
)
@click.option("--max-line-bytes", metavar="SIZE", help="Split longer lines (default 1MiB).")
@click.option(
    "--max-inflight-bytes",
    metavar="SIZE",
    help="Pause reading at this many undelivered bytes (default 64MiB).",
)
@click.option("--ingest-token-file", metavar="FILE", help="HTTP ingest: require this bearer token.")
@click.option("--spool-max-bytes", metavar="SIZE", help="HTTP ingest: spool size limit.")
@click.option(
    "--ingest-max-body-bytes",
    metavar="SIZE",
    help="HTTP ingest: request body limit (default 10MiB).",
)
@click.option(
    "--ingest-max-records",
    type=int,
    metavar="N",
    help="HTTP ingest: records per request (default 10000).",
)
@click.option(
    "--ingest-max-connections",
    type=int,
    metavar="N",
    help="Receivers: connections open at once, each (default 512).",
)
@click.option(
    "--ingest-header-timeout",
    metavar="DURATION",
    help="Receivers: close a new connection whose request (gRPC: HTTP/2 preface; forward, "
    "syslog: first bytes) takes longer (default 10s).",
)
@click.option(
    "--ingest-body-timeout",
    metavar="DURATION",
    help="Receivers: refuse a body or message that takes longer (default 30s).",
)
@click.option(
    "--ingest-keepalive-timeout",
    metavar="DURATION",
    help="Receivers: close a connection idle between requests this long (default 75s).",
)
@click.option(
    "--drain-quiet",
    metavar="DURATION",
    help="On SIGTERM, keep reading until no input has new data for this long (default 1s).",
)
@click.option(
    "--follow-symlinks",
    is_flag=True,
    default=None,
    help="Tail symlinks whose target is outside the glob's base directory (refused by default).",
)
@click.option(
    "--max-open-files",
    type=int,
    metavar="N",
    help="Tailed files held open at once; idle ones beyond are closed (default: half the limit).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Build and check everything a start would, print the graph, exit 0 (or 2 with the "
    "mistake) without reading or sending anything.",
)
@click.option(
    "--watch-config",
    is_flag=True,
    default=None,
    help="Reload the --config file when its content changes (checked every second), as on SIGHUP.",
)
@click.option(
    "--tap-allow-remote",
    is_flag=True,
    default=None,
    help="Serve the live tap (GET /tap/COMPONENT) to peers other than localhost too.",
)
@common_options(default_admin="0.0.0.0:8088")
@click.pass_context
def ship(ctx: click.Context, /, **params: Any) -> None:
    """Ship log files and HTTP-posted logs to an aggregator, losing no line.

    \b
    sidekick ship --input 'file:///var/log/app/*.log' --output file:///tmp/out.ndjson \\
                  --state-dir /var/lib/sidekick
    """
    init_logging(params)
    raise_open_files_limit()
    cfg = load_config(ctx, params)
    from sidekick.ship.app import run_shipper
    from sidekick.ship.prepare import check, prepare
    from sidekick.ship.reload import Reloading

    if params.get("check"):
        for line in check(cfg):
            click.echo(line)
        click.echo("The configuration is valid.")
        ctx.exit(0)
    prepared = prepare(cfg)
    config_file = params.get("config_file")
    if params.get("watch_config") and not config_file:
        raise ConfigError("--watch-config needs a --config file to watch; give one")
    # SIGHUP (and --watch-config) build the configuration again from the same file, flags
    # and environment; the shipper checks it before applying it.
    reloading = Reloading(
        load=lambda: load_config(ctx, params),
        watch=Path(config_file) if params.get("watch_config") and config_file else None,
    )

    def on_hup() -> None:
        logging.getLogger("sidekick.ship").info("Received SIGHUP; reloading the configuration.")
        reloading.requested.set()

    addr = admin_addr(params["admin_addr"])
    timeout = parse_duration(params["shutdown_timeout"], name="--shutdown-timeout")
    registry = CollectorRegistry()
    # Records are short-lived dicts of strings and ints, made by the million: collect
    # cycles less often (about 10% less CPU per line) and keep start-up objects out of it.
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)

    async def main(shutdown: Shutdown) -> int:
        try:
            complete = await run_shipper(
                cfg,
                shutdown,
                registry,
                admin_addr=addr,
                prepared=prepared,
                shutdown_timeout=timeout,
                reloading=reloading,
                tap_allow_remote=bool(params.get("tap_allow_remote")),
            )
        except UserError:
            raise
        except Exception as exc:
            # The task that died has logged its traceback; end with one line and exit 1 so
            # the container is restarted (what was not delivered is read again).
            logging.getLogger("sidekick.ship").error(
                "Stopped because a pipeline task failed: %s", exc
            )
            return 1
        # A drain cut short by --shutdown-timeout left lines unshipped (logged per file):
        # exit 1 so the container's status says so too.
        return 0 if complete else 1

    code = run(main, shutdown_timeout=timeout, on_hup=on_hup)
    ctx.exit(code)


@click.command("ship-tap")
@click.argument("component")
@click.option("--limit", type=int, default=0, help="Stop after N records (default: until Ctrl-C).")
@click.option(
    "--admin-addr",
    default="127.0.0.1:8088",
    show_default=True,
    metavar="HOST:PORT",
    help="The running shipper's admin server.",
)
def ship_tap(component: str, limit: int, admin_addr: str) -> None:
    """Print the records leaving COMPONENT of a running `sidekick ship`, as NDJSON.

    \b
    sidekick ship-tap no-probes --limit 20 --admin-addr 127.0.0.1:9080
    """
    import http.client
    from urllib.parse import quote

    from sidekick.cli.common import admin_addr as parse_addr

    addr = parse_addr(admin_addr)
    if limit < 0:
        raise ConfigError(f"--limit {limit} is negative; give 0 (no limit) or more")
    conn = http.client.HTTPConnection(addr.host, addr.port, timeout=None)
    try:
        conn.request("GET", f"/tap/{quote(component, safe='')}?limit={limit}")
        response = conn.getresponse()
    except OSError as exc:
        raise UserError(
            f"no shipper's admin server answers at {admin_addr} ({exc}); give its address with "
            "--admin-addr"
        ) from None
    if response.status != 200:
        text = response.read().decode(errors="replace").strip()
        raise UserError(f"tap {component!r} at {admin_addr}: {text}")
    try:
        while line := response.readline():
            click.echo(line.decode(errors="replace"), nl=False)
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()


def load_config(ctx: click.Context, params: dict[str, Any]) -> Any:
    from sidekick.ship.config import ShipConfig

    over = overrides(ctx, FLAGS)
    if params.get("fields"):
        try:
            flag_fields = key_values(params["fields"], "--field")
        except click.BadParameter as exc:
            raise ConfigError(f"--field {exc.message}") from None
        # --field adds to (and overrides keys of) the config file's fields, not replaces them.
        over["fields"] = {**_file_fields(params.get("config_file")), **flag_fields}
    env = os.environ
    over["host_name"] = socket.gethostname()
    for var, key in (
        ("POD_NAME", "pod_name"),
        ("POD_NAMESPACE", "pod_namespace"),
        ("CONTAINER_NAME", "container_name"),
    ):
        if env.get(var):
            over[key] = env[var]
    cfg: ShipConfig = build_config(
        ShipConfig, file=params.get("config_file"), section="ship", overrides=over
    )
    outputs = cfg.outputs.values() if isinstance(cfg.outputs, dict) else cfg.outputs
    for out in outputs:
        if not isinstance(out, str):
            out.url = expand_env(out.url, env)
    return cfg


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """``$(NAME)`` replaced by the environment variable NAME, as Kubernetes expands a
    container's args: an unset NAME stays as written, ``$$`` is one ``$``. Output URLs in the
    config file get this, so a manifest's env (``LOG_OUTPUT``) can pick where a graph's
    output ships."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(one, text)


def _file_fields(config_file: str | None) -> dict[str, Any]:
    if not config_file:
        return {}
    data = load_yaml_file(config_file)
    section = data.get("ship") if isinstance(data, dict) else None
    fields = section.get("fields") if isinstance(section, dict) else None
    return dict(fields) if isinstance(fields, dict) else {}
