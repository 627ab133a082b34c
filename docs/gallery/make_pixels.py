"""The README's issue-14 examples and numbers, with real ImageNet weights.

    python docs/gallery/make_pixels.py WEIGHTS.h5 [--out DIR] [--skip-upscale]

1. Animation: a 160-px, 8-frame GIF made from the samples (the coffee cup sliding over
   chelsea, 120 ms a frame) stylised with hubble at temporal_weight 0, 100 (the default)
   and 1000; prints the flicker (mean |output change| where the input did not change) of
   each and writes walk.gif (the input) and walk-styled.gif (weight 100) beside this script.
2. Upscale: chelsea x hubble at 512 px (150 iterations), then Upscale x2 to 1024 px from
   that result (30 iterations, the default) against a fresh 1024-px job (120 iterations), the engine's
   loss against time of both (upscale.json in --out) and upscaled.jpg beside this script.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "samples"


def rgb(name: str) -> np.ndarray:
    with Image.open(SAMPLES / name) as im:
        return np.asarray(im.convert("RGB"), np.float32)


def walk_gif() -> bytes:
    bg = Image.open(SAMPLES / "chelsea.jpg").convert("RGB").resize((160, 106), Image.LANCZOS)
    patch = Image.open(SAMPLES / "coffee.jpg").convert("RGB").resize((36, 24), Image.LANCZOS)
    frames = []
    for i in range(8):
        frame = bg.copy()
        frame.paste(patch, (8 + 14 * i, 70))
        frames.append(frame)
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=120, loop=0)
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights")
    p.add_argument("--out", type=Path, default=Path("/tmp/stylebot-pixels"))
    p.add_argument("--skip-upscale", action="store_true")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    from engine import animation
    from engine.jobs import ImageLimits, TransferSettings
    from engine.transfer import Engine
    from engine.weights import load_weights

    engine = Engine(load_weights(a.weights, models_dir=a.out, network="vgg19"))
    style = rgb("hubble_deep_field.jpg")
    data = walk_gif()
    (HERE / "walk.gif").write_bytes(data)
    clip = animation.read_animation(data, name="walk.gif", limits=ImageLimits(), size=160, iterations=60)
    for weight in (0.0, 100.0, 1000.0):
        started = time.perf_counter()
        frames = animation.stylize_animation(engine, clip, [style], TransferSettings(size=160, iterations=60, seed=1),
                                             temporal_weight=weight)
        print(json.dumps({"temporal_weight": weight, "flicker": animation.flicker(frames, clip.frames),
                          "seconds": round(time.perf_counter() - started, 1)}), flush=True)
        if weight == 100.0:
            gif, _ = animation.encode_animation(frames, clip.durations, clip.loop, fmt="gif")
            (HERE / "walk-styled.gif").write_bytes(gif)
    if a.skip_upscale:
        return
    content = rgb("chelsea.jpg")
    record: dict[str, list] = {}

    def run(name, settings, init=None):
        rows = record.setdefault(name, [])
        result = engine.stylize(content, [style], settings, init=init,
                                on_progress=lambda q: rows.append((q.iteration, q.elapsed, q.losses["total"])))
        return result.image

    base = TransferSettings(seed=1, preview_every=0)
    small = run("fresh512", base.with_(size=512, iterations=150))
    big = run("upscale1024", base.with_(size=1024, iterations=30), init=small)
    run("fresh1024", base.with_(size=1024, iterations=120))
    (a.out / "upscale.json").write_text(json.dumps(record))
    Image.fromarray(np.clip(big + 0.5, 0, 255).astype(np.uint8)).save(HERE / "upscaled.jpg", quality=80,
                                                                      optimize=True, progressive=True)


if __name__ == "__main__":
    main()
