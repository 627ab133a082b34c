"""The only backend-specific code: compiling the value-and-gradient step.

Everything else (network, losses) is Keras 3 and runs on any backend; each backend
module exposes `value_and_grad(loss_fn)` and `describe()`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import keras

MODULES = {"tensorflow": "engine.backends.tf_backend"}


def current() -> ModuleType:
    name = keras.backend.backend()
    if name not in MODULES:
        raise RuntimeError(f"Keras backend {name!r} is not supported; use one of {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name])
