"""``sidekick up``: the root tasks of a run and what is served about it.

Root tasks (all owned here):
  * ``pod <name>``  one per Pod: its lifecycle (``runner.PodRunner``), or a Job's Pods one
    after the other (``job.JobRunner``)
  * the admin server: ``GET /status`` (every Pod's status as JSON, shaped like the Pod API's
    ``status``), ``/healthz``, ``/readyz`` (200 when every Pod is Ready), ``/metrics``

The run ends when every Pod has ended (Job semantics) or on SIGTERM/SIGINT, which stop the
Pods gracefully; a second SIGINT kills every container at once. Whatever way it ends, every
process carrying this run's marker is killed before ``up`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from sidekick.core.addr import HostPort
from sidekick.core.admin import AdminServer
from sidekick.core.errors import ConfigError
from sidekick.core.runtime import Shutdown
from sidekick.pod.container import BackoffPolicy
from sidekick.pod.hygiene import Tracker, Watchdog, become_subreaper
from sidekick.pod.isolation import Isolation, IsolationProbe
from sidekick.pod.job import JobRunner
from sidekick.pod.manifest import Manifests
from sidekick.pod.output import Printer
from sidekick.pod.runner import PodRunner, check_ports

log = logging.getLogger("sidekick.up")


@dataclass
class UpConfig:
    manifests: Manifests
    run_dir: Path
    admin_addr: HostPort | None
    fast_backoff: bool = False
    colour: bool | None = None
    isolation: bool = True  # PID/mount namespaces and users where allowed (pod.isolation)
    isolation_probe: IsolationProbe | None = None  # started early by the CLI, else at start


async def up(cfg: UpConfig, shutdown: Shutdown) -> int:
    check_ports(cfg.manifests.pods)
    run_id = str(uuid.uuid4())
    tracker = Tracker(run_id)
    probe = cfg.isolation_probe or Isolation.start_probe(cfg.isolation)
    tracker.isolation = await asyncio.to_thread(probe.result)
    tracker.isolation.warn_unavailable()
    if not become_subreaper():
        log.warning("Cannot become a child subreaper; orphaned grandchildren go to init.")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGCHLD, tracker.reap_orphans)
    printer = Printer(colour=cfg.colour)
    printer.width = max(
        len(f"{p.name}/{c.name}") for p in cfg.manifests.pods for c in p.all_containers
    )
    backoff = BackoffPolicy.fast() if cfg.fast_backoff else BackoffPolicy()
    registry = CollectorRegistry()
    ready_gauge = Gauge(
        "sidekick_up_container_ready",
        "1 when the container is ready",
        ["pod", "container"],
        registry=registry,
    )
    restarts = Gauge(
        "sidekick_up_container_restarts",
        "Restarts of the container",
        ["pod", "container"],
        registry=registry,
    )
    pods: list[PodRunner | JobRunner] = []

    def on_change() -> None:
        for pr in pods:
            for r in pr.runners.values():
                ready_gauge.labels(pr.pod.name, r.spec.name).set(int(r.status.ready))
                restarts.labels(pr.pod.name, r.spec.name).set(r.status.restarts)

    try:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        for pod in cfg.manifests.pods:
            kind = JobRunner if pod.job is not None else PodRunner
            pods.append(kind(pod, cfg.manifests, cfg.run_dir, tracker, printer, backoff, on_change))
        (cfg.run_dir / "run-id").write_text(run_id + "\n")
    except OSError as exc:
        raise ConfigError(
            f"run dir {str(cfg.run_dir)!r} cannot be prepared ({exc.strerror}: {exc.filename}); "
            "choose another with --run-dir"
        ) from None

    admin: AdminServer | None = None
    if cfg.admin_addr is not None:

        def ready() -> tuple[bool, str]:
            waiting = [p.pod.name for p in pods if not p.ready]
            return (not waiting, "ok" if not waiting else "not ready: " + ", ".join(waiting))

        admin = AdminServer(cfg.admin_addr, registry, ready=ready)

        async def status(request: web.Request) -> web.Response:
            body: dict[str, Any] = {"runId": run_id, "pods": [p.status_json() for p in pods]}
            return web.json_response(body)

        admin.add_route("GET", "/status", status)
        await admin.start()
        (cfg.run_dir / "admin-port").write_text(f"{admin.port}\n")

    log.info(
        "Running %d pod(s): %s; run dir %s.",
        len(pods),
        ", ".join(p.pod.name for p in pods),
        cfg.run_dir,
    )
    watchdog: Watchdog | None = None
    try:
        watchdog = Watchdog(run_id)
        tracker.own.add(watchdog.proc.pid)
    except OSError as exc:
        log.warning("Cannot start the watchdog (%s); a SIGKILL of up leaves its pods running.", exc)
    tasks = [asyncio.create_task(p.run(), name=f"pod {p.pod.name}") for p in pods]
    stop_waiter: asyncio.Future[Any] = asyncio.ensure_future(shutdown.requested.wait())
    try:
        all_done: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*tasks, return_exceptions=True)
        )
        await asyncio.wait([stop_waiter, all_done], return_when=asyncio.FIRST_COMPLETED)
        if not all_done.done():
            log.info("Stopping %d pod(s).", len(pods))
            for p in pods:
                p.stop()
        results = await all_done
        codes = []
        for p, res in zip(pods, results, strict=True):
            if isinstance(res, BaseException):
                log.error("Pod %s: %s", p.pod.name, res, exc_info=res)
                codes.append(1)
            else:
                codes.append(res)
        return max(codes, default=0)
    finally:
        stop_waiter.cancel()
        if not all(t.done() for t in tasks):
            # Cancelled (a second Ctrl-C or the shutdown timeout): kill now, tidy up after.
            tracker.kill_marked()
        for t in tasks:
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        left = tracker.marked()
        if left:
            log.warning("Killing %d leftover process(es) of this run.", len(left))
            tracker.kill_marked()
        if watchdog is not None:
            watchdog.close()
        tracker.reap_orphans()
        loop.remove_signal_handler(signal.SIGCHLD)
        if admin is not None:
            await admin.aclose()
