"""The jobs the bot knows about and the fair order they run in (plain asyncio).

`JobQueue` is bounded, has a per-member limit, and hands jobs out round-robin: across
servers first, then across the members of a server (`fair_order`), so one busy server
or one busy member cannot starve the others. Positions shown to members are places
in that order and are kept current (each job's listeners hear about every change).
Nothing here is durable: the broker (bot/broker/base.py) journals every change.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.jobs import ErrorKind, JobFailed, JobRequest, JobResult, Progress

log = logging.getLogger(__name__)

Outcome = JobResult | JobFailed


# The message of the failure of a job that two engines died under: the job itself is
# the likely cause, so it is not tried a third time (the member is told so).
KILLED_TWO_ENGINES = "The job stopped two engines in a row"


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
    engine_deaths: int = 0  # engines that died under this job (after two, it is the cause)
    time_up: bool = False  # stopped by the time limit: it ends with its last preview
    preview: Progress | None = None  # the last progress event that had a preview image
    seq: int = 0  # submission order, kept across restarts (the journal's row id)
    front: bool = False  # put back after an engine died under it: it goes first
    resumed: bool = False  # restored from the journal after a restart
    progress_mark: str = "0-0"  # the last progress event read (a stream id, remote workers)
    answer: Outcome | None = None  # the outcome, once there is one
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

    # Server boundaries (issue 11): a job is seen in full only by its member and inside
    # its own server; a server's moderator may cancel it only from inside that server.
    # `guild_id` is where the asking happens (0 in a DM).

    def visible_to(self, user_id: int, guild_id: int) -> bool:
        """Whether `user_id`, asking in `guild_id`, may see this job's details."""
        return self.user_id == user_id or (guild_id != 0 and self.guild_id == guild_id)

    def cancellable_by(self, user_id: int, guild_id: int, *, moderator: bool) -> bool:
        """Whether `user_id` may cancel this job; `moderator`: they have Manage Messages
        where they ask, which counts only when that is the job's own server."""
        return self.user_id == user_id or (
            moderator and guild_id != 0 and self.guild_id == guild_id
        )

    def _future(self) -> asyncio.Future[Outcome]:
        if self._outcome is None:
            self._outcome = asyncio.get_running_loop().create_future()
        return self._outcome

    async def outcome(self) -> Outcome:
        """The JobResult or JobFailed, when there is one (never raises for job errors)."""
        return await asyncio.shield(self._future())

    def report(self, progress: Progress) -> None:
        """A progress event from the engine: keep it (and its preview) and tell listeners."""
        self.progress = progress
        if progress.preview_png:
            self.preview = progress
        self.notify()

    def notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener(self)
            except Exception:  # a listener's bug must not stop the queue
                log.exception("job %s: a listener failed", self.id)

    def finish(self, outcome: Outcome) -> None:
        if self.finished:
            return
        self.state = state_of(outcome)
        self.answer = outcome
        future = self._future()
        if not future.done():
            future.set_result(outcome)
        self.notify()


