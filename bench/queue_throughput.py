"""Jobs per minute with 1, 2 and 4 local engine processes, and the event loop's lag.

    python -m bench.queue_throughput [--engines 1,2,4] [--jobs 12] [--size 40] [--iterations 20]

Runs the bot's real broker (fair queue, SQLite journal in a temporary folder) and its
engine pool with random weights, without Discord: what is measured is the job system,
not the painting. The loop lag is how late a 10 ms timer fires on the broker's event
loop while the jobs run (the bot's loop does the same work plus Discord's). Each
engine count gets fresh processes; the time starts once every engine is ready.
A benchmark, not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bot.broker import Broker, Job, new_job_id
from bot.broker.journal import Journal
from bot.broker.local import engine_pool, local_queue
from bot.settings import Settings, bot_settings, queue_settings
from engine.config import deep_merge, engine_config, load_raw
from engine.jobs import JobRequest


def png(seed: int, side: int = 48) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def settings_for(engines: int, size: int, iterations: int, data: Path) -> Settings:
    raw = deep_merge(
        load_raw(None),
        {
            "engine": {"size": size, "iterations": iterations, "preview_every": 0},
            "weights": {"source": "random"},
            "bot": {"engines": engines, "queue_size": 1000, "per_user_limit": 1000},
            "queue": {"data_dir": str(data)},
        },
    )
    return Settings(bot=bot_settings(raw), engine=engine_config(raw), queue=queue_settings(raw))


async def lag_probe(samples: list[float], stop: asyncio.Event, every: float = 0.01) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(every)
        samples.append(time.perf_counter() - before - every)


async def run(engines: int, jobs: int, size: int, iterations: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(engines, size, iterations, Path(tmp))
        queue = local_queue(settings)
        pool = engine_pool(settings, queue)
        broker = Broker(queue=queue, runner=pool, journal=Journal(Path(tmp) / "jobs.sqlite3"))
        broker.start()
        while pool.ready_count < engines:
            await asyncio.sleep(0.1)
        lags: list[float] = []
        stop = asyncio.Event()
        probe = asyncio.create_task(lag_probe(lags, stop))
        started = time.perf_counter()
        submitted = []
        for i in range(jobs):
            request = JobRequest(new_job_id(), png(i), (png(1000 + i),), settings.engine.transfer)
            job = Job(request, user_id=i % 4, guild_id=i % 2)
            await broker.submit(job, {"source": "m"})
            submitted.append(job)
        outcomes = await asyncio.gather(*(j.outcome() for j in submitted))
        elapsed = time.perf_counter() - started
        stop.set()
        await probe
        await pool.stop(grace=0, reason="benchmark over")
        failed = sum(1 for o in outcomes if not hasattr(o, "image"))
        return {
            "engines": engines,
            "jobs": jobs,
            "failed": failed,
            "seconds": elapsed,
            "jobs_per_min": 60 * jobs / elapsed,
            "lag_median_ms": 1000 * statistics.median(lags),
            "lag_p99_ms": 1000 * sorted(lags)[int(0.99 * (len(lags) - 1))],
            "lag_max_ms": 1000 * max(lags),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="1,2,4")
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    print("| engines | jobs | failed | s | jobs/min | loop lag median / p99 / max (ms) |")
    print("|---|---|---|---|---|---|")
    for n in (int(v) for v in args.engines.split(",")):
        r = asyncio.run(run(n, args.jobs, args.size, args.iterations))
        print(
            f"| {n} | {r['jobs']} | {r['failed']} | {r['seconds']:.1f} | {r['jobs_per_min']:.1f} "
            f"| {r['lag_median_ms']:.1f} / {r['lag_p99_ms']:.1f} / {r['lag_max_ms']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
