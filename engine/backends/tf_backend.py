"""TensorFlow: the loss and its image gradient as one traced graph (tf.function + GradientTape)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow as tf

LossFn = Callable[..., tuple[Any, dict[str, Any]]]


def value_and_grad(loss_fn: LossFn) -> Callable[..., tuple[float, np.ndarray, dict[str, float]]]:
    """Wrap `loss_fn(image, *args) -> (total, terms)` as a compiled step on NumPy arrays.

    Only the image gets a gradient: no weight gradients are computed, so a step costs
    about twice the forward convolutions. `reduce_retracing` makes the graph
    shape-polymorphic after the first new size, so a pyramid of scales and each new
    job reuse one trace.
    """

    @tf.function(reduce_retracing=True)
    def step(image, *args):
        with tf.GradientTape() as tape:
            tape.watch(image)
            total, terms = loss_fn(image, *args)
        return total, tape.gradient(total, image), terms

    def call(image: np.ndarray, *args: Any) -> tuple[float, np.ndarray, dict[str, float]]:
        total, grad, terms = step(tf.convert_to_tensor(image, tf.float32), *args)
        return float(total), grad.numpy(), {k: float(v) for k, v in terms.items()}

    return call


def describe() -> dict[str, str]:
    gpus = tf.config.list_logical_devices("GPU")
    return {"backend": "tensorflow", "device": gpus[0].name if gpus else "cpu"}
