"""bot/replies.py: what the status message says, and the result's fallback encodings."""

from __future__ import annotations

import io
import itertools

from PIL import Image

from bot.broker import Job, JobState
from bot.replies import (
    done_fraction,
    duration,
    failure_text,
    progress_bar,
    result_encodings,
    status_text,
)
from engine.jobs import ErrorKind, JobFailed, JobRequest, JobResult, Progress

from .conftest import png


def job(state=JobState.QUEUED, position=1, progress=None) -> Job:
    j = Job(JobRequest("abcd1234", b"", ()), user_id=1)
    j.state, j.position, j.progress = state, position, progress
    return j


def test_progress_bar_and_duration():
    assert (
        progress_bar(0) == "▱" * 10
        and progress_bar(0.34) == "▰▰▰" + "▱" * 7
        and progress_bar(1) == "▰" * 10
    )
    assert [duration(s) for s in (0.4, 42, 61, 600, 3725)] == [
        "0 s",
        "42 s",
        "1 min 1 s",
        "10 min",
        "1 h 2 min",
    ]


def test_status_text_follows_the_job():
    assert status_text(job(position=1)) == "⏳ Queued — you are next in line. (job `abcd1234`)"
    assert "you are 3rd in line" in status_text(job(position=3))
    assert "warming up" in status_text(job(), note="The painter is still warming up.")
    assert status_text(job(JobState.RUNNING)) == "🎨 Starting… (job `abcd1234`)"
    running = job(JobState.RUNNING, progress=Progress(25, 100, {}, 10.0))
    assert status_text(running) == "🎨 Painting ▰▰▱▱▱▱▱▱▱▱ 25% · about 30 s left (job `abcd1234`)"
    weighted = job(JobState.RUNNING, progress=Progress(50, 100, {}, 10.0, fraction=0.2))
    assert done_fraction(weighted.progress) == 0.2 and "20% · about 40 s left" in status_text(
        weighted
    )
    running.cancelled_by = 7
    assert status_text(running).startswith("🛑 Stopping…")


def test_failure_texts():
    j = job()
    assert failure_text(j, JobFailed(j.id, ErrorKind.CANCELLED, "Cancelled by Mod.")) == (
        "🛑 Cancelled by Mod. (job `abcd1234`)"
    )
    assert "the photo is broken" not in failure_text(
        j, JobFailed(j.id, ErrorKind.BAD_INPUT, "the photo is broken")
    )
    assert "The photo is broken" in failure_text(
        j, JobFailed(j.id, ErrorKind.BAD_INPUT, "the photo is broken")
    )
    internal = failure_text(
        j, JobFailed(j.id, ErrorKind.INTERNAL, "KeyError: 'x'", "Traceback ...")
    )
    assert "abcd1234" in internal and "KeyError" not in internal and "Traceback" not in internal
    assert "crashed" in failure_text(j, JobFailed(j.id, ErrorKind.ENGINE_DIED, "killed"))


def test_result_encodings_get_smaller():
    data = png(400, 300, seed=3)
    result = JobResult("j", data, "png", 400, 300, 1.0, 1, 10, 0.0)
    encodings = list(itertools.islice(result_encodings(result, quality=92), 6))
    assert encodings[0].data == data and encodings[0].note == ""
    assert [e.format for e in encodings[1:3]] == ["jpeg", "webp"]
    assert Image.open(io.BytesIO(encodings[1].data)).format == "JPEG"
    shrunk = encodings[3:]
    assert [e.width for e in shrunk] == [340, 289, 246] and all(
        "shrunk to" in e.note for e in shrunk
    )
    assert all(len(b.data) < len(a.data) for a, b in itertools.pairwise(shrunk))
    assert Image.open(io.BytesIO(shrunk[0].data)).size == (340, 255)
