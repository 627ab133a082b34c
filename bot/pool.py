"""N engine processes on this machine taking jobs from one JobQueue (the local broker's runner).

Each process is an `EngineClient` (bot/engine_process.py), fed one job at a time and
restarted when it dies. A start that fails is tried again for as long as it fails, with
a back-off that doubles up to `retry_max` seconds, so an engine recovers by itself once
the cause is gone (a weights file restored, a GPU freed). Meanwhile queued members are
told the painter is starting again. A start that fails because of the weights (a host
problem), or `restart_limit` failed starts in a row, marks that engine broken; when
every engine is broken the waiting jobs fail with the reason and new ones are refused,
until one starts again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from bot.broker.queue import KILLED_TWO_ENGINES, Job, JobQueue, Outcome, QueueClosed
from bot.engine_process import EngineClient, EngineStartFailed
from bot.i18n import Seconds, Text
from engine.jobs import ErrorKind, JobFailed, JobResult

log = logging.getLogger(__name__)

# What queued members (and `queue`) are told while no engine is ready.
# Notes under queued jobs' status: catalogue texts (bot/locales), shown in each member's language.
WARMING_UP = Text("note.warming_up")


def about(seconds: float) -> Seconds:
    seconds = max(1, round(seconds))
    return Seconds(seconds if seconds < 90 else round(seconds / 60) * 60)


def starting_again_note(wait: float) -> Text:
    return Text("note.starting_again", wait=about(wait))


def out_of_service_note(wait: float) -> Text:
    return Text("note.out_of_service", wait=about(wait))


class EnginePool:
    """N engine processes taking jobs from one JobQueue, restarted when they die."""

    def __init__(
        self,
        *,
        queue: JobQueue,
        options: Mapping[str, Any],
        count: int = 1,
        start_timeout: float = 600.0,
        restart_limit: int = 3,
        cancel_grace: float = 30.0,
        backoff: Iterable[float] = (1.0,),
        retry_max: float = 300.0,
        context: Any = None,
    ) -> None:
        self.queue = queue
        self.options = options
        self.restart_limit = restart_limit
        self.backoff = tuple(backoff) or (1.0,)
        self.retry_max = retry_max
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
        self.next_try: dict[str, float] = {}  # failing engines: when (monotonic) they start again
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
    def waiting_note(self) -> str:  # a Text: each member reads it in their language
        """Said under queued jobs (and in `queue`) while no engine is ready."""
        if self.ready_count > 0:
            return ""
        if self.next_try:
            wait = max(0.0, min(self.next_try.values()) - time.monotonic())
            if self.unavailable is not None:
                return out_of_service_note(wait)
            return starting_again_note(wait)
        return WARMING_UP

    def retry_delay(self, failures: int) -> float:
        """Seconds before the next start after `failures` failed ones in a row: the
        `backoff` table, then doubling its last value, never more than `retry_max`."""
        table = self.backoff
        if failures <= len(table):
            delay = table[max(failures, 1) - 1]
        else:
            delay = table[-1] * 2.0 ** min(failures - len(table), 30)
        return min(delay, self.retry_max)

    @property
    def random_weights(self) -> bool:
        """Whether an engine runs on random weights (test mode: results are not art)."""
        return any(c.ready is not None and c.ready.random_weights for c in self.clients)

    @property
    def ready_count(self) -> int:
        return sum(1 for c in self.clients if c.ready is not None and c.alive)

    def adopt(self, job: Job, state: str) -> bool:
        return False  # the engines died with the bot: every unanswered job runs again

    def start(self) -> None:
        """Start every engine in the background; jobs wait in the queue meanwhile."""
        if self._tasks:
            return  # already started (tests share one pool between bots)
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
                delay = self.retry_delay(failures)
                self.next_try[client.name] = time.monotonic() + delay
                if (error.permanent or failures > self.restart_limit) and (
                    client.name not in self.broken
                ):
                    why = (
                        "the host must fix the setup"
                        if error.permanent
                        else f"{failures} failed starts in a row"
                    )
                    log.critical(
                        "%s is out of service (%s). It is started again with a back-off of up "
                        "to %g s, and comes back by itself once the problem is fixed.",
                        client.name,
                        why,
                        self.retry_max,
                    )
                    self._mark_broken(client, error.failure)
                log.info("%s: starting again in %g s (failed start %d)", client.name, delay, failures)
                self._tell_waiting()
                await asyncio.sleep(delay)
                continue
            if failures:
                log.warning("%s: started after %d failed start(s)", client.name, failures)
            failures = 0
            self.next_try.pop(client.name, None)
            self.broken.pop(client.name, None)
            self.ready_event.set()
            self._tell_waiting()
            if not await self._work(client):
                return
            if not self._stopping:
                self.restarts += 1
                log.info("%s: restarting the engine process", client.name)

    async def _work(self, client: EngineClient) -> bool:
        """Run jobs until the engine dies (True: restart it) or the queue closes (False)."""
        while client.alive:
            getter = asyncio.ensure_future(self.queue.get())
            died = asyncio.ensure_future(client.wait_dead())
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
                and job.cancelled_by is None
                and not self._stopping
            ):
                job.engine_deaths += 1
                if job.engine_deaths < 2:
                    # The engine died under the job, before or after its first progress:
                    # the job gets one more try on the restarted engine, first in line.
                    log.warning(
                        "job %s: the engine died under it (%s); it goes back to the front "
                        "for one more try",
                        job.id,
                        "before it started" if job.progress is None else "while it ran",
                    )
                    self.queue.put_back(job)
                    continue
                # A second engine died under the same job: the job is the likely cause
                # (too large for this machine, an input that crashes the backend).
                outcome = JobFailed(
                    job.id,
                    ErrorKind.ENGINE_DIED,
                    f"{KILLED_TWO_ENGINES}; it is not tried again. Last: {outcome.message}",
                )
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

    def _tell_waiting(self) -> None:
        """Waiting jobs' status messages show `waiting_note`: have them look again."""
        for job in self.queue.waiting:
            job.notify()

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

    async def abandon(self, timeout: float = 3.0) -> None:
        """Stop at once without answering any job: the journal keeps them for the next
        start. The serve loops end first, so a job whose engine goes away now is not
        failed; the processes are then ended in a thread, off the event loop."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(asyncio.to_thread(c.end_now, timeout) for c in self.clients), return_exceptions=True
        )
