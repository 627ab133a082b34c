"""PyTorch: autograd for the image gradient, eager execution.

The network's variables are frozen (FeatureNetwork sets trainable=False, so their
tensors have requires_grad=False): only the image is differentiated and no weight
gradients are ever computed; target features (computed without a grad-requiring
input) build no autograd graph at all, as under `torch.no_grad`.

torch.compile is off by default: on a 2-core CPU it took 33 s to compile the
256-px step and then ran it 7 % faster (0.245 s instead of 0.263 s), and each new
image shape compiles again. `STYLEBOT_TORCH_COMPILE=1` (or a torch.compile mode
name) turns it on for the step; bench/gpu.sh measures it on a GPU, where Python's
per-layer overhead, which compiling removes, matters more.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from keras.src.backend.torch import core as keras_torch

log = logging.getLogger(__name__)

NAME = "torch"
LossFn = Callable[..., tuple[Any, dict[str, Any]]]
Step = Callable[..., tuple[float, np.ndarray, dict[str, float]]]


def device() -> torch.device:
    return torch.device(keras_torch.get_device())


def _to_tensors(value: Any) -> Any:
    """NumPy arrays (and nested lists/tuples of them) as float32 tensors on the device."""
    if isinstance(value, (list, tuple)):
        return type(value)(_to_tensors(v) for v in value)
    if isinstance(value, torch.Tensor):
        return value.to(device())
    if isinstance(value, (np.ndarray, np.generic, float, int)):
        return torch.as_tensor(np.asarray(value, np.float32), device=device())
    return value


def _image_value_and_grad(loss_fn: LossFn, image: torch.Tensor, args: Sequence[Any]):
    with torch.enable_grad():
        x = image.detach().requires_grad_(True)
        total, terms = loss_fn(x, *args)
        (grad,) = torch.autograd.grad(total, x)
    return total.detach(), grad, {k: v.detach() for k, v in terms.items()}


def _maybe_compile(fn: Callable) -> Callable:
    """STYLEBOT_TORCH_COMPILE=1 (or a mode: reduce-overhead, max-autotune) compiles the
    step with torch.compile, to measure it; one compilation per image shape."""
    mode = os.environ.get("STYLEBOT_TORCH_COMPILE", "").strip()
    if mode in ("", "0"):
        return fn
    return torch.compile(fn, dynamic=False, mode=None if mode == "1" else mode)


def value_and_grad(loss_fn: LossFn, variables: Sequence[Any] = ()) -> Step:
    """`loss_fn(image, *args) -> (total, terms)` as a step on NumPy arrays (autograd)."""
    step = _maybe_compile(lambda image, args: _image_value_and_grad(loss_fn, image, args))

    def call(image: np.ndarray, *args: Any) -> tuple[float, np.ndarray, dict[str, float]]:
        total, grad, terms = step(_to_tensors(np.asarray(image, np.float32)), _to_tensors(args))
        return float(total), grad.cpu().numpy(), {k: float(v) for k, v in terms.items()}

    return call


def compile_loop(loss_fn: LossFn, variables: Sequence[Any], chunk_fn: Callable) -> Callable:
    """`n` iterations as one Python loop of device kernels: no tensor leaves the device
    and nothing waits for the GPU inside the loop (no .item(), no host copies), so
    the GPU queue stays full; keras.ops.fori_loop is a plain loop on this backend."""
    vg_step = _maybe_compile(lambda image, args: _image_value_and_grad(loss_fn, image, args))

    def run(state, n, args):
        args = _to_tensors(args)

        def vg(image):
            return vg_step(image, args)

        with torch.no_grad():
            return chunk_fn(vg, state, n)

    return run


def put(tree):
    """NumPy arrays (nested in lists/tuples) as device tensors, once per job, not per call."""
    return _to_tensors(tree)


def loop_count(n: int) -> int:
    return int(n)


def set_row(matrix, index, row):
    matrix[index] = row  # in place: the loop owns its state
    return matrix


# --- devices -------------------------------------------------------------------------------


def gpu_names() -> list[str]:
    if torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return ["Apple MPS"]
    return []


def no_gpu_reason() -> str:
    if torch.version.cuda is None and torch.version.hip is None:
        return ("this is a CPU-only PyTorch build (install a CUDA build: see "
                "https://pytorch.org/get-started/locally/)")
    return "PyTorch sees no CUDA GPU (check the NVIDIA driver and `nvidia-smi`)"


def use(kind: str) -> None:
    """Keras creates tensors on keras_torch.get_device(): the module default, chosen
    at import (cuda when available). Point it at the device chosen here. On a GPU,
    float32 convolutions and matmuls may use TF32 (PyTorch leaves matmuls in full
    float32 by default; TensorFlow and JAX already use TF32), and cuDNN picks the
    fastest convolution algorithm per shape."""
    if kind == "cpu":
        keras_torch.DEFAULT_DEVICE = "cpu"
        return
    keras_torch.DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "mps"
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def describe() -> dict[str, str]:
    # The device is engine.device's to name (Engine.describe() adds it).
    return {"backend": NAME, "version": torch.__version__}
