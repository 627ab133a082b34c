"""Issue 11, items 6, 7 and 10 with a fake engine in real worker processes: a cancel at
the moment a job starts is not lost; a job whose engine dies after its first progress
event is retried once, and a job that stops two engines is the cause and is not; an
engine that cannot start is retried with a capped back-off and recovers by itself."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bot.broker.queue import JobQueue, JobState
from bot.pool import EnginePool
from bot.replies import failure_text
from bot.texts import queue_text
from engine.config import WeightsSettings
from engine.jobs import ErrorKind, JobResult
from engine.worker import WorkerOptions

from .test_bot_queue import make_job, pool_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def pool():
    q = JobQueue(max_waiting=10, per_user_limit=10)
    p = pool_for(q, cancel_grace=1.0)
    p.start()
    await p.wait_ready(30)
    yield p
    await p.stop(grace=0)


async def test_a_cancel_as_the_job_starts_is_not_lost(pool):
    job = make_job(steps=200, delay=0.01)

    def cancel_when_handed_out(changed):
        # The queue has just handed the job to an engine; no engine holds it yet.
        if changed.state == JobState.RUNNING and changed.cancelled_by is None:
            pool.queue.cancel(changed.id, by=1, reason="Cancelled.")

    job.listeners.append(cancel_when_handed_out)
    pool.queue.submit(job)
    outcome = await asyncio.wait_for(job.outcome(), 10)
    assert outcome.kind == ErrorKind.CANCELLED and job.state == JobState.CANCELLED
    assert job.progress is None  # it never ran
    after = make_job()
    pool.queue.submit(after)
    assert isinstance(await asyncio.wait_for(after.outcome(), 10), JobResult)


async def test_an_engine_death_after_the_first_progress_is_retried_once(pool, tmp_path):
    job = make_job(steps=4, crash_at=2, crash_once=str(tmp_path / "crashed"))
    pool.queue.submit(job)
    outcome = await asyncio.wait_for(job.outcome(), 30)
    assert isinstance(outcome, JobResult), outcome
    assert (tmp_path / "crashed").exists() and pool.restarts == 1 and job.engine_deaths == 1


async def test_a_job_that_stops_two_engines_is_the_cause_and_the_member_is_told(pool):
    doomed, after = make_job(steps=5, crash_at=2), make_job(steps=2)
    pool.queue.submit(doomed)
    pool.queue.submit(after)
    outcome = await asyncio.wait_for(doomed.outcome(), 30)
    assert outcome.kind == ErrorKind.ENGINE_DIED and "status 7" in outcome.message
    assert doomed.engine_deaths == 2 and pool.restarts == 2
    text = failure_text(doomed, outcome)
    assert "stopped my painter more than once" in text and "smaller size" in text
    assert isinstance(await asyncio.wait_for(after.outcome(), 20), JobResult)


def test_a_poison_job_on_the_redis_workers_is_explained_the_same_way():
    from engine.remote_worker import poison_failure

    job = make_job()
    text = failure_text(job, poison_failure(job.id, 3))
    assert "stopped my painter more than once" in text and "please try again" not in text


# --- item 6: failed starts are retried with a capped back-off, and recover by themselves ---


def test_the_back_off_doubles_and_is_capped_at_a_few_minutes():
    q = JobQueue(max_waiting=10, per_user_limit=10)
    default = EnginePool(queue=q, options=WorkerOptions())
    assert [default.retry_delay(n) for n in (1, 2, 3, 4, 8, 9, 10, 50)] == [
        1, 2, 4, 8, 128, 256, 300, 300,
    ]  # fmt: skip
    assert default.retry_max == 300


async def test_an_engine_whose_weights_come_back_recovers_by_itself(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bot.pool")
    weights = tmp_path / "vgg19.h5"
    q = JobQueue(max_waiting=10, per_user_limit=10)
    options = WorkerOptions(
        engine_factory="tests.bot.fake_engine:weights_from_file",
        log_level="WARNING",
        weights=WeightsSettings(source=str(weights)),
    )
    p = EnginePool(
        queue=q, options=options, start_timeout=30, restart_limit=1, backoff=(0.2,), retry_max=0.8
    )
    waiting = make_job()
    q.submit(waiting)
    p.start()
    try:
        outcome = await asyncio.wait_for(waiting.outcome(), 30)
        assert outcome.kind == ErrorKind.WEIGHTS and p.unavailable is not None
        assert "keeps trying to start by itself" in p.waiting_note
        assert "keeps trying to start by itself" in queue_text(q, p, "!")
        # Several more failed starts: it is not retired. (Polled, not slept: each start is a
        # process start, which takes seconds on a loaded machine.)
        deadline = time.monotonic() + 30
        while caplog.text.count("starting again in") < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert caplog.text.count("starting again in") >= 4 and p.unavailable is not None
        weights.write_bytes(b"restored")
        restored = time.monotonic()
        await p.wait_ready(30)
        recovered = time.monotonic() - restored
        assert p.unavailable is None and p.waiting_note == ""
        job = make_job()
        q.submit(job)
        assert isinstance(await asyncio.wait_for(job.outcome(), 10), JobResult)
        assert recovered < 0.8 + 5, recovered  # the capped back-off plus one start
        print(f"\nweights restored -> engine ready: {recovered:.2f} s (back-off cap 0.8 s)")
    finally:
        await p.stop(grace=0)


async def test_queued_members_are_told_the_engine_is_starting_again():
    q = JobQueue(max_waiting=10, per_user_limit=10)
    p = pool_for(q, "tests.bot.fake_engine:crash_on_start", restart_limit=3, backoff=(0.5,))
    waiting = make_job()
    notes = []
    waiting.listeners.append(lambda j: notes.append(p.waiting_note))
    q.submit(waiting)
    p.start()
    try:
        async with asyncio.timeout(30):
            while not p.next_try:
                await asyncio.sleep(0.02)
        assert waiting.state == JobState.QUEUED and p.unavailable is None
        assert "could not start and is starting again" in p.waiting_note
        assert "Your job keeps its place" in p.waiting_note
        assert any("starting again" in n for n in notes)  # its status message was redrawn
        assert "starting again" in queue_text(q, p, "!")
    finally:
        await p.stop(grace=0)


# --- item 3: [bot] job_timeout -----------------------------------------------------------


async def test_a_job_over_the_time_limit_ends_with_its_best_image_marked_stopped_early(pool):
    from bot.broker import Broker
    from bot.broker.journal import Journal
    from bot.replies import status_text

    broker = Broker(queue=pool.queue, runner=pool, journal=Journal(":memory:"), job_timeout=0.5)
    job = make_job(steps=100_000, delay=0.01)
    statuses = []
    job.listeners.append(lambda j: statuses.append(status_text(j)))
    await broker.submit(job, {"source": "m"})
    outcome = await asyncio.wait_for(job.outcome(), 10)
    took = time.monotonic() - job.started
    assert isinstance(outcome, JobResult) and outcome.stopped_early, outcome
    assert outcome.image == b"preview" and 0 < outcome.iterations < 100_000
    assert 0.5 <= took < 0.5 + 2, took
    assert any("Time is up" in s for s in statuses)
    print(f"\njob_timeout 0.5 s -> answered after {took:.2f} s, {outcome.iterations} iterations")
    after = make_job()
    pool.queue.submit(after)
    done = await asyncio.wait_for(after.outcome(), 10)
    assert isinstance(done, JobResult) and not done.stopped_early


async def test_a_job_over_the_time_limit_before_any_preview_says_so(pool):
    from bot.broker import Broker
    from bot.broker.journal import Journal

    broker = Broker(queue=pool.queue, runner=pool, journal=Journal(":memory:"), job_timeout=0.3)
    job = make_job(steps=3, delay=2.0)  # the first progress (no preview) after 2 s
    await broker.submit(job, {"source": "m"})
    outcome = await asyncio.wait_for(job.outcome(), 10)
    assert outcome.kind == ErrorKind.CANCELLED and "time limit of 0.3 s" in outcome.message
    assert "🛑 Stopped: the job reached the time limit" in failure_text(job, outcome)


def test_stopped_early_survives_the_wire_and_is_told_to_the_member():
    from bot.broker.queue import png_size
    from bot.delivery import stopped_early_text
    from engine.jobs import from_wire, to_wire

    from .conftest import png

    result = JobResult("j1", b"x", "png", 1, 1, 1.0, 0, 5, 0.1, stopped_early=True)
    assert from_wire(to_wire(result)).stopped_early
    assert not from_wire(to_wire(JobResult("j1", b"x", "png", 1, 1, 1.0, 0, 5, 0.1))).stopped_early
    assert png_size(png(48, 36)) == (48, 36) and png_size(b"preview") == (0, 0)
    text = stopped_early_text(1800, 40, 1000)
    assert "Stopped early" in text and "30 min" in text and "40 of 1000" in text


# --- item 7: ending engines never blocks the event loop -----------------------------------


@pytest.mark.parametrize("how", ["stop", "failed start"])
async def test_an_engine_that_lingers_after_closing_its_pipe_does_not_block_the_loop(how):
    from .test_bot_lifecycle import blocking_calls_on_this_thread

    q = JobQueue(max_waiting=10, per_user_limit=10)
    factory = "slow_exit" if how == "stop" else "fail_on_start"
    p = pool_for(q, f"tests.bot.fake_engine:{factory}", restart_limit=0, backoff=(5.0,))
    lags: list[float] = []

    async def sample() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    with blocking_calls_on_this_thread() as blocked:
        sampler = asyncio.create_task(sample())
        p.start()
        if how == "stop":
            await p.wait_ready(30)
            started = time.perf_counter()
            await asyncio.wait_for(p.stop(grace=0), 15)
            print(f"\npool.stop with a lingering engine: {time.perf_counter() - started:.2f} s")
        else:
            async with asyncio.timeout(30):
                while p.unavailable is None:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            await p.stop(grace=0)
        sampler.cancel()
    print(f"max loop lag {max(lags) * 1000:.0f} ms; blocking calls {blocked}")
    assert not blocked, blocked
