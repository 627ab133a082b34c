"""The broker: where accepted jobs live until they are answered (see base.py).

`base.Broker` is the interface the bot uses; `local.local_broker` builds the local
backend (an SQLite journal under the data directory and engine processes on this
machine). The bot never imports the engine's worker: only the contract in engine.jobs.
"""

from bot.broker.base import Broker, Runner
from bot.broker.queue import (
    Job,
    JobQueue,
    JobState,
    Outcome,
    QueueClosed,
    QueueFull,
    Refused,
    UserLimitReached,
    new_job_id,
    ordinal,
)

__all__ = [
    "Broker", "Job", "JobQueue", "JobState", "Outcome", "QueueClosed", "QueueFull",
    "Refused", "Runner", "UserLimitReached", "new_job_id", "ordinal",
]  # fmt: skip