def state_of(outcome: Outcome) -> JobState:
    if isinstance(outcome, JobResult):
        return JobState.DONE
    return JobState.CANCELLED if outcome.kind == ErrorKind.CANCELLED else JobState.FAILED


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header ((0, 0) when it is not a PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return 0, 0
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def stopped_early(job: Job, cancelled: JobFailed) -> Outcome:
    """The outcome of a job the time limit stopped: its last preview as a result marked
    `stopped_early`, or (no preview yet) the cancel, whose reason says why."""
    shown = job.preview
    if shown is None or not shown.preview_png:
        return cancelled
    width, height = png_size(shown.preview_png)
    return JobResult(
        job.id,
        shown.preview_png,
        "png",
        width,
        height,
        shown.elapsed,
        seed=-1 if job.request.settings.seed is None else job.request.settings.seed,
        iterations=shown.iteration,
        final_loss=float(shown.losses.get("total", float("nan"))),
        stopped_early=True,
    )


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


def fair_order(jobs: Sequence[Job], turns: Mapping[Any, int]) -> list[Job]:
    """Waiting jobs in the order they will start: round-robin across servers, and
    within a server across members.

    A server's (or member's) k-th waiting job goes after every other server's
    (member's) (k-1)-th; among equals, the one whose last job started longest ago
    goes first (`turns[guild_id]`, `turns[(guild_id, user_id)]`: a counter, 0 =
    never), then the older job. Jobs put back after an engine died go first."""
    by_guild: dict[int, list[Job]] = collections.defaultdict(list)
    for job in sorted(jobs, key=lambda j: j.seq):
        by_guild[job.guild_id].append(job)
    keyed: list[tuple[tuple[Any, ...], Job]] = []
    for guild, own in by_guild.items():
        count: collections.Counter[int] = collections.Counter()
        rank: dict[str, int] = {}
        for job in own:
            rank[job.id] = count[job.user_id]
            count[job.user_id] += 1
        members = sorted(
            own,
            key=lambda j: (not j.front, rank[j.id], turns.get((guild, j.user_id), 0), j.seq),
        )
        for index, job in enumerate(members):
            keyed.append(((not job.front, index, turns.get(guild, 0), job.seq), job))
    return [job for _, job in sorted(keyed, key=lambda pair: pair[0])]


class JobQueue:
    """Bounded, fair, with a per-member limit. Positions start at 1 (next to run)."""

    def __init__(self, *, max_waiting: int, per_user_limit: int) -> None:
        self.max_waiting = max_waiting
        self.per_user_limit = per_user_limit
        self._waiting: list[Job] = []  # always in fair order
        self._running: dict[str, Job] = {}
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed: str = ""
        self._turns: dict[Any, int] = {}
        self._turn = itertools.count(1)
        self._last_seq = 0
        self.cancel_running: Callable[[Job], Any] | None = None  # set by whoever runs jobs

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

    def submit(self, job: Job, *, check: bool = True) -> int:
        """Queue `job` and return its position, or raise Refused with the reason.

        `check=False` restores a job accepted before a restart: limits do not apply."""
        if check:
            self.check(job.user_id)
        if not job.seq:
            job.seq = self._last_seq + 1
        self._last_seq = max(self._last_seq, job.seq)
        job.state = JobState.QUEUED
        job.position = 0  # _renumber gives it its place and tells its listeners
        self._waiting.append(job)
        self._renumber()
        self._wake_one()
        return job.position

    async def get(self) -> Job:
        """The next job, marked running (for the engines). Raises QueueClosed when closed."""
        while not self._waiting or self._closed:
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
        job = self._waiting.pop(0)
        turn = next(self._turn)
        self._turns[job.guild_id] = self._turns[(job.guild_id, job.user_id)] = turn
        job.attempts += 1
        job.state = JobState.RUNNING
        job.position = 0
        job.front = False
        job.started = time.monotonic()
        self._running[job.id] = job
        job.notify()
        self._renumber()
        return job

    def adopt_running(self, job: Job) -> None:
        """Count `job` as running without handing it out (a restarted bot finds it already
        with a worker)."""
        job.seq = job.seq or self._last_seq + 1
        self._last_seq = max(self._last_seq, job.seq)
        job.state = JobState.RUNNING
        job.position = 0
        self._running[job.id] = job

    def put_back(self, job: Job) -> None:
        """Return a running job to the front of the line (its engine died before starting it)."""
        self._running.pop(job.id, None)
        job.state = JobState.QUEUED
        job.started = None
        job.progress = None  # its status shows it waiting again, not the dead run's progress
        job.front = True
        self._waiting.append(job)
        self._renumber()
        self._wake_one()

    def done(self, job: Job, outcome: Outcome) -> None:
        """An engine finished `job` (or it was removed): free its slot and tell listeners.
        A job stopped by the time limit ends with its last preview, if it had one."""
        self._running.pop(job.id, None)
        if job.time_up and isinstance(outcome, JobFailed) and outcome.kind == ErrorKind.CANCELLED:
            outcome = stopped_early(job, outcome)
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

    def close(self, reason: str, *, drop: bool = True) -> list[Job]:
        """Refuse new jobs; with `drop`, cancel every waiting one (running ones are the
        engines'). Without it the waiting jobs stay as they are: the journal keeps them
        for the next start."""
        self._closed = reason
        dropped = list(self._waiting) if drop else []
        if drop:
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
        self._waiting = fair_order(self._waiting, self._turns)
        for index, job in enumerate(self._waiting, start=1):
            if job.position != index:
                job.position = index
                job.notify()
