"""The only backend-specific code: compiling the value-and-gradient step and the
on-device optimiser loop, and finding and choosing the device.

Everything else (network, losses, the optimisers' math in engine/optimize.py) is
Keras 3 and runs on any backend. Each backend module (tf_backend, jax_backend,
torch_backend) exposes the same small interface:

    value_and_grad(loss_fn, variables=())
        `loss_fn(image, *args) -> (total, terms)` as a compiled step on NumPy
        arrays: `step(image, *args) -> (float, ndarray, {name: float})`. Only the
        image gets a gradient. `variables` are the Keras variables loss_fn reads
        (JAX passes their values as arguments instead of baking them into the
        compiled program as constants; the others may ignore them).
    compile_loop(loss_fn, variables, chunk_fn)
        `chunk_fn(vg, state, n) -> state`, written in keras.ops, compiled so that
        `n` iterations run on the device in one call: `run(state, n, args) -> state`
        with `vg(image) -> (total, grad, terms)` bound to `args` inside.
    put(args)               the step's NumPy arguments as device tensors (once per job)
    loop_count(n)           `n` as the compiled loop wants it (a tensor or an int)
    set_row(matrix, i, row) `matrix` with row `i` replaced (traceable; in place where safe)
    gpu_names()             the GPUs this backend can use (may initialise the runtime)
    no_gpu_reason()         why gpu_names() is empty, in a few words
    use(kind)               make "cpu" or "gpu" the device for everything created next
    describe()              {"backend": ..., "version": ...}

engine.device chooses the device through `gpu_names` and `use`; these modules
never import engine.device (imports go one way).

The Keras backend is fixed when `keras` is first imported (KERAS_BACKEND), so a
process runs one backend; tests compare backends in subprocesses.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import keras

MODULES = {
    "tensorflow": "engine.backends.tf_backend",
    "jax": "engine.backends.jax_backend",
    "torch": "engine.backends.torch_backend",
}


def name() -> str:
    return keras.backend.backend()


def current() -> ModuleType:
    backend = name()
    if backend not in MODULES:
        raise RuntimeError(
            f"Keras backend {backend!r} is not supported; use one of {', '.join(MODULES)}")
    return importlib.import_module(MODULES[backend])
