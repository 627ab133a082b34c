"""The broker: accepted jobs, durable from the moment a member is told "queued".

A `Broker` is three collaborators, passed in:
- a `JobQueue` (bot/broker/queue.py): the fair order, positions, limits, cancel;
- a `Journal` (bot/broker/journal.py): every accepted job and its images on disk,
  until its answer has been posted;
- a `Runner`: what runs the jobs the queue hands out. The local backend's runner is
  the `EnginePool` of engine processes on this machine (bot/pool.py).

The bot talks to the broker only. `submit` journals the job before it is queued;
every change of state is journalled in order on one thread of the broker's own (the
event loop never waits on the disk except to accept a job); `resume` rebuilds the
queue from the journal after a restart; `delivered` marks a job answered for good,
so it is never posted twice; `detach` (SIGTERM) stops without answering anything,
so every job is still there on the next start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bot.broker.journal import Entry
from bot.broker.queue import Job, JobQueue, JobState, Refused
from engine.jobs import JobFailed, JobRequest, JobResult

log = logging.getLogger(__name__)


def time_up_text(limit: float) -> str:
    """Why a job stopped by the time limit has no picture (it had no preview yet)."""
    minutes = f"{limit / 60:g} min" if limit >= 60 else f"{limit:g} s"
    return (
        f"Stopped: the job reached the time limit of {minutes} before it had a picture to show. "
        "Try a smaller size or fewer iterations."
    )


class JobJournal(Protocol):
    """Where accepted jobs are kept until answered: the SQLite `Journal` (local) or the
    `RedisJournal` (redis). Called on the broker's one journal thread, in order."""

    path: Any  # for log lines (never a password)

    def add(
        self,
        request: JobRequest,
        *,
        guild_id: int,
        channel_id: int,
        user_id: int,
        label: str,
        meta: Mapping[str, Any],
    ) -> int: ...

    def set_status_message(self, job_id: str, channel_id: int, message_id: int) -> None: ...

    def set_state(self, job_id: str, state: str) -> None: ...

    def answer(self, job_id: str, state: str, outcome: JobResult | JobFailed) -> None: ...

    def mark_delivered(self, job_id: str) -> None: ...

    def delivered(self, job_id: str) -> bool: ...

    def pending(self) -> list[Entry]: ...

    def close(self) -> None: ...


class Runner(Protocol):
    """Runs the jobs that a JobQueue hands out (engine processes, remote workers)."""

    @property
    def ready_count(self) -> int: ...

    @property
    def unavailable(self) -> JobFailed | None: ...

    @property
    def random_weights(self) -> bool: ...

    @property
    def waiting_note(self) -> str:
        """What queued members are told while nothing can run jobs ("" when something can)."""
        ...

    def adopt(self, job: Job, state: str) -> bool:
        """After a restart: take over `job`, journalled in `state`, if it is already with
        the runner (sent to a worker); False means it goes back into the queue."""
        ...

    def start(self) -> None: ...

    async def stop(self, *, grace: float, reason: str) -> None: ...

    async def abandon(self) -> None: ...


