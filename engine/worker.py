"""The engine process: TensorFlow and the weights loaded once, then jobs one at a time.

The bot starts this with multiprocessing's "spawn" context and talks to it over one
duplex `multiprocessing.Pipe`:

    bot -> engine:  JobRequest | CancelJob | None (finish and exit)
    engine -> bot:  EngineReady once started, then for each job any number of
                    Progress events and exactly one JobResult or JobFailed.

If the engine cannot start (bad or missing weights, TensorFlow failing to load) it
sends one `JobFailed` with an empty `job_id` instead of `EngineReady` and exits with
status 3 (weights) or 4 (anything else), so the bot can tell a host problem that a
restart will not fix from a crash that a restart might.

Errors cross the boundary as data (DESIGN.md, example 6): the engine's typed
exceptions become `JobFailed` kinds here and nowhere else. A `CancelJob` is read by
a reader thread while the job runs and sets an event that the engine's
`should_stop` checks between iterations. Nothing here imports discord.
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.config import WeightsSettings
from engine.errors import Cancelled, InputError, WeightsError
from engine.jobs import (
    WORKER_EXIT_WEIGHTS,
    CancelJob,
    EngineReady,
    ErrorKind,
    JobFailed,
    JobRequest,
    JobResult,
)

log = logging.getLogger(__name__)

EXIT_WEIGHTS = WORKER_EXIT_WEIGHTS
EXIT_STARTUP = 4
_STOP = object()


@dataclass(frozen=True)
class WorkerOptions:
    """Everything the engine process needs; picklable (it crosses the spawn)."""

    weights: WeightsSettings = field(default_factory=WeightsSettings)
    allow_download: bool = True
    log_level: str = "INFO"
    device: str = "auto"  # [engine] device: auto, cpu or gpu, chosen once per process
    network: str = "vgg19"  # [engine] network: whose weights are loaded at start
    # "module:callable" building the engine from these options. Empty = the real
    # TensorFlow engine; unit tests of the bot's queue name a fake one here.
    engine_factory: str = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> WorkerOptions:
        """Options sent as plain data (the bot does not import this module)."""
        values = dict(values)
        weights = values.get("weights")
        if isinstance(weights, Mapping):
            values["weights"] = WeightsSettings(**weights)
        return cls(**values)


def real_engine(options: WorkerOptions) -> Any:
    """Load the weights and build the VGG-19 engine (imports TensorFlow).

    The weights come first: engine.weights needs no TensorFlow, so a missing or
    broken file is reported in a second rather than after TensorFlow has loaded."""
    from engine.weights import load_weights

    weights = load_weights(
        options.weights.source,
        models_dir=options.weights.models_path(),
        network=options.network,
        random_seed=options.weights.random_seed,
        allow_download=options.allow_download,
        on_progress=None,
    )
    from engine import device
    from engine.transfer import Engine

    device.configure(options.device)  # before the network is built: Keras places it there
    return Engine(weights)


def resolve_factory(spec: str) -> Callable[[WorkerOptions], Any]:
    if not spec:
        return real_engine
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def failure_for(job_id: str, error: BaseException) -> JobFailed:
    """The one place where engine exceptions become error kinds."""
    if isinstance(error, Cancelled):
        return JobFailed(job_id, ErrorKind.CANCELLED, "The job was cancelled.")
    if isinstance(error, InputError):
        return JobFailed(job_id, ErrorKind.BAD_INPUT, str(error))
    if isinstance(error, WeightsError):
        return JobFailed(job_id, ErrorKind.WEIGHTS, str(error), traceback.format_exc())
    if isinstance(error, ValueError):
        return JobFailed(job_id, ErrorKind.BAD_SETTINGS, str(error))
    return JobFailed(
        job_id,
        ErrorKind.INTERNAL,
        f"{type(error).__name__}: {error}",
        "".join(traceback.format_exception(error)),
    )


class _Inbox:
    """Reads the pipe on its own thread so a CancelJob arrives while a job runs."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.current: str | None = None
        self.stop_current = threading.Event()
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self.thread = threading.Thread(target=self._read, name="engine-inbox", daemon=True)

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                message = None  # the bot went away: stop the job and exit
            if message is None:
                self.stop_current.set()
                self.jobs.put(_STOP)
                return
            if isinstance(message, CancelJob):
                with self._lock:
                    if message.job_id == self.current:
                        self.stop_current.set()
                    else:
                        self._cancelled.add(message.job_id)
            elif isinstance(message, JobRequest):
                self.jobs.put(message)
            else:
                log.warning("engine ignored an unexpected message: %r", type(message).__name__)

    def begin(self, job_id: str) -> bool:
        """Mark `job_id` as running; False when it was cancelled before it started."""
        with self._lock:
            self.stop_current.clear()
            if job_id in self._cancelled:
                self._cancelled.discard(job_id)
                return False
            self.current = job_id
            return True

    def end(self) -> None:
        with self._lock:
            self.current = None


def run_one(
    engine: Any, request: JobRequest, send: Callable[[Any], None], should_stop: Callable[[], bool]
) -> JobResult | JobFailed:
    try:
        return engine.run_job(request, on_progress=send, should_stop=should_stop)
    except Exception as error:  # noqa: BLE001 - every failure becomes data
        failure = failure_for(request.job_id, error)
        if failure.kind in (ErrorKind.INTERNAL, ErrorKind.WEIGHTS):
            log.error("job %s failed:\n%s", request.job_id, failure.detail)
        return failure


def main(conn: Any, options: WorkerOptions | Mapping[str, Any] = WorkerOptions()) -> None:
    """The engine process's entry point (the target of multiprocessing.Process)."""
    if not isinstance(options, WorkerOptions):
        options = WorkerOptions.from_mapping(options)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=options.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s engine[{os.getpid()}] %(name)s: %(message)s",
    )
    try:
        engine = resolve_factory(options.engine_factory)(options)
        info = dict(engine.describe())
    except Exception as error:
        weights = isinstance(error, WeightsError)
        kind = ErrorKind.WEIGHTS if weights else ErrorKind.INTERNAL
        message = (
            str(error)
            if weights
            else f"the engine failed to start: {type(error).__name__}: {error}"
        )
        log.error("engine failed to start: %s", message, exc_info=not weights)
        _send_quietly(conn, JobFailed("", kind, message, traceback.format_exc()))
        conn.close()
        sys.exit(EXIT_WEIGHTS if weights else EXIT_STARTUP)

    conn.send(
        EngineReady(
            backend=str(info.get("backend", "?")),
            device=str(info.get("device", "?")),
            weights=str(info.get("weights", options.weights.source)),
            random_weights=options.weights.source == "random",
        )
    )
    inbox = _Inbox(conn)
    inbox.thread.start()
    while True:
        request = inbox.jobs.get()
        if request is _STOP:
            break
        if not inbox.begin(request.job_id):
            conn.send(failure_for(request.job_id, Cancelled()))
            continue
        try:
            outcome = run_one(engine, request, conn.send, inbox.stop_current.is_set)
        finally:
            inbox.end()
        try:
            conn.send(outcome)
        except (BrokenPipeError, OSError):
            break
    conn.close()


def _send_quietly(conn: Any, message: Any) -> None:
    try:
        conn.send(message)
    except (BrokenPipeError, OSError):
        pass


if __name__ == "__main__":  # python -m engine.worker --broker redis://...: a remote worker
    from engine.remote_worker import main as remote_main

    sys.exit(remote_main())
