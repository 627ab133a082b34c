"""Animated GIF / WebP / APNG in, animated out.

Frames are stylised in order. The first starts as any job does; each later one starts
from the previous frame's result where the input did not change, from the first frame's
result where it changed back to what the first frame showed (uncovered background), and
from the new frame itself elsewhere (`frame_start`; no motion warp: optical flow was not
worth its cost at GIF sizes), and runs FRAME_FRACTION of the iterations. A
temporal term (transfer.TemporalObjective) penalises change from the previous result
where the input did not change (mask `static_mask`; uncovered background is held to the
first frame's result), so the output does not flicker.

Caps (ImageLimits): frames (max_frames), size (max_frame_side, longest side) and work
(frames x pixels x iterations, max_animation_work). Over a cap the animation is refused
with a message naming the caps, or sampled down (frames dropped evenly with their
durations merged into the kept ones; size reduced) when the member opted in.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from engine import images
from engine.errors import InputError
from engine.jobs import ImageLimits, Progress, TransferSettings

# Later frames start from the previous result: this fraction of the iterations suffices.
FRAME_FRACTION = 1 / 3
MIN_FRAME_ITERATIONS = 10
# A frame time of 0 or 10 ms is played at 100 ms by browsers and Discord (the GIF
# convention for "as fast as possible"); we write what they show.
MIN_DURATION_MS, DEFAULT_DURATION_MS = 20, 100
# Input change (0..255 levels, mean over RGB) at which the temporal term lets go by half.
STATIC_LEVELS = 12.0


@dataclass(frozen=True)
class Animation:
    frames: list[np.ndarray]  # RGB float32 0..255, all one shape
    durations: list[int]  # ms per frame
    loop: int  # 0 = forever (GIF's NETSCAPE loop count)
    notes: tuple[str, ...] = ()  # what was sampled down

    @property
    def shape(self) -> tuple[int, int]:
        return self.frames[0].shape[:2]


def is_animated(data: bytes) -> bool:
    """True for a GIF, WebP or APNG with more than one frame (cheap: header and frame count)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format in ("GIF", "WEBP", "PNG") and getattr(im, "n_frames", 1) > 1
    except Exception:  # noqa: BLE001 - not an image at all: the normal path says why
        return False


