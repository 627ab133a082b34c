"""A fake engine for unit tests of bot/queue.py: no TensorFlow, driven by the request.

Named in `WorkerOptions.engine_factory` ("tests.bot.fake_engine:make_engine"), so it runs in a
real spawned worker process (engine/worker.py) and the pipe, reader thread,
cancellation and death detection are all real; only the maths is fake. The
request's `content` is JSON telling it what to do:
    {"steps": 5, "delay": 0.01, "crash_at": 0, "crash_once": "", "raise": "",
     "ignore_cancel": false}
"""

from __future__ import annotations

import json
import os
import time

from engine.errors import Cancelled, InputError, WeightsError
from engine.jobs import JobRequest, JobResult, Progress


class FakeEngine:
    def describe(self) -> dict[str, str]:
        return {"backend": "fake", "device": "cpu", "weights": "fake"}

    def run_job(self, request: JobRequest, *, on_progress, should_stop) -> JobResult:
        plan = json.loads(request.content.decode())
        steps = plan.get("steps", 3)
        started = time.perf_counter()
        for i in range(1, steps + 1):
            time.sleep(plan.get("delay", 0.01))
            if plan.get("crash_at") == i:
                once = plan.get("crash_once", "")  # a marker file: crash only the first time
                if not once or not os.path.exists(once):
                    if once:
                        open(once, "w").close()
                    os._exit(7)
            error = plan.get("raise")
            if error == "input":
                raise InputError("The photo is broken.", subject="the photo")
            if error == "value":
                raise ValueError("size must be at least 16 px")
            if error == "internal":
                raise ZeroDivisionError("a bug")
            on_progress(
                Progress(
                    i,
                    steps,
                    {"total": 1.0 / i},
                    time.perf_counter() - started,
                    b"preview" if i % 2 == 0 else None,
                    job_id=request.job_id,
                )
            )
            if should_stop() and not plan.get("ignore_cancel"):
                raise Cancelled()
        return JobResult(
            request.job_id,
            b"image",
            "png",
            40,
            32,
            time.perf_counter() - started,
            seed=1,
            iterations=steps,
            final_loss=0.5,
        )


def make_engine(options) -> FakeEngine:
    return FakeEngine()


def broken_weights(options) -> FakeEngine:
    raise WeightsError("VGG-19 weights not found in models/: download them or set [weights] source")


def crash_on_start(options) -> FakeEngine:
    os._exit(9)


def fail_on_start(options) -> FakeEngine:
    import atexit

    atexit.register(time.sleep, 1.0)  # the process lingers after closing its pipe
    raise RuntimeError("TensorFlow could not load")


def weights_from_file(options) -> FakeEngine:
    """Starts only while the file named by [weights] source exists (a host restoring it)."""
    if not os.path.exists(options.weights.source):
        raise WeightsError(f"VGG-19 weights not found at {options.weights.source}")
    return FakeEngine()


def slow_exit(options) -> FakeEngine:
    """An engine whose process lingers 1 s after closing its pipe (TensorFlow's teardown)."""
    import atexit

    atexit.register(time.sleep, 1.0)
    return FakeEngine()
