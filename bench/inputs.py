"""What every part of the benchmark runs on: the weights and the two images."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench import pictures


def load_bench_weights(source: str, models_dir: str) -> tuple[Any, str]:
    """"auto": the pretrained VGG-19 when models/ has it (never downloaded), else random
    weights, seed 0. Returns (weights, a description for every output)."""
    from engine.weights import WeightsError, load_weights, random_weights

    if source == "random":
        weights = random_weights(0)
    elif source == "auto":
        try:
            weights = load_weights("auto", models_dir=models_dir, allow_download=False)
        except WeightsError:
            weights = random_weights(0)
    else:
        weights = load_weights(source, models_dir=models_dir, allow_download=False)
    if getattr(weights, "is_random", False):
        kind = ("random VGG-19 (He-normal, seed 0, activations rescaled to unit mean; "
                "losses meaningful for optimisation speed, not for art)")
    else:
        kind = f"pretrained VGG-19 ({weights.source})"
    return weights, kind


def bench_images(content_path: str | None, style_path: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The images named on the command line, else the benchmark's own (deterministic)."""
    from engine.images import ImageLimits, read_image_file

    def load(path: str | None, make) -> np.ndarray:
        if not path:
            return make()
        return read_image_file(path, limits=ImageLimits()).rgb

    return load(content_path, pictures.photo), load(style_path, pictures.texture)


def describe_images(content_path: str | None, style_path: str | None,
                    content: np.ndarray, style: np.ndarray) -> dict[str, str]:
    def one(path: str | None, default: str, image: np.ndarray) -> str:
        return f"{path or default} ({image.shape[1]}x{image.shape[0]})"

    return {"content": one(content_path, "built-in photo-like scene (bench.pictures.photo)", content),
            "style": one(style_path, "built-in brush-stroke texture (bench.pictures.texture)", style)}
