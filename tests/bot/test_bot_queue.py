"""JobQueue (pure asyncio) and EnginePool with a fake engine in real worker processes."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from bot.broker.queue import (
    Job,
    JobQueue,
    JobState,
    QueueClosed,
    QueueFull,
    UserLimitReached,
    ordinal,
)
from bot.engine_process import describe_exit
from bot.pool import EnginePool
from engine.jobs import ErrorKind, JobFailed, JobRequest, JobResult
from engine.worker import WorkerOptions

pytestmark = pytest.mark.timeout(60)


def make_job(user: int = 1, job_id: str | None = None, **plan) -> Job:
    job_id = job_id or f"j{time.perf_counter_ns() % 10**9}"
    return Job(JobRequest(job_id, json.dumps(plan).encode(), (b"s",)), user_id=user)


# --- JobQueue ---------------------------------------------------------------------------


def test_ordinal():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "101st",
        "111th",
    ]


async def test_fifo_positions_and_listeners():
    q = JobQueue(max_waiting=10, per_user_limit=5)
    jobs = [make_job(user=i, job_id=f"j{i}") for i in range(3)]
    seen: dict[str, list[int]] = {j.id: [] for j in jobs}
    for j in jobs:
        j.listeners.append(lambda job: seen[job.id].append(job.position))
    assert [q.submit(j) for j in jobs] == [1, 2, 3]
    first = await q.get()
    assert first is jobs[0] and first.state == JobState.RUNNING
    assert [j.position for j in q.waiting] == [1, 2]
    assert seen["j1"] == [2, 1] and seen["j2"] == [3, 2]
    assert q.cancel("j1") is jobs[1]
    assert jobs[1].state == JobState.CANCELLED and jobs[2].position == 1
    outcome = await jobs[1].outcome()
    assert isinstance(outcome, JobFailed) and outcome.kind == ErrorKind.CANCELLED
    assert await q.get() is jobs[2]


async def test_per_user_limit_counts_waiting_and_running():
    q = JobQueue(max_waiting=10, per_user_limit=2)
    q.submit(make_job(user=7))
    await q.get()  # now running
    q.submit(make_job(user=7))
    with pytest.raises(UserLimitReached, match="You already have 2 jobs waiting or running"):
        q.submit(make_job(user=7))
    q.submit(make_job(user=8))  # someone else is fine


async def test_bounded():
    q = JobQueue(max_waiting=2, per_user_limit=9)
    q.submit(make_job())
    q.submit(make_job())
    with pytest.raises(QueueFull, match="queue is full"):
        q.submit(make_job())


async def test_get_waits_and_close_cancels_waiting():
    q = JobQueue(max_waiting=5, per_user_limit=5)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    job = make_job()
    q.submit(job)
    assert await asyncio.wait_for(getter, 1) is job
    waiting = make_job()
    q.submit(waiting)
    q.close("The bot is shutting down.")
    outcome = await waiting.outcome()
    assert outcome.kind == ErrorKind.CANCELLED and "shutting down" in outcome.message
    with pytest.raises(QueueClosed):
        q.submit(make_job())
    with pytest.raises(QueueClosed):
        await q.get()


async def test_cancelled_getter_passes_its_job_on():
    q = JobQueue(max_waiting=5, per_user_limit=5)
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    job = make_job()
    q.submit(job)  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) is job


def test_describe_exit():
    assert "SIGKILL" in describe_exit(-9) and "memory" in describe_exit(-9)
    assert describe_exit(3) == "it exited with status 3"


# --- EnginePool with real processes and a fake engine -------------------------------------


def pool_for(
    q: JobQueue, factory: str = "tests.bot.fake_engine:make_engine", **kwargs
) -> EnginePool:
    options = WorkerOptions(engine_factory=factory, log_level="WARNING")
    kwargs.setdefault("backoff", (0.05,))
    return EnginePool(queue=q, options=options, start_timeout=30, **kwargs)


@pytest.fixture
async def pool():
    q = JobQueue(max_waiting=10, per_user_limit=10)
    p = pool_for(q, cancel_grace=1.0)
    p.start()
    await p.wait_ready(30)
    yield p
    await p.stop(grace=0)


async def test_job_runs_with_progress(pool):
    job = make_job(steps=4)
    progress = []
    job.listeners.append(lambda j: j.progress and progress.append(j.progress.iteration))
    pool.queue.submit(job)
    outcome = await asyncio.wait_for(job.outcome(), 10)
    assert isinstance(outcome, JobResult) and outcome.image == b"image"
    assert job.state == JobState.DONE and sorted(set(progress)) == [1, 2, 3, 4]
    assert pool.queue.running == []


@pytest.mark.parametrize(
    "error, kind",
    [
        ("input", ErrorKind.BAD_INPUT),
        ("value", ErrorKind.BAD_SETTINGS),
        ("internal", ErrorKind.INTERNAL),
    ],
)
async def test_engine_errors_come_back_as_data(pool, error, kind):
    job = make_job(**{"raise": error})
    pool.queue.submit(job)
    outcome = await asyncio.wait_for(job.outcome(), 10)
    assert isinstance(outcome, JobFailed) and outcome.kind == kind
    if kind == ErrorKind.INTERNAL:
        assert "ZeroDivisionError" in outcome.detail  # the traceback, for the log
    if kind == ErrorKind.BAD_INPUT:
        assert outcome.message == "The photo is broken."


async def test_cancel_running_job(pool):
    job = make_job(steps=500, delay=0.01)
    pool.queue.submit(job)
    while job.progress is None:
        await asyncio.sleep(0.01)
    pool.queue.cancel(job.id, by=1)
    outcome = await asyncio.wait_for(job.outcome(), 5)
    assert outcome.kind == ErrorKind.CANCELLED and job.state == JobState.CANCELLED
    after = make_job()
    pool.queue.submit(after)
    assert isinstance(await asyncio.wait_for(after.outcome(), 10), JobResult)
    assert pool.restarts == 0


async def test_job_ignoring_cancel_is_killed_after_grace(pool):
    job = make_job(steps=10_000, delay=0.01, ignore_cancel=True)
    pool.queue.submit(job)
    while job.progress is None:
        await asyncio.sleep(0.01)
    pool.queue.cancel(job.id, by=1)
    outcome = await asyncio.wait_for(job.outcome(), 10)
    assert outcome.kind == ErrorKind.CANCELLED
    after = make_job()
    pool.queue.submit(after)
    assert isinstance(await asyncio.wait_for(after.outcome(), 20), JobResult)
    assert pool.restarts == 1


async def test_engine_death_fails_the_job_and_the_next_one_runs(pool):
    doomed, after = make_job(steps=5, crash_at=2), make_job(steps=2)
    pool.queue.submit(doomed)
    pool.queue.submit(after)
    outcome = await asyncio.wait_for(doomed.outcome(), 10)
    assert outcome.kind == ErrorKind.ENGINE_DIED and "status 7" in outcome.message
    assert isinstance(await asyncio.wait_for(after.outcome(), 20), JobResult)
    assert pool.restarts == 2  # retried once on a fresh engine (issue 11), which died too


async def test_engine_killed_while_idle_is_restarted(pool):
    first_pid = pool.clients[0].pid
    pool.clients[0].process.kill()
    job = make_job()
    pool.queue.submit(job)
    assert isinstance(await asyncio.wait_for(job.outcome(), 20), JobResult)
    assert pool.clients[0].pid != first_pid


async def test_event_loop_is_not_blocked_while_a_job_runs(pool):
    job = make_job(steps=30, delay=0.01)
    pool.queue.submit(job)
    gaps = []
    last = time.perf_counter()
    while not job.finished:
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    assert max(gaps) < 0.25


async def test_weights_error_marks_the_pool_unavailable_without_restarting():
    q = JobQueue(max_waiting=10, per_user_limit=10)
    p = pool_for(q, "tests.bot.fake_engine:broken_weights", restart_limit=3)
    waiting = make_job()
    q.submit(waiting)
    p.start()
    outcome = await asyncio.wait_for(waiting.outcome(), 30)
    assert outcome.kind == ErrorKind.WEIGHTS and "weights not found" in outcome.message
    assert p.unavailable is not None and p.unavailable.kind == ErrorKind.WEIGHTS
    assert p.restarts == 0
    await p.stop(grace=0)


async def test_crashing_start_is_retried_then_reported(caplog):
    q = JobQueue(max_waiting=10, per_user_limit=10)
    p = pool_for(q, "tests.bot.fake_engine:crash_on_start", restart_limit=1)
    p.start()
    async with asyncio.timeout(30):
        while p.unavailable is None:
            await asyncio.sleep(0.02)
    assert p.unavailable is not None and "status 9" in p.unavailable.message
    assert "out of service" in caplog.text
    assert not any(t.done() for t in p._tasks)  # still trying (issue 11: never retired)
    await p.stop(grace=0)


async def test_two_engines_run_side_by_side():
    q = JobQueue(max_waiting=10, per_user_limit=10)
    p = pool_for(q, count=2)
    p.start()
    a, b = make_job(steps=20, delay=0.02), make_job(steps=20, delay=0.02)
    q.submit(a)
    q.submit(b)
    await asyncio.wait_for(asyncio.gather(a.outcome(), b.outcome()), 30)
    assert {a.engine, b.engine} == {"engine-1", "engine-2"}
    await p.stop(grace=0)


async def test_stop_cancels_running_and_waiting_jobs(pool):
    running, waiting = make_job(steps=10_000, delay=0.01), make_job()
    pool.queue.submit(running)
    pool.queue.submit(waiting)
    while running.progress is None:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(pool.stop(grace=0.1, reason="The bot is shutting down."), 15)
    for job in (running, waiting):
        outcome = await job.outcome()
        assert outcome.kind == ErrorKind.CANCELLED and "shutting down" in outcome.message
    assert all(not c.process.is_alive() for c in pool.clients)
