"""One container: its environment, its process, its probes, hooks, restarts and status.

``ContainerRunner.supervise()`` runs the container until it should not be restarted any more
(``restartPolicy``: Always restarts on every exit, OnFailure on a non-zero exit, Never not at
all), waiting the kubelet's back-off between restarts: none before the first, then 10 s
doubling to 5 min, reset once a run lasted 10 min (``--fast-backoff``: 0.1 s doubling to 2 s,
reset after 4 s). A failed liveness or
startup probe, or a failed postStart hook, kills the container (preStop first, then SIGTERM,
then SIGKILL after the grace period) and counts as an exit.

Left out: the declared and base variables, built the kubelet's way (``_container_env``), the
status record and its summary (``_container_status``), the probes and hooks themselves
(``probes``), and starting the process in the container's namespaces
(``_container_isolation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from sidekick.core.backoff import Backoff
from sidekick.core.durations import format_duration
from sidekick.pod import readonly, termination
from sidekick.pod._container_env import base_env, declared_env
from sidekick.pod._container_isolation import ContainerIsolation, main_pid
from sidekick.pod._container_status import Status, _rfc3339, exit_code
from sidekick.pod.expand import expand
from sidekick.pod.hygiene import Tracker, kill_group, spawn
from sidekick.pod.images import implicit_args, stop_signal
from sidekick.pod.imagetools import tool_dir
from sidekick.pod.manifest import Container, Manifests, Pod
from sidekick.pod.output import Printer, pump
from sidekick.pod.paths import PodDirs, check_container_paths
from sidekick.pod.probes import ActionContext, ProbeWorker, run_action

log = logging.getLogger("sidekick.up")


# The least time between a container's stop signal and SIGKILL (the kubelet's killContainer,
# minimumGracePeriodInSeconds).
MIN_STOP_WINDOW = 2.0


@dataclass
class BackoffPolicy:
    initial: float = 10.0
    maximum: float = 300.0
    reset_after: float = 600.0

    @classmethod
    def fast(cls) -> BackoffPolicy:
        return cls(0.1, 2.0, 4.0)


class ContainerRunner:
    def __init__(
        self,
        pod: Pod,
        spec: Container,
        manifests: Manifests,
        dirs: PodDirs,
        tracker: Tracker,
        printer: Printer,
        session: Callable[[], aiohttp.ClientSession],
        restart_policy: str,
        backoff: BackoffPolicy,
        grace: float,
        on_change: Callable[[ContainerRunner], None],
    ) -> None:
        self.pod = pod
        self.spec = spec
        self.dirs = dirs
        self.tracker = tracker
        self.printer = printer
        self.restart_policy = restart_policy
        self.policy = backoff
        self.backoff = Backoff(initial=backoff.initial, maximum=backoff.maximum, jitter=0)
        self.grace = grace
        self.on_change = on_change
        self.name = f"{pod.name}/{spec.name}"
        self.status = Status()
        self.started = asyncio.Event()
        self.post_started = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self._stop_event = asyncio.Event()
        self._kill_task: asyncio.Task[None] | None = None
        self.probes: dict[str, ProbeWorker] = {}
        self._on_started: Callable[[], None] = lambda: None

        translate = dirs.translators[spec.name]
        declared = declared_env(pod, spec, manifests)
        env = base_env(pod, spec, tracker.run_id)
        env.update({k: translate(v) for k, v in declared.items()})
        conf = translate("/etc/nginx/nginx.conf")
        tools = tool_dir(
            spec.image, dirs.state[spec.name], "" if conf.startswith("/etc/") else conf
        )
        if tools:  # the image's own watch and nginx (sidekick.pod.imagetools)
            env["PATH"] = f"{tools}:{env.get('PATH', '')}"
        argv = implicit_args(spec.image, [expand(a, declared) for a in [*spec.command, *spec.args]])
        self.argv = [translate(a) for a in argv]
        ro_paths = dirs.read_only.get(spec.name, [])
        self.wrapped = bool(ro_paths) and readonly.available()
        self.spawn_argv = readonly.wrap(self.argv, ro_paths) if self.wrapped else self.argv
        self.cwd = check_container_paths(spec, translate) or None
        self.ctx = ActionContext(
            env=env,
            expand_env=declared,
            cwd=self.cwd,
            translate=translate,
            ports={p.name: p.port for p in spec.ports if p.name},
            tracker=tracker,
            session=session,
            enter=self._enter,
        )
        # Set by the PodRunner where containers are isolated (sidekick.pod._container_isolation).
        self.isolation: ContainerIsolation | None = None
        # Set by the PodRunner when the Pod starts: the loop time its probes' clock counts from.
        self.probe_epoch: float | None = None
        self.last_returncode: int | None = None
        self.last_state: dict[str, Any] = {}  # the previous instance's end, as lastState
        self.stop_signal = (
            signal.Signals[spec.stop_signal]
            if spec.stop_signal
            else stop_signal(spec.image, spec.command)
        )

    # --- status ----------------------------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        before = self.status.summary()
        for k, v in changes.items():
            setattr(self.status, k, v)
        if self.status.summary() != before:
            self.on_change(self)

    def status_json(self) -> dict[str, Any]:
        s = self.status
        out: dict[str, Any] = {
            "name": self.spec.name,
            "type": self.spec.kind,
            "state": s.state,
            "reason": s.reason,
            "ready": s.ready,
            "started": s.started,
            "restartCount": s.restarts,
            "command": self.argv,
        }
        if s.message:
            out["message"] = s.message
        if s.exit_code is not None:
            out["exitCode"] = s.exit_code
        if s.pid is not None and s.state == "Running":
            out["pid"] = s.pid
        if s.started_at:
            out["startedAt"] = _rfc3339(s.started_at)
        if s.finished_at and s.state == "Terminated":
            out["finishedAt"] = _rfc3339(s.finished_at)
        if self.last_state:
            out["lastState"] = self.last_state
        return out

    # --- lifecycle -------------------------------------------------------------------------

    async def supervise(self) -> int:
        """Run, restarting per policy, until done or stopped; return the last exit code."""
        while True:
            began = time.monotonic()
            code = await self._run_once()
            if self.stopping:
                return code
            # A container killed for a failed liveness or startup probe is restarted under
            # any policy but Never, whatever its exit code (the kubelet decides so when it
            # kills it: computePodActions, shouldRestartOnFailure).
            probe_killed = self._probe_killed
            restart = self.restart_policy == "Always" or (
                self.restart_policy == "OnFailure" and (code != 0 or probe_killed)
            )
            if not restart:
                return code
            if time.monotonic() - began >= self.policy.reset_after:
                self.backoff.reset()
                self._backing_off = False
            if not self._backing_off:
                # The kubelet restarts at once after the first exit (or the first after a
                # reset): doBackOff finds no back-off entry for the container yet, and only
                # then starts one (kuberuntime_manager.go; kubernetes/kubernetes#133472).
                self._backing_off = True
                log.info("%s exited with code %d; restarting it.", self.name, code)
            else:
                delay = self.backoff.next_delay()
                self._set(
                    state="Waiting",
                    reason="CrashLoopBackOff",
                    message=f"back-off {format_duration(delay)} restarting failed container",
                )
                log.info(
                    "%s exited with code %d; restarting in %s.",
                    self.name,
                    code,
                    format_duration(delay),
                )
                # asyncio.timeout, not wait_for, throughout: Python 3.11's wait_for can
                # swallow a cancellation that arrives just as the awaited thing finishes.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop_event.wait()
            if self.stopping:
                return code
            self.status.restarts += 1

    async def _run_once(self) -> int:
        self._probe_killed = False
        self._set(state="Waiting", reason="ContainerCreating", message="", ready=False)
        log_file = self.dirs.log_file(self.spec.name)
        log_offset = log_file.stat().st_size if log_file.exists() else 0
        term_file = self.dirs.termination.get(self.spec.name)
        if term_file is not None:
            termination.reset(term_file)
        try:
            spawn_argv = self.spawn_argv
            if self.isolation is not None:
                self.isolation.main_pid = None
                spawn_argv = await self.isolation.argv(self.argv, self.ctx.env, self.cwd)
            if self.wrapped or self.isolation is not None:
                # Started through a wrapper, a missing command would only show as exit code
                # 127; report it as the StartError it is.
                readonly.check_runnable(self.argv[0], self.ctx.env.get("PATH"), self.cwd)
            proc, stdout, _pipe = await spawn(self.tracker, spawn_argv, self.ctx.env, self.cwd)
        except OSError as exc:
            msg = f"cannot run {self.argv[0]!r}: {exc.strerror}"
            log.error("%s: %s; check the command.", self.name, msg)
            self._set(
                state="Terminated",
                reason="StartError",
                message=msg,
                exit_code=128,
                finished_at=time.time(),
            )
            return 128
        self.proc = proc
        if self.stopping:  # stopped while this instance was being started
            self._kill_task = asyncio.create_task(
                self._terminate(proc, self.grace, False), name=f"stop {self.name}"
            )
        else:
            self._kill_task = None
        reader = asyncio.create_task(
            pump(stdout, self.dirs.log_file(self.spec.name), self.printer, self.name),
            name=f"output {self.name}",
        )
        pid = await self._main_pid(proc)
        self._set(
            state="Running",
            reason="",
            pid=pid,
            started_at=time.time(),
            exit_code=None,
            started=False,
        )
        probe_tasks: list[asyncio.Task[None]] = []
        try:
            if self.spec.post_start is not None:
                ok, why = await self._post_start(proc)
                if not ok and proc.returncode is None:
                    log.warning("%s: postStart hook failed (%s); killing it.", self.name, why)
                    self._set(message=f"postStart hook failed: {why}")
                    # As every kill of the kubelet's (killContainer), preStop runs first.
                    self.kill("FailedPostStartHook")
            self.post_started.set()
            if proc.returncode is None and self._kill_task is None:
                probe_tasks = self._start_probes()
            await proc.wait()
            if self._kill_task is not None:
                await self._kill_task
        finally:
            for t in probe_tasks:
                t.cancel()
            if probe_tasks:
                # asyncio.wait lets a cancellation of this task through (suppressing the
                # probes' CancelledError around `await t` would swallow it), and the bound
                # keeps a probe that ignores its cancellation from holding up the stop.
                _done, stuck = await asyncio.wait(probe_tasks, timeout=5.0)
                for t in stuck:
                    log.warning("%s: %s did not stop when cancelled.", self.name, t.get_name())
            self.probes = {}
            if proc.returncode is None:  # cancelled: leave nothing running
                kill_group(proc.pid, signal.SIGKILL)
            await self._clean_up(proc, reader)
        code = exit_code(proc.returncode if proc.returncode is not None else -9)
        self.last_returncode = code
        # The runtime's reason, by exit code (containerd's toCRIContainerStatus: Completed
        # for 0, Error otherwise), also for a kill after a failed probe or postStart hook:
        # the kubelet's kill reason only picks the grace period and words the event.
        reason = "Completed" if code == 0 else "Error"
        self._probe_killed = self._kill_reason in ("LivenessProbeFailed", "StartupProbeFailed")
        finished = time.time()
        self.last_state = {
            "exitCode": code,
            "reason": reason,
            "finishedAt": _rfc3339(finished),
        }
        changes: dict[str, Any] = {}
        if term_file is not None:
            text = termination.message(
                term_file, self.spec.termination_message_policy, code, log_file, log_offset
            )
            if text:
                changes["message"] = self.last_state["message"] = text
        self._set(
            state="Terminated",
            reason=reason,
            exit_code=code,
            ready=False,
            finished_at=finished,
            **changes,
        )
        self._kill_reason = ""
        return code

    _kill_reason = ""
    _backing_off = False  # a restart has been made since the back-off was last reset
    _probe_killed = False  # the last instance was killed for a failed liveness/startup probe

    async def _post_start(self, proc: asyncio.subprocess.Process) -> tuple[bool, str]:
        assert self.spec.post_start is not None
        # No time limit, as the kubelet runs a postStart hook (RunInContainer with a timeout
        # of 0); the container's end or a stop ends it.
        hook = asyncio.create_task(run_action(self.spec.post_start, self.ctx, None, hook=True))
        exited = asyncio.create_task(proc.wait())
        await asyncio.wait({hook, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if not hook.done():
            hook.cancel()
            await asyncio.wait({hook})
            return True, "container exited"
        return hook.result()

    async def _clean_up(self, proc: asyncio.subprocess.Process, reader: asyncio.Task[None]) -> None:
        # The kubelet kills every process of a container when its main process ends.
        kill_group(proc.pid, signal.SIGKILL)
        if self.tracker.marked(self.name):
            self.tracker.kill_marked(self.name)
        self.tracker.own.discard(proc.pid)
        try:
            async with asyncio.timeout(5.0):
                await asyncio.shield(reader)
        except TimeoutError:
            reader.cancel()
            log.warning("%s: output pipe still open after exit; stopped reading it.", self.name)

    def _start_probes(self) -> list[asyncio.Task[None]]:
        tasks: list[asyncio.Task[None]] = []
        spec = self.spec

        def later() -> None:
            for kind, probe in (
                ("readiness", spec.readiness_probe),
                ("liveness", spec.liveness_probe),
            ):
                if probe is not None:
                    worker = ProbeWorker(
                        kind, probe, self.ctx, self._probe_changed(kind), self.probe_epoch
                    )
                    self.probes[kind] = worker
                    tasks.append(
                        asyncio.create_task(worker.run(), name=f"probe {kind} {self.name}")
                    )

        def on_started() -> None:
            self._set(started=True, ready=spec.readiness_probe is None)
            self.started.set()
            later()

        self._on_started = on_started
        if spec.startup_probe is not None:
            worker = ProbeWorker(
                "startup",
                spec.startup_probe,
                self.ctx,
                self._probe_changed("startup"),
                self.probe_epoch,
            )
            self.probes["startup"] = worker
            tasks.append(asyncio.create_task(worker.run(), name=f"probe startup {self.name}"))
        else:
            on_started()
        return tasks

    def _probe_changed(self, kind: str) -> Callable[[bool, str], None]:
        def changed(ok: bool, reason: str) -> None:
            if kind == "startup":
                if ok:
                    self.probes["startup"].on_change = lambda ok, r: None
                    self._on_started()
                    # The kubelet stops the startup probe once it has passed.
                    this = asyncio.current_task()
                    if this is not None:
                        asyncio.get_running_loop().call_soon(this.cancel)
                else:
                    log.warning("%s: startup probe failed (%s); killing it.", self.name, reason)
                    self.kill("StartupProbeFailed", grace=self._probe_grace("startup"))
            elif kind == "readiness":
                if not ok:
                    log.info("%s: readiness probe failed (%s).", self.name, reason)
                self._set(ready=ok)
            elif not ok:
                log.warning("%s: liveness probe failed (%s); restarting it.", self.name, reason)
                self.kill("LivenessProbeFailed", grace=self._probe_grace("liveness"))

        return changed

    def _probe_grace(self, kind: str) -> float | None:
        probe = self.probes[kind].probe if kind in self.probes else None
        return probe.grace_period if probe is not None else None

    def kill(self, reason: str, *, grace: float | None = None) -> None:
        """Terminate the running instance (the supervise loop then decides on a restart).

        ``grace`` is a probe's own terminationGracePeriodSeconds, which wins over the Pod's.
        """
        if self._kill_task is not None or self.proc is None or self.proc.returncode is not None:
            return
        self._kill_reason = reason
        for worker in self.probes.values():
            worker.on_change = lambda ok, r: None
        self._kill_task = asyncio.create_task(
            self._terminate(self.proc, self.grace if grace is None else grace, True),
            name=f"kill {self.name}",
        )

    async def stop(self, grace: float, turn: asyncio.Future[Any] | None = None) -> None:
        """Stop for good: no restart, preStop, SIGTERM, SIGKILL after ``grace``.

        ``turn`` is what must end before the stop signal (a sidecar's: the main containers and
        every later sidecar). As in the kubelet, preStop runs at once, the wait counts toward
        the grace period, and at least 2 s are left for the signal.
        """
        self.stopping = True
        self._stop_event.set()
        grace = max(grace, 1.0)  # the kubelet's pod worker stops a Pod with at least 1 s
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if self._kill_task is None:
            self.grace = grace
            self._kill_task = asyncio.create_task(
                self._terminate(proc, grace, True, turn), name=f"stop {self.name}"
            )
        await asyncio.shield(self._kill_task)

    async def _terminate(
        self,
        proc: asyncio.subprocess.Process,
        grace: float,
        run_pre_stop: bool,
        turn: asyncio.Future[Any] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for worker in self.probes.values():
            worker.on_change = lambda ok, r: None
        if run_pre_stop and self.spec.pre_stop is not None and grace <= 0:
            # killContainer runs preStop only with a grace period above 0; the stop signal
            # still gets the minimum window below.
            log.info(
                "%s: grace period is 0 s; preStop hook skipped, as the kubelet does.", self.name
            )
        elif run_pre_stop and self.spec.pre_stop is not None:
            self._set(ready=False)
            # An exec hook runs in its container: when the container ends, the hook ends too
            # (`nginx -s quit; while killall -0 nginx; ...` must not outlive nginx).
            hook = asyncio.ensure_future(run_action(self.spec.pre_stop, self.ctx, grace, hook=True))
            exited = asyncio.ensure_future(proc.wait())
            # The kubelet waits for preStop at most the grace period (executePreStopHook),
            # whatever the hook (a sleep hook longer than it included).
            await asyncio.wait({hook, exited}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            overran = not hook.done() and not exited.done()
            if not hook.done():
                hook.cancel()
                await asyncio.wait({hook})
            if overran:
                exited.cancel()
                log.warning(
                    "%s: preStop hook did not finish within the grace period of %s; "
                    "stopping the container.",
                    self.name,
                    format_duration(grace),
                )
            else:
                ok, why = (False, "") if hook.cancelled() else hook.result()
                if not ok and not exited.done():  # killed with its container's namespace?
                    await asyncio.wait({exited}, timeout=0.5)
                exited.cancel()
                if hook.cancelled() or (not ok and proc.returncode is not None):
                    log.info("%s ended during its preStop hook, which ended with it.", self.name)
                elif not ok:
                    log.warning("%s: preStop hook failed (%s).", self.name, why)
        if turn is not None and proc.returncode is None:
            await asyncio.wait({turn}, timeout=max(0.0, deadline - loop.time()))
        if proc.returncode is None:
            # The kubelet never stops a container with less than 2 s before SIGKILL: not after
            # a long preStop or wait for its turn, nor with a grace period of 0 or 1.
            deadline = max(deadline, loop.time() + MIN_STOP_WINDOW)
            target = await self._main_pid(proc)
            with contextlib.suppress(ProcessLookupError):
                if proc.returncode is None:
                    os.kill(target, self.stop_signal)
            try:
                async with asyncio.timeout_at(deadline):
                    await proc.wait()
            except TimeoutError:
                log.warning(
                    "%s did not stop within the grace period of %s; sending SIGKILL.",
                    self.name,
                    format_duration(grace),
                )
                kill_group(proc.pid, signal.SIGKILL)
                if target != proc.pid:  # it may have left the group
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(target, signal.SIGKILL)
                await proc.wait()

    async def _main_pid(self, proc: asyncio.subprocess.Process) -> int:
        """The pid signals go to: the container's own first process when isolated.

        ``unshare --fork`` neither forwards SIGTERM nor SIGQUIT (it blocks the one and dies of
        the other), so the process inside the namespace is signalled directly, once it has
        ``exec``ed past the setup (a signal to PID 1 before it has a handler is lost).
        """
        if self.isolation is None:
            return proc.pid
        if self.isolation.main_pid is None:
            self.isolation.main_pid = await main_pid(proc.pid, lambda: proc.returncode is not None)
        return self.isolation.main_pid or proc.pid

    def _enter(self, argv: list[str], cwd: str | None) -> list[str]:
        """An exec probe's or hook's command, run in the container's namespaces and user."""
        return argv if self.isolation is None else self.isolation.enter(argv, cwd)