def frame_count(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as im:
        return int(getattr(im, "n_frames", 1))


def frame_iterations(iterations: int) -> int:
    return min(iterations, max(MIN_FRAME_ITERATIONS, round(iterations * FRAME_FRACTION)))


def work(frames: int, shape: tuple[int, int], iterations: int) -> int:
    """Pixels x iterations of a whole animation (the first frame runs all iterations)."""
    return shape[0] * shape[1] * (iterations + (frames - 1) * frame_iterations(iterations))


def caps_text(limits: ImageLimits) -> str:
    return (f"at most {limits.max_frames} frames, {limits.max_frame_side} px on the longest side, "
            f"and {limits.max_animation_work / 1e6:g} million pixel-iterations in all")


def read_animation(data: bytes, *, name: str, limits: ImageLimits, size: int, iterations: int,
                   sample: bool = False) -> Animation:
    """The frames at the job's size (at most max_frame_side), their durations and loop
    count. Over a cap: InputError naming the caps, or sampled down when `sample`."""
    images.probe(data, name=name, limits=limits)  # bytes, format and pixel limits first
    notes: list[str] = []
    with Image.open(io.BytesIO(data)) as im:
        try:
            count = int(getattr(im, "n_frames", 1))
        except Exception as e:  # noqa: BLE001 - counting frames reads them all
            raise InputError(
                f"{name[:1].upper()}{name[1:]} is damaged part-way through ({type(e).__name__}), so I "
                "can't read all its frames. Please export it again and resend.", subject=name) from None
        loop = int(im.info.get("loop", 0) or 0)
        keep = list(range(count))
        if count > limits.max_frames:
            if not sample:
                raise InputError(
                    f"{name[:1].upper()}{name[1:]} has {count} frames; I paint animations of "
                    f"{caps_text(limits)}. Send a shorter one, or add `sample:yes` and I'll "
                    f"keep {limits.max_frames} frames spread over it.", subject=name)
            keep = sorted({round(i * (count - 1) / (limits.max_frames - 1)) for i in range(limits.max_frames)})
            notes.append(f"{count} frames sampled down to {len(keep)}")
        frames, durations = [], []
        raw = []
        for index in range(count):
            try:
                im.seek(index)
                frame = im.convert("RGB")
                frame.load()
            except Exception as e:  # noqa: BLE001 - Pillow raises many kinds on bad data
                raise InputError(
                    f"Frame {index + 1} of {name} is damaged ({type(e).__name__}), so I can't read "
                    "the animation. Please export it again and resend.", subject=name) from None
            raw.append(int(im.info.get("duration", 0) or 0))
            if index in keep:
                frames.append(frame.copy())
        # A dropped frame's time goes to the kept frame before it: the timing is kept.
        for j, index in enumerate(keep):
            end = keep[j + 1] if j + 1 < len(keep) else count
            durations.append(sum(_shown(raw[k]) for k in range(index, end)))
    side = min(size, limits.max_frame_side)
    if size > limits.max_frame_side and not sample:
        notes.append(f"size reduced to {side} px (animations are at most {limits.max_frame_side} px)")
    out = [images.resize_longest(np.asarray(f, np.float32), side) for f in frames]
    shape = out[0].shape[:2]
    while work(len(out), shape, iterations) > limits.max_animation_work:
        if not sample:
            raise InputError(
                f"{name[:1].upper()}{name[1:]} is too much work as it is: {len(out)} frames of "
                f"{shape[1]}×{shape[0]} px at {iterations} iterations. I paint animations of "
                f"{caps_text(limits)}. Send a shorter or smaller one, ask for fewer iterations, "
                "or add `sample:yes` and I'll shrink it to fit.", subject=name)
        side = int(side * 0.9)
        if side < 32:
            raise InputError(f"{name[:1].upper()}{name[1:]} does not fit {caps_text(limits)} even "
                             "at 32 px; send fewer frames.", subject=name)
        out = [images.resize_longest(np.asarray(f, np.float32), side) for f in frames]
        shape = out[0].shape[:2]
        if not any(n.startswith("size") for n in notes):
            notes.append("size reduced to fit the work cap")
    return Animation(out, durations, loop, tuple(notes))


def _shown(ms: int) -> int:
    return DEFAULT_DURATION_MS if ms < MIN_DURATION_MS else ms


def static_mask(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(H, W, 1) in (0, 1]: 1 where the input frame did not change, towards 0 where it did."""
    change = np.abs(np.asarray(current, np.float32) - np.asarray(previous, np.float32)).mean(axis=-1)
    return np.exp(-np.square(change / STATIC_LEVELS) * math.log(2.0))[..., None].astype(np.float32)


def frame_start(frame: np.ndarray, previous_in: np.ndarray, previous_out: np.ndarray,
                first_in: np.ndarray, first_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start image, temporal target, temporal mask) of a later frame.

    Where the input did not change since the previous frame: the previous result.
    Where it changed but looks as it did in the first frame (what a moving thing uncovers
    of a still background): the first frame's result, so the background comes back
    painted as it was. Elsewhere (something new): the frame itself, painted afresh like
    any job's start, and free of the temporal term. (Starting from the old result plus
    the input's change left ghosts of whatever moved away, and the temporal term then
    held them in place; starting uncovered background from the photo left a less
    painted trail.)
    """
    still = static_mask(previous_in, frame)
    back = (1.0 - still) * static_mask(first_in, frame)
    known = still + back
    target = (still * previous_out + back * first_out) / np.maximum(known, 1e-6)
    init = np.clip(known * target + (1.0 - known) * frame, 0.0, 255.0).astype(np.float32)
    return init, target.astype(np.float32), known.astype(np.float32)


def flicker(outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray], threshold: float = 2.0) -> float:
    """Mean absolute frame-to-frame change of the output (0..255) where the input did not
    change (mean input change below `threshold` levels)."""
    total, count = 0.0, 0
    for k in range(1, len(outputs)):
        still = np.abs(inputs[k] - inputs[k - 1]).mean(axis=-1) < threshold
        if still.any():
            total += float(np.abs(outputs[k] - outputs[k - 1])[still].sum())
            count += int(still.sum()) * outputs[k].shape[-1]
    return total / max(count, 1)


ProgressCallback = Callable[[Progress], None]


def stylize_animation(engine, animation: Animation, styles: Sequence[np.ndarray], settings: TransferSettings,
                      *, on_progress: ProgressCallback | None = None, should_stop=None,
                      temporal_weight: float | None = None) -> list[np.ndarray]:
    """Every frame stylised in order (see the module's docstring); RGB float32 frames."""
    weight = settings.temporal_weight if temporal_weight is None else temporal_weight
    side = max(animation.shape)
    first = replace(settings, size=side)
    later = replace(first, iterations=frame_iterations(settings.iterations))
    total = first.iterations + (len(animation.frames) - 1) * later.iterations
    outputs: list[np.ndarray] = []
    done = 0
    for index, frame in enumerate(animation.frames):
        def report(p: Progress, done=done, index=index) -> None:
            if on_progress is not None:
                on_progress(replace(p, iteration=done + p.iteration, total=total,
                                    fraction=(done + p.iteration) / total, frame=index + 1,
                                    frames=len(animation.frames)))

        if index == 0:
            result = engine.stylize(frame, styles, first, on_progress=report, should_stop=should_stop)
        else:
            init, target, mask = frame_start(frame, animation.frames[index - 1], outputs[-1],
                                             animation.frames[0], outputs[0])
            temporal = (target, mask, weight) if weight > 0 else None
            result = engine.stylize(frame, styles, later, on_progress=report, should_stop=should_stop,
                                    init=init, temporal=temporal)
        outputs.append(result.image)
        done += first.iterations if index == 0 else later.iterations
    return outputs


def encode_animation(frames: Sequence[np.ndarray], durations: Sequence[int], loop: int, *,
                     quality: int = 80, max_bytes: int | None = None,
                     fmt: str | None = None) -> tuple[bytes, str]:
    """The frames as an animated GIF or WebP, whichever is smaller (and, with
    `max_bytes`, the first that fits: WebP at falling quality after both); `fmt`
    ("gif" or "webp") forces one."""
    pil = [Image.fromarray(np.clip(np.asarray(f) + 0.5, 0, 255).astype(np.uint8)) for f in frames]
    gif = io.BytesIO()
    # One adaptive palette per frame; no dithering, so still areas stay still.
    quantised = [p.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) for p in pil]
    quantised[0].save(gif, "GIF", save_all=True, append_images=quantised[1:], duration=list(durations),
                      loop=loop, disposal=1, optimize=False)
    webp = io.BytesIO()
    pil[0].save(webp, "WEBP", save_all=True, append_images=pil[1:], duration=list(durations), loop=loop,
                quality=quality, method=4)
    if fmt is not None:
        return (gif.getvalue(), "gif") if fmt == "gif" else (webp.getvalue(), "webp")
    candidates = sorted([(gif.getvalue(), "gif"), (webp.getvalue(), "webp")], key=lambda c: len(c[0]))
    if max_bytes is None or len(candidates[0][0]) <= max_bytes:
        return candidates[0]
    for q in (60, 40, 20):
        smaller = io.BytesIO()
        pil[0].save(smaller, "WEBP", save_all=True, append_images=pil[1:], duration=list(durations),
                    loop=loop, quality=q, method=4)
        if len(smaller.getvalue()) <= max_bytes:
            return smaller.getvalue(), "webp"
    return candidates[0]


