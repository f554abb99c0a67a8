"""The lifecycle of one Pod, in the kubelet's order.

1. Init containers run one by one. A regular one must exit 0 before the next starts; if it
   fails it is restarted with back-off, unless ``restartPolicy: Never``, which fails the Pod.
   A native sidecar (``restartPolicy: Always``) is started and the next init container waits
   until it has *started*: its startupProbe succeeded, or, without one, its process runs and
   its postStart hook finished. Sidecars are restarted whenever they exit.
2. Main containers start in order (each after the previous one's postStart hook).
3. The Pod ends when it is stopped (Ctrl-C, SIGTERM), evicted (an emptyDir over its
   sizeLimit), or, under ``restartPolicy`` Never or OnFailure, when every main container has
   exited for good (Job semantics). Then the main containers are stopped together, and after
   them the sidecars one by one in reverse order, each with preStop, SIGTERM and SIGKILL
   after what is left of ``terminationGracePeriodSeconds`` (at least 2 s, as the kubelet gives).

Phase: Pending (init), Running, Succeeded (all main containers exited 0), Failed. A Pod
stopped from outside keeps its phase, with reason Stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from sidekick.core.errors import ConfigError
from sidekick.pod import tmpfs
from sidekick.pod._container_isolation import close_pod, prepare_pod
from sidekick.pod.container import BackoffPolicy, ContainerRunner
from sidekick.pod.hygiene import Tracker
from sidekick.pod.isolation import Isolation
from sidekick.pod.manifest import Manifests, Pod
from sidekick.pod.output import Printer
from sidekick.pod.paths import prepare

log = logging.getLogger("sidekick.up")


# Reasons for which the kubelet itself fails a running Pod (and stops it).
FAILED_BY_KUBELET = ("Evicted", "DeadlineExceeded")


def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def port_in_use(port: int) -> bool:
    """True when something on this machine already listens on TCP ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def check_ports(pods: list[Pod]) -> None:
    """Refuse to start when a declared TCP containerPort is already taken on this machine."""
    problems = []
    claimed: dict[int, str] = {}
    for pod in pods:
        for c in pod.all_containers:
            for p in c.ports:
                if p.protocol != "TCP":
                    continue
                who = f"pod {pod.name!r} container {c.name!r}"
                if p.port in claimed:
                    problems.append(
                        f"{who}: containerPort {p.port} is also declared by {claimed[p.port]}; "
                        "pods share this machine's network here, so change one of them"
                    )
                elif port_in_use(p.port):
                    problems.append(
                        f"{who}: containerPort {p.port} is already in use on this machine; "
                        "stop what listens there or change the port"
                    )
                claimed[p.port] = who
    if problems:
        raise ConfigError("\n".join(problems))


