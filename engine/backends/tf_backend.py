"""TensorFlow: the loss and its image gradient as one traced graph (tf.function + GradientTape)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

NAME = "tensorflow"
LossFn = Callable[..., tuple[Any, dict[str, Any]]]
Step = Callable[..., tuple[float, np.ndarray, dict[str, float]]]


def value_and_grad(loss_fn: LossFn, variables: Sequence[Any] = ()) -> Step:
    """Wrap `loss_fn(image, *args) -> (total, terms)` as a compiled step on NumPy arrays.

    Only the image gets a gradient: no weight gradients are computed, so a step costs
    about twice the forward convolutions. `reduce_retracing` makes the graph
    shape-polymorphic after the first new size, so a pyramid of scales and each new
    job reuse one trace. `variables` is unused: tf.function reads Keras variables
    by reference.
    """

    @tf.function(reduce_retracing=True)
    def step(image, *args):
        total, grad, terms = _image_value_and_grad(loss_fn, image, args)
        return total, grad, terms

    def call(image: np.ndarray, *args: Any) -> tuple[float, np.ndarray, dict[str, float]]:
        total, grad, terms = step(tf.convert_to_tensor(image, tf.float32), *args)
        return float(total), grad.numpy(), {k: float(v) for k, v in terms.items()}

    return call


def _image_value_and_grad(loss_fn: LossFn, image, args):
    with tf.GradientTape() as tape:
        tape.watch(image)
        total, terms = loss_fn(image, *args)
    return total, tape.gradient(total, image), terms


def compile_loop(loss_fn: LossFn, variables: Sequence[Any], chunk_fn: Callable) -> Callable:
    """`n` optimiser iterations in one tf.function call: keras.ops.fori_loop becomes a
    tf.while_loop whose body holds the GradientTape, so nothing leaves the device
    between iterations. `n` is a tensor, so different chunk lengths share one trace."""

    @tf.function(reduce_retracing=True)
    def run(state, n, args):
        def vg(image):
            return _image_value_and_grad(loss_fn, image, args)

        return chunk_fn(vg, state, n)

    return run


def put(tree):
    """NumPy arrays (nested in lists/tuples) as device tensors, once per job, not per call."""
    return tf.nest.map_structure(lambda a: tf.convert_to_tensor(a, tf.float32), tree)


def loop_count(n: int):
    return tf.constant(n, tf.int32)


def set_row(matrix, index, row):
    index = tf.reshape(tf.cast(index, tf.int32), (1, 1))
    return tf.tensor_scatter_nd_update(matrix, index, row[None])


# --- devices -------------------------------------------------------------------------------


def gpu_names() -> list[str]:
    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
        except Exception:  # noqa: BLE001 - details are cosmetic
            names.append(gpu.name)
    return names


def no_gpu_reason() -> str:
    if not tf.test.is_built_with_cuda():
        return ("this TensorFlow build has no GPU support (tensorflow-cpu, or native Windows, "
                "where TensorFlow has no GPU build: use KERAS_BACKEND=torch or WSL2)")
    return "TensorFlow sees no CUDA GPU (check the NVIDIA driver and `nvidia-smi`)"


def use(kind: str) -> None:
    """Hide the GPUs for "cpu"; for "gpu", let TensorFlow's memory grow as needed
    (the default grabs nearly all of it, which a host that also games resents).
    Both only work before TensorFlow has initialised its devices."""
    try:
        if kind == "cpu":
            if tf.config.list_physical_devices("GPU"):
                tf.config.set_visible_devices([], "GPU")
        else:
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as e:  # devices already initialised
        log.warning("could not set the TensorFlow device to %s: %s", kind, e)


def describe() -> dict[str, str]:
    # The device is engine.device's to name (Engine.describe() adds it).
    return {"backend": NAME, "version": tf.__version__}
