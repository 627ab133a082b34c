"""One engine process (engine/worker.py) seen from the bot: start it, send it one job at
a time, hear its progress, notice when it dies.

The process is started with multiprocessing's "spawn" and talks over one duplex pipe.
It starts without the token or any other secret: spawn takes no `env=`, so the secrets
are taken out of os.environ for the moment of the start (bot/secrecy.py).
Its target is `run_engine` below, which imports engine.worker inside the child: the
bot itself imports only the contract (engine.jobs), never the worker or TensorFlow.
Events come back on a reader thread and are handed to the event loop with
`call_soon_threadsafe`, so the loop never blocks on the pipe.

A dead engine is noticed by end-of-file on its pipe (the bot closes its copy of the
child's end, so the pipe reaches EOF exactly when the process is gone) or by its
process sentinel: the job it was running fails with `ErrorKind.ENGINE_DIED`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
from collections.abc import Mapping
from typing import Any

from bot.broker.queue import Job, Outcome
from bot.secrecy import scrubbed_environ
from engine.jobs import (
    WORKER_EXIT_WEIGHTS,
    CancelJob,
    EngineReady,
    ErrorKind,
    JobFailed,
    JobResult,
    Progress,
)

log = logging.getLogger(__name__)

WORKER_MODULE = "engine.worker"


def run_engine(conn: Any, options: Mapping[str, Any]) -> None:
    """The child's entry point: the worker is imported here, in the engine process."""
    importlib.import_module(WORKER_MODULE).main(conn, options)


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
        options: Mapping[str, Any],
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

    async def wait_dead(self) -> None:
        """Return once the process is gone."""
        await self._dead.wait()

    async def start(self) -> EngineReady:
        """Start the process and wait for EngineReady; raise EngineStartFailed."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._dead = asyncio.Event()
        self.ready = None
        self._started = self._loop.create_future()
        parent, child = self.context.Pipe(duplex=True)
        self.process = self.context.Process(
            target=run_engine,
            args=(child, self.options),
            name=f"stylebot-{self.name}",
            daemon=True,
        )
        with scrubbed_environ():  # the engine needs no secret: nothing for a crash to leak
            self.process.start()
        child.close()  # our copy of the child's end: without this we would never see EOF
        self._conn = parent
        threading.Thread(
            target=self._read,
            args=(parent, self.process),
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

    def _read(self, conn: Any, process: Any) -> None:
        """Reader thread: pipe -> event loop. Ends with _EOF when the process is gone."""
        loop = self._loop
        assert loop is not None
        while True:
            try:
                ready = multiprocessing.connection.wait([conn, process.sentinel])
                if conn in ready:
                    message = conn.recv()
                else:  # the process ended and nothing is left to read
                    message = _EOF
            except (EOFError, OSError):
                message = _EOF
            if message is _EOF:
                # The pipe closed or the sentinel fired: the process is (nearly) gone. Reap
                # it here, not on the event loop (that join stalled the loop up to 0.5 s
                # while a process was ending at shutdown, issue 11).
                process.join(timeout=0.5)
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
                job.report(message)
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
        exitcode = process.exitcode if process is not None else None  # reaped by the reader
        how = describe_exit(exitcode)
        if self._started is not None and not self._started.done() and self._stopping:
            self._started.cancel()  # ended on purpose while it was starting: nobody waits
        elif self._started is not None and not self._started.done():
            self._started.set_exception(
                EngineStartFailed(
                    JobFailed(
                        "",
                        ErrorKind.WEIGHTS if exitcode == WORKER_EXIT_WEIGHTS else ErrorKind.INTERNAL,
                        f"the engine process stopped while starting: {how}",
                    ),
                    permanent=exitcode == WORKER_EXIT_WEIGHTS,
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
            if job.cancelled_by is not None:
                # Cancelled after the queue handed it out and before it reached us (no
                # engine had it yet, so nobody else could stop it): it never starts.
                self._result.set_result(JobFailed(job.id, ErrorKind.CANCELLED, ""))
            elif not self.alive:
                raise BrokenPipeError
            else:
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

    def end_now(self, timeout: float) -> None:
        """Blocking, for a thread: ask the process to exit (SIGTERM), kill it after `timeout`."""
        self._stopping = True
        process = self.process
        if process is None:
            return
        if process.is_alive():
            process.terminate()
            process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(2)

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
