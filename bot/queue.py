"""The job queue and the engine processes that work through it.

`JobQueue` is plain asyncio: bounded, a per-member limit, first in first out,
positions kept current (each job's listeners hear about every change), and
cancellation of waiting and running jobs. `EnginePool` keeps N engine processes
(engine/worker.py, started with multiprocessing "spawn") and feeds each one job at
a time. Events come back on a reader thread per process and are handed to the
event loop with `call_soon_threadsafe`, so the loop never blocks on the pipe.

A dead engine is noticed by end-of-file on its pipe (the bot closes its copy of the
child's end, so the pipe reaches EOF exactly when the process is gone) or by its
process sentinel: the job it was running fails with `ErrorKind.ENGINE_DIED`, the
process is started again, and the next job runs. A start that fails because of the
weights is a host problem that restarting does not fix: that engine is marked
broken at once, and when every engine is broken the waiting jobs fail with the
reason and new ones are refused. Other start failures are retried with a back-off,
`restart_limit` times in a row. Imports engine.jobs and engine.worker only (no TF).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.jobs import (
    CancelJob,
    EngineReady,
    ErrorKind,
    JobFailed,
    JobRequest,
    JobResult,
    Progress,
)
from engine.worker import EXIT_WEIGHTS, WorkerOptions
from engine.worker import main as worker_main

log = logging.getLogger(__name__)

Outcome = JobResult | JobFailed


def new_job_id() -> str:
    return secrets.token_hex(4)


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(eq=False)
class Job:
    """One request on its way through the queue and an engine."""

    request: JobRequest
    user_id: int
    channel_id: int = 0
    guild_id: int = 0
    label: str = ""
    state: JobState = JobState.QUEUED
    position: int = 0
    progress: Progress | None = None
    engine: str = ""
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    cancelled_by: int | None = None
    cancel_reason: str = ""
    attempts: int = 0
    listeners: list[Callable[[Job], None]] = field(default_factory=list)
    _outcome: asyncio.Future[Outcome] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.request.job_id

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.state.value}, user={self.user_id}, position={self.position})"

    @property
    def finished(self) -> bool:
        return self.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

    def _future(self) -> asyncio.Future[Outcome]:
        if self._outcome is None:
            self._outcome = asyncio.get_running_loop().create_future()
        return self._outcome

    async def outcome(self) -> Outcome:
        """The JobResult or JobFailed, when there is one (never raises for job errors)."""
        return await asyncio.shield(self._future())

    def notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener(self)
            except Exception:  # a listener's bug must not stop the queue
                log.exception("job %s: a listener failed", self.id)

    def finish(self, outcome: Outcome) -> None:
        if self.finished:
            return
        if isinstance(outcome, JobResult):
            self.state = JobState.DONE
        elif outcome.kind == ErrorKind.CANCELLED:
            self.state = JobState.CANCELLED
        else:
            self.state = JobState.FAILED
        future = self._future()
        if not future.done():
            future.set_result(outcome)
        self.notify()


class Refused(Exception):
    """A job was not queued; the message is written for the member."""


class QueueFull(Refused):
    pass


class UserLimitReached(Refused):
    pass


class QueueClosed(Refused):
    pass


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class JobQueue:
    """Bounded FIFO with a per-member limit. Positions start at 1 (next to run)."""

    def __init__(self, *, max_waiting: int, per_user_limit: int) -> None:
        self.max_waiting = max_waiting
        self.per_user_limit = per_user_limit
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: dict[str, Job] = {}
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed: str = ""
        self.cancel_running: Callable[[Job], Any] | None = None  # set by the EnginePool

    # -- looking -------------------------------------------------------------------------

    @property
    def waiting(self) -> list[Job]:
        return list(self._waiting)

    @property
    def running(self) -> list[Job]:
        return list(self._running.values())

    @property
    def closed(self) -> bool:
        return bool(self._closed)

    def find(self, job_id: str) -> Job | None:
        return self._running.get(job_id) or next((j for j in self._waiting if j.id == job_id), None)

    def jobs_of(self, user_id: int) -> list[Job]:
        return [
            j
            for j in itertools.chain(self._running.values(), self._waiting)
            if j.user_id == user_id
        ]

    # -- changing ------------------------------------------------------------------------

    def check(self, user_id: int) -> None:
        """Raise Refused if a job of `user_id` would be refused now (before any download)."""
        if self._closed:
            raise QueueClosed(self._closed)
        mine = len(self.jobs_of(user_id))
        if mine >= self.per_user_limit:
            jobs = "job" if mine == 1 else "jobs"
            raise UserLimitReached(
                f"You already have {mine} {jobs} waiting or running (the limit is "
                f"{self.per_user_limit}). Wait for one to finish, or cancel one with `cancel`."
            )
        if len(self._waiting) >= self.max_waiting:
            raise QueueFull(
                f"The queue is full ({len(self._waiting)} jobs waiting). Please try again in a few minutes."
            )

    def submit(self, job: Job) -> int:
        """Queue `job` and return its position, or raise Refused with the reason."""
        self.check(job.user_id)
        job.state = JobState.QUEUED
        self._waiting.append(job)
        job.position = len(self._waiting)
        self._wake_one()
        job.notify()
        return job.position

    async def get(self) -> Job:
        """The next job, marked running (for the engines). Raises QueueClosed when closed."""
        while not self._waiting:
            if self._closed:
                raise QueueClosed(self._closed)
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken for a job we will not take: pass it on
                raise
            finally:
                if waiter in self._getters:
                    self._getters.remove(waiter)
        job = self._waiting.popleft()
        job.attempts += 1
        job.state = JobState.RUNNING
        job.position = 0
        job.started = time.monotonic()
        self._running[job.id] = job
        job.notify()
        self._renumber()
        return job

    def put_back(self, job: Job) -> None:
        """Return a running job to the front of the line (its engine died before starting it)."""
        self._running.pop(job.id, None)
        job.state = JobState.QUEUED
        job.started = None
        self._waiting.appendleft(job)
        self._renumber()
        self._wake_one()

    def done(self, job: Job, outcome: Outcome) -> None:
        """An engine finished `job` (or it was removed): free its slot and tell listeners."""
        self._running.pop(job.id, None)
        job.finish(outcome)

    def cancel(self, job_id: str, *, by: int | None = None, reason: str = "") -> Job | None:
        """Cancel a waiting job now, or ask the engine to stop a running one.

        Returns the job (its `outcome()` resolves once it has stopped), or None when
        there is no such job. Permission checks are the caller's."""
        job = self.find(job_id)
        if job is None:
            return None
        job.cancelled_by = by
        job.cancel_reason = reason
        if job.state == JobState.QUEUED:
            self._waiting.remove(job)
            job.finish(JobFailed(job.id, ErrorKind.CANCELLED, reason or "The job was cancelled."))
            self._renumber()
        elif job.state == JobState.RUNNING and self.cancel_running is not None:
            self.cancel_running(job)
        return job

    def close(self, reason: str) -> list[Job]:
        """Refuse new jobs and cancel every waiting one (running ones are the pool's)."""
        self._closed = reason
        dropped = list(self._waiting)
        self._waiting.clear()
        for job in dropped:
            job.cancel_reason = reason
            job.finish(JobFailed(job.id, ErrorKind.CANCELLED, reason))
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        return dropped

    def fail_waiting(self, failure: Callable[[Job], JobFailed]) -> list[Job]:
        """Fail every waiting job (the engines cannot start); the queue stays open."""
        dropped = list(self._waiting)
        self._waiting.clear()
        for job in dropped:
            job.finish(failure(job))
        return dropped

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _renumber(self) -> None:
        for index, job in enumerate(self._waiting, start=1):
            if job.position != index:
                job.position = index
                job.notify()