class PodRunner:
    def __init__(
        self,
        pod: Pod,
        manifests: Manifests,
        run_dir: Path,
        tracker: Tracker,
        printer: Printer,
        backoff: BackoffPolicy,
        on_change: Callable[[], None],
    ) -> None:
        self.pod = pod
        self.manifests = manifests
        self.tracker = tracker
        self.printer = printer
        self.backoff = backoff
        self.on_change = on_change
        self.dirs = prepare(pod, manifests, run_dir)
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.runners: dict[str, ContainerRunner] = {}
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self.started_at = time.time()
        self.ended = False
        for c in pod.all_containers:
            if c.kind == "init":
                policy = "Never" if pod.restart_policy == "Never" else "OnFailure"
            elif c.kind == "sidecar":
                policy = "Always"
            else:
                policy = pod.restart_policy
            self.runners[c.name] = ContainerRunner(
                pod,
                c,
                manifests,
                self.dirs,
                tracker,
                printer,
                self.session,
                policy,
                backoff,
                pod.grace_period,
                self._changed,
            )
        iso = tracker.isolation or Isolation("none")
        self.isolated = prepare_pod(pod, self.dirs, iso, warn=tracker.isolation is not None)
        for name, plan in self.isolated.items():
            self.runners[name].isolation = plan

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Probes must not share keep-alive connections: each probe is a fresh request.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True), auto_decompress=False
            )
        return self._session

    def _changed(self, runner: ContainerRunner) -> None:
        log.info("%s %s", runner.name, runner.status.summary())
        self.write_status()
        self.on_change()

    @property
    def ready(self) -> bool:
        return self.phase == "Running" and all(
            r.status.ready for r in self.runners.values() if r.spec.kind != "init"
        )

    def status_json(self) -> dict[str, Any]:
        pod = self.pod
        return {
            "name": pod.name,
            "namespace": pod.namespace,
            "phase": self.phase,
            "reason": self.reason,
            "message": self.message,
            "ready": self.ready,
            "ended": self.ended,
            "podIP": "127.0.0.1",
            "runDir": str(self.dirs.root),
            "initContainerStatuses": [
                r.status_json() for r in self.runners.values() if r.spec.kind != "main"
            ],
            "containerStatuses": [
                r.status_json() for r in self.runners.values() if r.spec.kind == "main"
            ],
        }

    def write_status(self) -> None:
        tmp = self.dirs.root / "status.json.tmp"
        tmp.write_text(json.dumps(self.status_json(), indent=2))
        tmp.replace(self.dirs.root / "status.json")

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Run the pod to its end; return 0 if it succeeded or was stopped, else 1."""
        tasks: dict[str, asyncio.Task[int]] = {}
        sidecars: list[ContainerRunner] = []
        watchers = [
            asyncio.create_task(self._watch_sizes(), name=f"sizes {self.pod.name}"),
            asyncio.create_task(self._watch_deadline(), name=f"deadline {self.pod.name}"),
        ]
        # The kubelet starts every probe's clock when it adds the Pod (see ProbeWorker).
        epoch = asyncio.get_running_loop().time()
        for r in self.runners.values():
            r.probe_epoch = epoch
        self.write_status()
        try:
            failed = await self._run_inits(tasks, sidecars)
            if failed is None:
                self.phase = "Running"
                self.write_status()
                failed = await self._run_mains(tasks)
            if self._stop.is_set() and self.reason not in FAILED_BY_KUBELET:
                # Stopped from outside: the phase stays what it was, as for a deleted Pod.
                self.reason = "Stopped"
                return 0
            self.phase = "Failed" if failed else "Succeeded"
            return 1 if failed else 0
        finally:
            try:
                await self._shut_down(tasks, sidecars)
            finally:
                # Memory volumes (tmpfs) end with their Pod, however it ends.
                tmpfs.unmount_under(self.dirs.root / "volumes")
            for w in watchers:
                w.cancel()
            if self._session is not None:
                await self._session.close()
            await close_pod(self.isolated)
            if self.reason in FAILED_BY_KUBELET:
                self.phase = "Failed"
            self.ended = True
            self.write_status()
            self.on_change()

    async def _until_stopped(self, aw: asyncio.Future[Any] | asyncio.Task[Any]) -> bool:
        """Wait for ``aw`` or a stop; return True if stopped first."""
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({stop, aw}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        return self._stop.is_set()

    async def _run_inits(
        self, tasks: dict[str, asyncio.Task[int]], sidecars: list[ContainerRunner]
    ) -> bool | None:
        for c in self.pod.init_containers:
            runner = self.runners[c.name]
            task = asyncio.create_task(runner.supervise(), name=f"container {runner.name}")
            tasks[c.name] = task
            if c.kind == "sidecar":
                sidecars.append(runner)
                started = asyncio.create_task(runner.started.wait())
                try:
                    either = asyncio.ensure_future(
                        asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
                    )
                    if await self._until_stopped(either):
                        return self.reason in FAILED_BY_KUBELET
                    if task.done() and not runner.started.is_set():
                        return False  # only a stop ends a sidecar
                finally:
                    started.cancel()
                continue
            if await self._until_stopped(task):
                return self.reason in FAILED_BY_KUBELET
            code = task.result()
            if code != 0:
                self.reason = "InitContainerFailed"
                self.message = f"init container {c.name!r} exited with code {code}"
                log.error("Pod %s failed: %s.", self.pod.name, self.message)
                return True
        return None

    async def _run_mains(self, tasks: dict[str, asyncio.Task[int]]) -> bool:
        mains: list[asyncio.Task[int]] = []
        for c in self.pod.containers:
            runner = self.runners[c.name]
            task = asyncio.create_task(runner.supervise(), name=f"container {runner.name}")
            tasks[c.name] = task
            mains.append(task)
            # The kubelet starts the next container after this one's postStart hook.
            if c.post_start is not None:
                running = asyncio.create_task(runner.post_started.wait())
                either = asyncio.ensure_future(
                    asyncio.wait({running, task}, return_when=asyncio.FIRST_COMPLETED)
                )
                stopped = await self._until_stopped(either)
                running.cancel()
                either.cancel()
                if stopped:
                    break
        # return_exceptions: after a second Ctrl-C cancels the containers, nothing awaits
        # this gather any more, and a cancelled one would be logged as never retrieved.
        gathered = asyncio.gather(*mains, return_exceptions=True)
        if await self._until_stopped(gathered):
            return self.reason in FAILED_BY_KUBELET
        codes = [t.result() for t in mains]
        self.reason = "Completed"
        failed = any(codes)
        log.info(
            "Pod %s completed: every main container exited (%s).",
            self.pod.name,
            ", ".join(
                f"{c.name}={code}" for c, code in zip(self.pod.containers, codes, strict=True)
            ),
        )
        return failed

    async def _shut_down(
        self, tasks: dict[str, asyncio.Task[int]], sidecars: list[ContainerRunner]
    ) -> None:
        grace = self.pod.grace_period
        mains = [self.runners[c.name] for c in self.pod.containers]
        regular_inits = [self.runners[c.name] for c in self.pod.init_containers if c.kind == "init"]
        first = [*mains, *regular_inits]
        # As the kubelet: every container's stop begins now (so every preStop hook runs at
        # once); a sidecar's stop signal waits for the main containers and every later sidecar.
        turn: asyncio.Future[Any] = asyncio.gather(*(r.stop(grace) for r in first))
        stops = [turn]
        for r in reversed(sidecars):
            turn = asyncio.create_task(r.stop(grace, turn), name=f"stop {r.name}")
            stops.append(turn)
        await asyncio.gather(*stops)
        if tasks:
            # Not `await t` under suppress(CancelledError): that would swallow a cancellation
            # of this task (a second Ctrl-C) along with the container task's own.
            await asyncio.wait(tasks.values())

    async def _watch_deadline(self) -> None:
        """Fail the Pod once it has been active for ``activeDeadlineSeconds``, as the kubelet
        does (its activeDeadlineHandler, counting from the Pod's start): reason
        DeadlineExceeded, phase Failed, and its containers stopped with the grace period."""
        if self.pod.active_deadline is None:
            return
        await asyncio.sleep(self.pod.active_deadline)
        self.reason = "DeadlineExceeded"
        self.message = "Pod was active on the node longer than the specified deadline"
        log.error("Pod %s failed: %s.", self.pod.name, self.message)
        self.phase = "Failed"
        self.stop()

    async def _watch_sizes(self) -> None:
        if not self.dirs.size_limits:
            return
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            for name, path, limit in self.dirs.size_limits:
                used = await asyncio.to_thread(_du, path)
                if used > limit:
                    self.reason = "Evicted"
                    self.message = (
                        f"emptyDir volume {name!r} uses {used} bytes, over its sizeLimit of "
                        f"{limit} bytes"
                    )
                    log.error("Pod %s evicted: %s.", self.pod.name, self.message)
                    self.phase = "Failed"
                    self.stop()
                    return
            # Every second, but never more than 5% of the time walking big volumes.
            await asyncio.sleep(max(1.0, 20 * (loop.time() - began)))
