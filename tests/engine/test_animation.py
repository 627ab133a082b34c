"""Animated GIF / WebP / APNG in, animated out (engine/animation.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine import animation
from engine.errors import InputError
from engine.jobs import ImageLimits, JobRequest, TransferSettings
from tests.engine.conftest import stripes_texture


def moving_square(n: int = 6, width: int = 48, height: int = 36) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        a = np.full((height, width, 3), 60, np.uint8)
        a[:, : width // 2] = (200, 120, 40)
        a[10:20, 4 + 4 * i : 14 + 4 * i] = (20, 200, 220)
        frames.append(a)
    return frames


def gif(frames, durations, loop: int = 0, fmt: str = "GIF") -> bytes:
    pil = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    pil[0].save(buf, fmt, save_all=True, append_images=pil[1:], duration=list(durations), loop=loop)
    return buf.getvalue()


def timing(data: bytes) -> tuple[str, list[int], int]:
    with Image.open(io.BytesIO(data)) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            im.load()
            out.append(im.info.get("duration"))
        return im.format, out, im.info.get("loop")


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_frames_timing_and_loop_are_read():
    data = gif(moving_square(6), [70, 120] * 3, loop=3)
    assert animation.is_animated(data)
    clip = animation.read_animation(data, name="the animation", limits=ImageLimits(), size=48, iterations=10)
    assert len(clip.frames) == 6 and clip.durations == [70, 120] * 3 and clip.loop == 3
    assert clip.shape == (36, 48)


def test_over_the_frame_cap_is_refused_naming_the_caps_or_sampled_when_asked():
    data = gif(moving_square(10), [50] * 10)
    limits = ImageLimits(max_frames=4)
    with pytest.raises(InputError) as e:
        animation.read_animation(data, name="the animation", limits=limits, size=48, iterations=10)
    assert "10 frames" in str(e.value) and "at most 4 frames" in str(e.value)
    assert "256 px" in str(e.value) and "sample:yes" in str(e.value)
    clip = animation.read_animation(data, name="the animation", limits=limits, size=48, iterations=10,
                                    sample=True)
    assert len(clip.frames) == 4 and sum(clip.durations) == 500  # the time is kept
    assert clip.notes


def test_too_much_work_is_refused_or_shrunk():
    data = gif(moving_square(6), [50] * 6)
    limits = ImageLimits(max_animation_work=6 * 48 * 36 * 10)
    with pytest.raises(InputError, match="million pixel-iterations"):
        animation.read_animation(data, name="the animation", limits=limits, size=48, iterations=30)
    clip = animation.read_animation(data, name="the animation", limits=limits, size=48, iterations=30,
                                    sample=True)
    assert animation.work(len(clip.frames), clip.shape, 30) <= limits.max_animation_work
    assert max(clip.shape) < 48


def test_zero_ms_frames_play_at_the_browsers_100_ms():
    data = gif(moving_square(3), [0, 0, 0])
    clip = animation.read_animation(data, name="the animation", limits=ImageLimits(), size=48, iterations=10)
    assert clip.durations == [100, 100, 100]


def test_a_corrupt_frame_in_the_middle_gets_a_clear_message():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (36, 48, 3)).astype(np.uint8) for _ in range(6)]
    data = bytearray(gif(frames, [50] * 6))
    middle = len(data) // 2
    data[middle : middle + 40] = b"\0" * 40
    with pytest.raises(InputError, match="damaged"):
        animation.read_animation(bytes(data), name="the animation", limits=ImageLimits(), size=48,
                                 iterations=10)


def test_one_frame_gif_is_a_still_picture():
    data = gif(moving_square(1), [100])
    assert not animation.is_animated(data)


def test_static_mask_and_flicker():
    a = np.zeros((4, 4, 3), np.float32)
    b = a.copy()
    b[0, 0] = 200.0
    mask = animation.static_mask(a, b)
    assert mask[1, 1, 0] == pytest.approx(1.0) and mask[0, 0, 0] < 1e-3
    out1, out2 = np.full_like(a, 10.0), np.full_like(a, 14.0)
    assert animation.flicker([out1, out2], [a, b]) == pytest.approx(4.0)


def test_encoded_animation_keeps_frames_timing_and_loop():
    frames = [f.astype(np.float32) for f in moving_square(6)]
    data, fmt = animation.encode_animation(frames, [70, 120] * 3, 0)
    kind, durations, loop = timing(data)
    assert fmt in ("gif", "webp") and kind == fmt.upper()
    assert durations == [70, 120] * 3 and loop == 0


def test_run_job_paints_every_frame_in_order_with_progress(engine):
    data = gif(moving_square(6), [70, 120] * 3)
    request = JobRequest("anim1", data, (png(stripes_texture(48, 48)),),
                         TransferSettings(size=48, iterations=3, seed=1, preview_every=0))
    seen = []
    result = engine.run_job(request, on_progress=seen.append)
    assert result.frames == 6 and (result.width, result.height) == (48, 36)
    kind, durations, loop = timing(result.image)
    assert durations == [70, 120] * 3 and loop == 0
    assert [p.frame for p in seen] == sorted(p.frame for p in seen) and seen[-1].frame == 6
    assert seen[-1].iteration == seen[-1].total == 18


def test_a_later_frame_starts_from_the_previous_result_the_first_or_itself():
    background = np.full((4, 6, 3), 100.0, np.float32)
    first_in = background.copy()
    first_in[:, 0] = 250.0  # something at the left in the first frame
    previous_in = background.copy()
    previous_in[:, 2] = 250.0  # it moved to column 2 ...
    frame = background.copy()
    frame[:, 4] = 250.0  # ... and now to column 4
    first_out, previous_out = np.full_like(frame, 11.0), np.full_like(frame, 22.0)
    init, target, mask = animation.frame_start(frame, previous_in, previous_out, first_in, first_out)
    assert init[0, 5, 0] == pytest.approx(22.0)  # never changed: the previous result
    assert init[0, 2, 0] == pytest.approx(11.0, abs=0.1)  # uncovered background: the first frame's
    assert init[0, 4, 0] == pytest.approx(250.0, abs=0.1)  # new: the frame itself, free
    assert mask[0, 4, 0] < 1e-3 and mask[0, 5, 0] == pytest.approx(1.0)