# --- engine processes -----------------------------------------------------------------


class EngineStartFailed(Exception):
    def __init__(self, failure: JobFailed, *, permanent: bool) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.permanent = permanent


_EOF = object()


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (often: the machine ran out of memory)" if -exitcode == signal.SIGKILL else ""
        return f"it was killed by {name}{hint}"
    return f"it exited with status {exitcode}"


class EngineClient:
    """One engine process: start it, send it one job at a time, notice when it dies."""

    def __init__(
        self,
        *,
        name: str,
        options: WorkerOptions,
        start_timeout: float,
        cancel_grace: float,
        context: Any = None,
    ) -> None:
        self.name = name
        self.options = options
        self.start_timeout = start_timeout
        self.cancel_grace = cancel_grace
        self.context = context or multiprocessing.get_context("spawn")
        self.process: Any = None
        self.ready: EngineReady | None = None
        self.job: Job | None = None
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started: asyncio.Future[EngineReady] | None = None
        self._result: asyncio.Future[Outcome] | None = None
        self._dead: asyncio.Event = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._kill_timer: asyncio.TimerHandle | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and not self._dead.is_set()

    async def start(self) -> EngineReady:
        """Start the process and wait for EngineReady; raise EngineStartFailed."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._dead = asyncio.Event()
        self.ready = None
        self._started = self._loop.create_future()
        parent, child = self.context.Pipe(duplex=True)
        self.process = self.context.Process(
            target=worker_main,
            args=(child, self.options),
            name=f"stylebot-{self.name}",
            daemon=True,
        )
        self.process.start()
        child.close()  # our copy of the child's end: without this we would never see EOF
        self._conn = parent
        threading.Thread(
            target=self._read,
            args=(parent, self.process.sentinel),
            name=f"{self.name}-reader",
            daemon=True,
        ).start()
        log.info("%s: starting (pid %s), loading TensorFlow and the weights", self.name, self.pid)
        try:
            self.ready = await asyncio.wait_for(asyncio.shield(self._started), self.start_timeout)
        except TimeoutError:
            await self.kill()
            raise EngineStartFailed(
                JobFailed(
                    "",
                    ErrorKind.INTERNAL,
                    f"the engine did not start within {self.start_timeout:g} s",
                ),
                permanent=False,
            ) from None
        log.info(
            "%s: ready (pid %s): backend %s on %s, weights %s%s",
            self.name,
            self.pid,
            self.ready.backend,
            self.ready.device,
            self.ready.weights,
            " — RANDOM weights, output is not art" if self.ready.random_weights else "",
        )
        return self.ready

    def _read(self, conn: Any, sentinel: int) -> None:
        """Reader thread: pipe -> event loop. Ends with _EOF when the process is gone."""
        loop = self._loop
        assert loop is not None
        while True:
            try:
                ready = multiprocessing.connection.wait([conn, sentinel])
                if conn in ready:
                    message = conn.recv()
                else:  # the process ended and nothing is left to read
                    message = _EOF
            except (EOFError, OSError):
                message = _EOF
            try:
                loop.call_soon_threadsafe(self._dispatch, message)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return
            if message is _EOF:
                return

    def _dispatch(self, message: Any) -> None:
        if message is _EOF:
            self._on_eof()
        elif isinstance(message, Progress):
            job = self.job
            if job is not None and message.job_id in ("", job.id):
                job.progress = message
                job.notify()
        elif isinstance(message, (JobResult, JobFailed)) and message.job_id:
            if self._result is not None and not self._result.done():
                self._result.set_result(message)
        elif isinstance(message, JobFailed):  # job_id "": the engine could not start
            permanent = message.kind == ErrorKind.WEIGHTS
            if self._started is not None and not self._started.done():
                self._started.set_exception(EngineStartFailed(message, permanent=permanent))
        elif isinstance(message, EngineReady):
            if self._started is not None and not self._started.done():
                self._started.set_result(message)
        else:
            log.warning("%s: unexpected message %r", self.name, type(message).__name__)

    def _on_eof(self) -> None:
        self._dead.set()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        process = self.process
        if process is not None:
            process.join(timeout=0.5)  # the sentinel fired or the pipe closed: it is (nearly) gone
        exitcode = process.exitcode if process is not None else None
        how = describe_exit(exitcode)
        if self._started is not None and not self._started.done():
            self._started.set_exception(
                EngineStartFailed(
                    JobFailed(
                        "",
                        ErrorKind.WEIGHTS if exitcode == EXIT_WEIGHTS else ErrorKind.INTERNAL,
                        f"the engine process stopped while starting: {how}",
                    ),
                    permanent=exitcode == EXIT_WEIGHTS,
                )
            )
        if self._result is not None and not self._result.done():
            job_id = self.job.id if self.job else ""
            log.error("%s (pid %s) died while running job %s: %s", self.name, self.pid, job_id, how)
            self._result.set_result(
                JobFailed(
                    job_id,
                    ErrorKind.ENGINE_DIED,
                    f"The engine stopped in the middle of the job ({how}).",
                )
            )
        elif self.ready is not None and not self._stopping:
            log.warning("%s (pid %s) stopped while idle: %s", self.name, self.pid, how)

    async def _send(self, message: Any) -> None:
        """Send without blocking the loop (a large request fills the pipe's buffer)."""
        async with self._send_lock:
            await asyncio.get_running_loop().run_in_executor(None, self._conn.send, message)

    async def run(self, job: Job) -> Outcome:
        """Run one job to its end; never raises for the job's own failures."""
        assert self._loop is not None
        self.job = job
        job.engine = self.name
        self._result = self._loop.create_future()
        try:
            if not self.alive:
                raise BrokenPipeError
            await self._send(job.request)
        except (BrokenPipeError, OSError):
            await asyncio.wait_for(self._dead.wait(), timeout=10)
            if not self._result.done():
                self._result.set_result(
                    JobFailed(
                        job.id,
                        ErrorKind.ENGINE_DIED,
                        "The engine stopped before the job could start.",
                    )
                )
        try:
            outcome = await self._result
        finally:
            self.job = None
            if self._kill_timer is not None:
                self._kill_timer.cancel()
                self._kill_timer = None
        if (
            isinstance(outcome, JobFailed)
            and job.cancelled_by is not None
            and outcome.kind in (ErrorKind.ENGINE_DIED, ErrorKind.CANCELLED)
        ):
            # A cancel we asked for (if the engine died, we killed it because it ignored
            # the cancel): report the cancel and its reason, not a crash.
            outcome = JobFailed(
                job.id, ErrorKind.CANCELLED, job.cancel_reason or "The job was cancelled."
            )
        return outcome

    def cancel(self, job: Job) -> None:
        """Ask the engine to stop `job`; kill it if it has not stopped after cancel_grace."""
        if self.job is not job or not self.alive:
            return
        loop = asyncio.get_running_loop()

        async def send_cancel() -> None:
            try:
                await self._send(CancelJob(job.id))
            except (BrokenPipeError, OSError):
                pass

        loop.create_task(send_cancel())
        if self._kill_timer is None:
            self._kill_timer = loop.call_later(self.cancel_grace, self._kill_stuck, job)

    def _kill_stuck(self, job: Job) -> None:
        self._kill_timer = None
        if self.job is job and self.process is not None and self.process.is_alive():
            log.warning(
                "%s: job %s ignored a cancel for %g s; killing pid %s",
                self.name,
                job.id,
                self.cancel_grace,
                self.pid,
            )
            self.process.kill()

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask the process to exit; kill it if it does not within `timeout`."""
        if self.process is None:
            return
        self._stopping = True
        if self.alive and self.ready is None:
            await (
                self.kill()
            )  # still loading TensorFlow: nothing to finish, nobody reading the pipe
            return
        if self.alive:
            try:
                await asyncio.wait_for(self._send(None), timeout=2)
            except (TimeoutError, BrokenPipeError, OSError):
                pass
            try:
                await asyncio.wait_for(self._dead.wait(), timeout)
            except TimeoutError:
                log.warning(
                    "%s (pid %s) did not exit within %g s; killing it", self.name, self.pid, timeout
                )
        await self.kill()

    async def kill(self) -> None:
        process = self.process
        if process is None:
            return
        if process.is_alive():
            process.kill()
        await asyncio.get_running_loop().run_in_executor(None, process.join, 5)
        if self._conn is not None:
            self._conn.close()
        self._dead.set()


class EnginePool:
    """N engine processes taking jobs from one JobQueue, restarted when they die."""

    def __init__(
        self,
        *,
        queue: JobQueue,
        options: WorkerOptions,
        count: int = 1,
        start_timeout: float = 600.0,
        restart_limit: int = 3,
        cancel_grace: float = 30.0,
        backoff: Iterable[float] = (1, 5, 15, 60),
        context: Any = None,
    ) -> None:
        self.queue = queue
        self.options = options
        self.restart_limit = restart_limit
        self.backoff = tuple(backoff)
        self.clients = [
            EngineClient(
                name=f"engine-{i + 1}",
                options=options,
                start_timeout=start_timeout,
                cancel_grace=cancel_grace,
                context=context,
            )
            for i in range(count)
        ]
        self.broken: dict[str, JobFailed] = {}
        self.ready_event = asyncio.Event()
        self.restarts = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        queue.cancel_running = self._cancel_running

    # -- state the bot shows -----------------------------------------------------------

    @property
    def unavailable(self) -> JobFailed | None:
        """Why no engine can run jobs (every engine broken), else None."""
        if self.clients and len(self.broken) == len(self.clients):
            return next(iter(self.broken.values()))
        return None

    @property
    def ready_count(self) -> int:
        return sum(1 for c in self.clients if c.ready is not None and c.alive)

    def start(self) -> None:
        """Start every engine in the background; jobs wait in the queue meanwhile."""
        for client in self.clients:
            self._tasks.append(
                asyncio.get_running_loop().create_task(
                    self._serve(client), name=f"{client.name}-serve"
                )
            )

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.ready_event.wait(), timeout)

    async def _serve(self, client: EngineClient) -> None:
        failures = 0
        while not self._stopping:
            try:
                await client.start()
            except EngineStartFailed as error:
                if self._stopping:
                    return
                failures += 1
                detail = error.failure.detail.strip()
                log.error(
                    "%s could not start: %s%s",
                    client.name,
                    error.failure.message,
                    f"\n{detail}" if detail and not error.permanent else "",
                )
                if error.permanent or failures > self.restart_limit:
                    why = (
                        "the host must fix the setup"
                        if error.permanent
                        else f"{failures} failed starts in a row"
                    )
                    log.critical(
                        "%s is out of service (%s). Fix the problem and restart the bot.",
                        client.name,
                        why,
                    )
                    self._mark_broken(client, error.failure)
                    return
                await asyncio.sleep(self.backoff[min(failures - 1, len(self.backoff) - 1)])
                continue
            failures = 0
            self.broken.pop(client.name, None)
            self.ready_event.set()
            if not await self._work(client):
                return
            if not self._stopping:
                self.restarts += 1
                log.info("%s: restarting the engine process", client.name)

    async def _work(self, client: EngineClient) -> bool:
        """Run jobs until the engine dies (True: restart it) or the queue closes (False)."""
        while client.alive:
            getter = asyncio.ensure_future(self.queue.get())
            died = asyncio.ensure_future(client._dead.wait())
            await asyncio.wait({getter, died}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                died.cancel()
                await asyncio.gather(getter, return_exceptions=True)
                return not self._stopping
            died.cancel()
            try:
                job = getter.result()
            except QueueClosed:
                return False
            outcome = await client.run(job)
            if (
                isinstance(outcome, JobFailed)
                and outcome.kind == ErrorKind.ENGINE_DIED
                and job.progress is None
                and job.attempts < 2
                and job.cancelled_by is None
            ):
                # The engine died before reporting any progress: most likely it died
                # idle just as the job was handed over. Give the job one more try on
                # the restarted engine (a job that kills it again fails then).
                log.warning(
                    "job %s: the engine died before starting it; it goes back to the front", job.id
                )
                self.queue.put_back(job)
                continue
            self._log_outcome(job, outcome)
            self.queue.done(job, outcome)
        return not self._stopping

    @staticmethod
    def _log_outcome(job: Job, outcome: Outcome) -> None:
        if isinstance(outcome, JobResult):
            log.info(
                "job %s done in %.1f s (%d iterations, seed %d, %dx%d)",
                job.id,
                outcome.elapsed,
                outcome.iterations,
                outcome.seed,
                outcome.width,
                outcome.height,
            )
        elif outcome.kind in (ErrorKind.INTERNAL, ErrorKind.WEIGHTS):
            log.error(
                "job %s failed (%s): %s\n%s",
                job.id,
                outcome.kind.value,
                outcome.message,
                outcome.detail,
            )
        else:
            log.info("job %s ended: %s: %s", job.id, outcome.kind.value, outcome.message)

    def _mark_broken(self, client: EngineClient, failure: JobFailed) -> None:
        self.broken[client.name] = failure
        if self.unavailable is not None:
            self.queue.fail_waiting(
                lambda job: JobFailed(job.id, failure.kind, failure.message, failure.detail)
            )

    def _cancel_running(self, job: Job) -> None:
        for client in self.clients:
            if client.job is job:
                client.cancel(job)

    async def stop(self, *, grace: float = 10.0, reason: str = "The bot is shutting down.") -> None:
        """Close the queue, give running jobs `grace` seconds, cancel them, end the processes."""
        self._stopping = True
        self.queue.close(reason)
        running = [c.job for c in self.clients if c.job is not None]
        if running:
            log.info("waiting up to %g s for %d running job(s) to finish", grace, len(running))
            waits = [asyncio.ensure_future(j.outcome()) for j in running]
            _, pending = (
                await asyncio.wait(waits, timeout=grace) if grace > 0 else (set(), set(waits))
            )
            for job in running:
                if not job.finished:
                    self.queue.cancel(job.id, by=0, reason=reason)
            if pending:
                await asyncio.wait(pending, timeout=max(c.cancel_grace for c in self.clients) + 5)
        await asyncio.gather(*(c.stop() for c in self.clients), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