class Broker:
    def __init__(
        self, *, queue: JobQueue, runner: Runner, journal: JobJournal, job_timeout: float = 0.0
    ) -> None:
        self.queue = queue
        self.runner = runner
        self.journal = journal
        self.job_timeout = job_timeout  # [bot] job_timeout: seconds a job may run (0: no limit)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.detached = False
        self._started = False
        # One thread: journal writes happen in the order they were asked for.
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal")

    # -- the journal, off the event loop ----------------------------------------------------

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, functools.partial(fn, *args, **kwargs))

    def _later(self, fn: Callable[..., Any], *args: Any) -> None:
        """A journal write nobody waits for (still in order with every other)."""
        if not self.detached:
            self._io.submit(self._logged, fn, *args)

    @staticmethod
    def _logged(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("journal: %s failed", fn.__name__)

    def _watch(self, job: Job) -> None:
        """Journal the job's changes of state from now on."""
        seen = [job.state]

        def on_change(changed: Job) -> None:
            if changed.state == seen[0]:
                return
            seen[0] = changed.state
            self._time_limit(changed)
            if changed.finished and changed.answer is not None:
                self._later(self.journal.answer, changed.id, changed.state.value, changed.answer)
            elif not changed.finished:
                self._later(self.journal.set_state, changed.id, changed.state.value)

        job.listeners.append(on_change)

    def _time_limit(self, job: Job) -> None:
        """Start the job's clock when it starts running; stop it when it stops."""
        timer = self._timers.pop(job.id, None)
        if timer is not None:
            timer.cancel()
        if job.state == JobState.RUNNING and self.job_timeout > 0:
            self._timers[job.id] = asyncio.get_running_loop().call_later(
                self.job_timeout, self._time_up, job
            )

    def _time_up(self, job: Job) -> None:
        """The job has run `job_timeout` seconds: stop it; it ends with its last preview
        (JobQueue.done), or with this reason when it has none yet."""
        self._timers.pop(job.id, None)
        if job.state != JobState.RUNNING or job.cancelled_by is not None:
            return
        job.time_up = True
        log.info("job %s reached the time limit of %g s; stopping it", job.id, self.job_timeout)
        self.queue.cancel(job.id, by=0, reason=time_up_text(self.job_timeout))

    # -- what the bot calls ---------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        """Start the runner (engines load in the background; jobs wait meanwhile)."""
        if not self._started:
            self._started = True
            self.runner.start()

    async def submit(self, job: Job, meta: Mapping[str, Any]) -> int:
        """Journal `job` with what delivery needs (`meta`, JSON), then queue it; returns
        its position. Raises Refused (nothing is kept then)."""
        self.queue.check(job.user_id)
        job.seq = await self._run(
            self.journal.add,
            job.request,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
            user_id=job.user_id,
            label=job.label,
            meta=meta,
        )
        try:
            position = self.queue.submit(job)
        except Refused:  # the queue filled up while the journal was being written
            self._later(self.journal.mark_delivered, job.id)
            raise
        self._watch(job)
        return position

    def status_message(self, job: Job, channel_id: int, message_id: int) -> None:
        """Where the job's status message is, so a restart can find it again."""
        self._later(self.journal.set_status_message, job.id, channel_id, message_id)

    async def delivered(self, job: Job) -> None:
        """The answer has been posted: never post it again."""
        if not self.detached:
            await self._run(self.journal.mark_delivered, job.id)

    async def resume(self) -> list[tuple[Job, Entry]]:
        """Jobs journalled before a restart: unanswered ones go back into the queue (a
        job that was running starts again), answered ones come back finished so that
        their answer can be posted. Returns each with its journal entry, oldest first."""
        entries: list[Entry] = await self._run(self.journal.pending)
        resumed = []
        for entry in entries:
            if self.queue.find(entry.id) is not None:
                continue  # already here (resume is meant to run once, before new jobs)
            job = Job(
                entry.request,
                user_id=entry.user_id,
                channel_id=entry.channel_id,
                guild_id=entry.guild_id,
                label=entry.label,
                seq=entry.seq,
                resumed=True,
            )
            if entry.outcome is None and self.runner.adopt(job, entry.state):
                self.queue.adopt_running(job)
                self._watch(job)
                self._time_limit(job)  # its clock starts again: the old start is unknown
            elif entry.outcome is None:
                self.queue.submit(job, check=False)
                if entry.state != JobState.QUEUED.value:
                    self._later(self.journal.set_state, job.id, JobState.QUEUED.value)
                self._watch(job)
            else:
                job.finish(entry.outcome)
            resumed.append((job, entry))
        if resumed:
            log.info("resumed %d job(s) from %s", len(resumed), self.journal.path)
        return resumed

    async def detach(self, reason: str) -> None:
        """Stop taking and running jobs without answering any: on the next start the
        journal gives them all back. The engines end in threads, off the event loop."""
        if self.detached:
            return
        self.queue.close(reason, drop=False)
        await asyncio.get_running_loop().run_in_executor(self._io, lambda: None)  # flush
        self.detached = True
        await self.runner.abandon()
        self._io.shutdown(wait=False)

    async def stop(self, *, grace: float, reason: str) -> None:
        """Finish (or cancel) the running jobs and end the runner; waiting jobs are
        cancelled with `reason` (used by tests and by a bot closed after a fatal error)."""
        await self.runner.stop(grace=grace, reason=reason)
