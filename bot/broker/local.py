"""The local backend: an SQLite journal under `[queue] data_dir` and engine processes on
this machine. Nothing else to run, which is why it is the default."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.broker.base import Broker
from bot.broker.journal import Journal
from bot.broker.queue import JobQueue
from bot.pool import EnginePool
from bot.settings import Settings

JOURNAL_FILE = "jobs.sqlite3"


def worker_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """What an engine process needs, as plain data (engine.worker.WorkerOptions' fields)."""
    weights = settings.engine.weights
    options: dict[str, Any] = {
        "weights": {
            "source": weights.source,
            "models_dir": weights.models_dir,
            "random_seed": weights.random_seed,
        },
        "allow_download": settings.bot.allow_download,
        "log_level": settings.bot.log_level,
        "device": settings.engine.transfer.device,
        "network": settings.engine.transfer.network,
    }
    options.update(overrides)
    if hasattr(options["weights"], "__dataclass_fields__"):  # a WeightsSettings from a test
        options["weights"] = dict(options["weights"].__dict__)
    return options


def local_queue(settings: Settings) -> JobQueue:
    return JobQueue(max_waiting=settings.bot.queue_size, per_user_limit=settings.bot.per_user_limit)


def engine_pool(
    settings: Settings, queue: JobQueue, *, backoff: Iterable[float] | None = None, **overrides: Any
) -> EnginePool:
    """The engine processes of `[bot] engines`; `overrides` change the worker's options."""
    return EnginePool(
        queue=queue,
        options=worker_options(settings, **overrides),
        count=settings.bot.engines,
        start_timeout=settings.bot.engine_start_timeout,
        restart_limit=settings.bot.engine_restart_limit,
        retry_max=settings.bot.engine_retry_max,
        cancel_grace=settings.bot.cancel_grace,
        **({"backoff": backoff} if backoff is not None else {}),
    )


def local_broker(settings: Settings, *, journal: Journal | None = None) -> Broker:
    queue = local_queue(settings)
    return Broker(
        queue=queue,
        runner=engine_pool(settings, queue),
        job_timeout=settings.bot.job_timeout,
        journal=journal or Journal(settings.queue.data_path() / JOURNAL_FILE),
    )
