"""Regenerate the README gallery with real ImageNet weights.

    python docs/gallery/make_gallery.py WEIGHTS.h5 [--size 512]

WEIGHTS.h5 is a VGG-19-layout Keras file, e.g. the one ../shared/realnet/build_weights.py
writes (vgg19_layout_from_vgg16_notop.h5) or the real Keras VGG-19 notop file. Writes small
JPEGs beside this script: three photo/style pairs at subtle / normal / strong, one pair with
colour preserved (luminance) and one with the photo preset, all at the engine's defaults
otherwise, plus gallery.json with the settings and timings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "samples"
PAIRS = [("chelsea.jpg", "hubble_deep_field.jpg"), ("coffee.jpg", "logo.png"),
         ("astronaut.jpg", "brick.jpg")]
STEPS = ("subtle", "normal", "strong")


def rgb(name: str) -> np.ndarray:
    with Image.open(SAMPLES / name) as im:
        return np.asarray(im.convert("RGB"), np.float32)


def save(image: np.ndarray, path: Path) -> None:
    Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8)).save(
        path, quality=80, optimize=True, progressive=True)


def jobs(settings_cls, steps, apply_preset):
    """(file name, photo, style, settings) for every picture of the gallery."""
    base = settings_cls(seed=1, preview_every=0)
    for photo, style in PAIRS:
        for step in STEPS:
            yield (f"{Path(photo).stem}-{step}.jpg", photo, style,
                   base.with_(style_strength=base.style_strength * steps[step]))
    yield "chelsea-luminance.jpg", "chelsea.jpg", "hubble_deep_field.jpg", base.with_(color="luminance")
    yield "coffee-photo-preset.jpg", "coffee.jpg", "logo.png", apply_preset(base, "photo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--only", nargs="*", default=None, metavar="FILE",
                        help="remake only these pictures (e.g. chelsea-subtle.jpg); the others and "
                             "their gallery.json entries are kept")
    args = parser.parse_args()

    from engine.jobs import STRENGTH_STEPS, TransferSettings, apply_preset
    from engine.transfer import Engine
    from engine.weights import read_weights_file

    engine = Engine(read_weights_file(args.weights))
    record = {"weights": str(args.weights.name), "size": args.size, "pictures": []}
    old = {}
    if args.only and (HERE / "gallery.json").exists():
        old = {p["file"]: p for p in json.loads((HERE / "gallery.json").read_text())["pictures"]}
    for name, photo, style, settings in jobs(TransferSettings, STRENGTH_STEPS, apply_preset):
        if args.only and name not in args.only and name in old:
            record["pictures"].append(old[name])
            continue
        settings = settings.with_(size=args.size)
        started = time.perf_counter()
        result = engine.stylize(rgb(photo), [rgb(style)], settings)
        save(result.image, HERE / name)
        seconds = time.perf_counter() - started
        record["pictures"].append({"file": name, "photo": photo, "style": style, "seconds": round(seconds, 1),
                                   "style_strength": settings.style_strength, "color": settings.color})
        print(f"{name}: {seconds:.0f} s", flush=True)
    (HERE / "gallery.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
