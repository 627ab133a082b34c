"""An animated result that is too large for the upload limit stays animated as it shrinks."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bot.replies import result_encodings
from engine.jobs import JobResult


def test_an_animation_shrinks_as_animated_webp_keeping_its_frames_and_timing():
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (96, 128, 3)).astype(np.uint8)) for _ in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=[70, 120, 70, 120], loop=0)
    result = JobResult("0000cccc", buf.getvalue(), "gif", 128, 96, 1.0, 1, 3, 0.5, frames=4)
    encodings = result_encodings(result, quality=92)
    first = next(encodings)
    assert first.data == result.image and first.format == "gif"
    for encoded in list(encodings)[:5]:
        with Image.open(io.BytesIO(encoded.data)) as im:
            assert im.n_frames == 4 and encoded.format in ("gif", "webp")
            durations = []
            for i in range(im.n_frames):
                im.seek(i)
                im.load()
                durations.append(im.info.get("duration"))
            assert durations == [70, 120, 70, 120]
        assert encoded.note
