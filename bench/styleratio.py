"""How painted a benchmark image is, measured apart from the loss every method minimises.

The time-to-quality table says how fast each method gets down the *same* loss. On a real
ImageNet network that is not yet "how fast does it look painted": this module scores
snapshots with the measure of ../shared/realnet/score.py, with the network built by
`keras.applications` from the weights file (not the engine's layers or loss), for each
output O, the photo C resized to O and the painting S resized so its longest side is O's:

  style_ratio  = D(O) / D(C), D(X) = mean over conv1_1..conv5_1 of
                 ||G_l(X) - G_l(S)||_F / ||G_l(S)||_F, G_l = F F^T / (H W)
                 (1.0 = no closer to the painting than the photo; lower = more painted)
  content_dist = ||F_conv4_2(O) - F_conv4_2(C)|| / ||F_conv4_2(C)||

Raw Caffe-scale Grams, unlike the engine's standardised ones (Gatys et al. 2016, eq. 3-5).
Random weights have no meaning here, so `load_scorer` returns None for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

STYLE = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]
CONTENT = "block4_conv2"
MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)  # Caffe/Keras ImageNet mean pixel

# (seconds, style_ratio, content_dist) of one scored snapshot.
ScoredPoint = tuple[float, float, float]


def resized(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    im = Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(im.resize((shape[1], shape[0]), Image.Resampling.LANCZOS), np.float32)


def gram_distance(grams: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
    """Mean over layers of the relative Frobenius distance of Gram matrices."""
    return float(np.mean([np.linalg.norm(g - t) / np.linalg.norm(t) for g, t in zip(grams, targets, strict=True)]))


class StyleScorer:
    """style_ratio and content_dist of images of one problem (photo, painting, output shape)."""

    def __init__(self, net: Any, photo: np.ndarray, painting: np.ndarray, shape: tuple[int, int]) -> None:
        self.net = net
        self.shape = shape
        scale = max(shape) / max(painting.shape[:2])
        painting = resized(painting, (round(painting.shape[0] * scale), round(painting.shape[1] * scale)))
        self.photo_grams, self.photo_content = self._features(resized(photo, shape))
        self.painting_grams, _ = self._features(painting)
        self.photo_distance = gram_distance(self.photo_grams, self.painting_grams)

    def _features(self, image: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        import keras

        out = self.net((image[None, ..., ::-1] - MEAN_BGR).astype(np.float32))  # Caffe: BGR - mean
        feats = [keras.ops.convert_to_numpy(f)[0].astype(np.float64) for f in out]
        flat = [f.reshape(-1, f.shape[-1]) for f in feats[:-1]]
        return [f.T @ f / f.shape[0] for f in flat], feats[-1]

    def score(self, image: np.ndarray) -> tuple[float, float]:
        """(style_ratio, content_dist) of an output image (any size: resized to the problem's)."""
        if tuple(image.shape[:2]) != tuple(self.shape):
            image = resized(image, self.shape)
        grams, content = self._features(np.clip(image, 0, 255))
        ratio = gram_distance(grams, self.painting_grams) / self.photo_distance
        dist = float(np.linalg.norm(content - self.photo_content) / np.linalg.norm(self.photo_content))
        return ratio, dist


def load_network(weights_path: str | Path) -> Any | None:
    """keras.applications' VGG-19 (or VGG-16) on a Keras .h5 file; None for anything else."""
    path = Path(weights_path)
    if path.suffix.lower() not in (".h5", ".keras") or not path.is_file():
        return None
    import keras

    for make in (keras.applications.VGG19, keras.applications.VGG16):
        try:
            vgg = make(include_top=False, weights=str(path))
        except (ValueError, KeyError, OSError):
            continue
        return keras.Model(vgg.input, [vgg.get_layer(n).output for n in STYLE + [CONTENT]])
    return None


def value_at(points: Sequence[ScoredPoint], seconds: float) -> float | None:
    """style_ratio of the last snapshot taken at or before `seconds` (None before the first)."""
    best = None
    for t, ratio, _ in points:
        if t <= seconds + 1e-9:
            best = ratio
    return best


def time_to_ratio(points: Sequence[ScoredPoint], target: float) -> float | None:
    for t, ratio, _ in points:
        if math.isfinite(ratio) and ratio <= target:
            return t
    return None
