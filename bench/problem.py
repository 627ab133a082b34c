"""The full-resolution loss of one job, built from the engine: what every method is scored on.

Set up by `Engine.prepare`, as `Engine.stylize` sets up its jobs, at the finest
scale: content resized to `settings.size` on its longest side, style to
`style_size(settings)`, the colour mode applied, and the targets and loss weights
there (`PreparedJob.level()`). It always uses the float32 network, so a bfloat16
job is scored on the same loss as a float32 one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine import images
from engine.jobs import TransferSettings

PIXEL_MIN, PIXEL_MAX = 0.0, 255.0


@dataclass
class Problem:
    settings: TransferSettings  # the loss settings (float32)
    objective: Any  # engine.transfer.Objective
    args: tuple
    content: np.ndarray  # what the network sees as content, at full resolution
    style: np.ndarray
    mean_rgb: np.ndarray
    _forward: Callable[..., Any]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.content.shape  # type: ignore[return-value]

    @property
    def pixels(self) -> int:
        return int(self.content.shape[0] * self.content.shape[1])

    def step(self, image: np.ndarray) -> tuple[float, np.ndarray, dict[str, float]]:
        """The engine's compiled loss + image gradient (what an optimiser pays per iteration)."""
        return self.objective.step(np.asarray(image, np.float32), *self.args)

    def loss(self, image: np.ndarray) -> float:
        """The full-resolution loss of `image` (any scale: upsampled first), forward pass only."""
        return float(self._forward(to_full_resolution(image, self.content.shape[:2]), *self.args))


def to_full_resolution(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """What a coarse-to-fine pyramid does between scales: Lanczos upsampling, then clipping."""
    image = np.asarray(image, np.float32)
    if image.shape[:2] != tuple(shape):
        image = images.resize_to(image, tuple(shape))
    return np.clip(image, PIXEL_MIN, PIXEL_MAX).astype(np.float32)


_FORWARD: dict[int, Callable[..., Any]] = {}


def _forward_loss(objective: Any) -> Callable[..., Any]:
    """The loss alone, compiled (a third of a step's cost); the step as a fallback."""
    key = id(objective)
    if key not in _FORWARD:
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            @tf.function(reduce_retracing=True)
            def forward(image, *args):
                total, _ = objective(image, *args)
                return total

            _FORWARD[key] = lambda image, *args: forward(tf.convert_to_tensor(image, tf.float32), *args)
        else:
            _FORWARD[key] = lambda image, *args: objective.step(image, *args)[0]
    return _FORWARD[key]


def loss_settings(settings: TransferSettings) -> TransferSettings:
    return replace(settings, precision="float32")


def build(engine: Any, content: np.ndarray, style: np.ndarray, settings: TransferSettings) -> Problem:
    """The full-resolution problem of `settings` (size, loss weights, layers, colour mode)."""
    job = engine.prepare(content, [style], loss_settings(settings))
    content_seen, args = job.level()
    objective = job.objective
    return Problem(job.settings, objective, args, np.asarray(content_seen, np.float32), job.styles_seen[0],
                   np.asarray(objective.mean_bgr[::-1], np.float32), _forward_loss(objective))