def read_frames(data: bytes) -> tuple[list[np.ndarray], list[int], int]:
    """An animation's frames (RGB), durations (ms) and loop count, as they are."""
    frames, durations = [], []
    with Image.open(io.BytesIO(data)) as im:
        loop = int(im.info.get("loop", 0) or 0)
        for index in range(getattr(im, "n_frames", 1)):
            im.seek(index)
            frames.append(np.asarray(im.convert("RGB"), np.float32))
            durations.append(_shown(int(im.info.get("duration", 0) or 0)))
    return frames, durations, loop


def smaller_encodings(data: bytes, *, quality: int, min_side: int = 64):
    """An animated result re-encoded smaller, lazily, for an upload limit: WebP at the
    given quality and lower, then every frame shrunk by 15 % a step, as (data, format,
    width, height) (bot/replies.py says why, in the member's language)."""
    frames, durations, loop = read_frames(data)
    height, width = frames[0].shape[:2]
    for q in (quality, 60, 40):
        out = io.BytesIO()
        pil = [Image.fromarray(np.clip(f + 0.5, 0, 255).astype(np.uint8)) for f in frames]
        pil[0].save(out, "WEBP", save_all=True, append_images=pil[1:], duration=durations, loop=loop,
                    quality=q, method=4)
        yield out.getvalue(), "webp", width, height
    for h, w in images.shrinking_sizes(height, width, min_side):
        small = [images.resize_to(f, (h, w)) for f in frames]
        data, fmt = encode_animation(small, durations, loop, quality=40)
        yield data, fmt, w, h
