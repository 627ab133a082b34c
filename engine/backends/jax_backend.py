"""JAX: `jax.jit` of `jax.value_and_grad` over a stateless call of the Keras model.

The network's weights are passed to the compiled function as arguments (their
values, read from the Keras variables at each call) and bound to the variables by
a `keras.StatelessScope`, which is what `Model.stateless_call` does inside. Closing
over the variables instead would bake 80 MB of weights into every compiled
program as constants. The Objective's loss calls the model itself, so the scope
is entered here rather than calling `stateless_call` there; the effect is the same.

jit compiles once per image shape (a pyramid level, a new aspect ratio): a few
seconds each on a CPU, less on a GPU. JAX's persistent compilation cache
(JAX_COMPILATION_CACHE_DIR) keeps them across restarts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

# A GPU shared with other programs (a gaming PC) should not lose 75 % of its memory
# to JAX's up-front reservation; read when the GPU client is created, so set here,
# before any JAX computation.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

log = logging.getLogger(__name__)

NAME = "jax"
LossFn = Callable[..., tuple[Any, dict[str, Any]]]
Step = Callable[..., tuple[float, np.ndarray, dict[str, float]]]


def _pure(loss_fn: LossFn, variables: Sequence[Any]) -> Callable:
    """loss_fn with the variables' values as an explicit first argument."""
    variables = list(variables)

    def pure(values, image, args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            total, terms = loss_fn(image, *args)
        return total, terms

    return pure


def _values(variables: Sequence[Any]) -> list:
    return [v.value for v in variables]


def value_and_grad(loss_fn: LossFn, variables: Sequence[Any] = ()) -> Step:
    """`loss_fn(image, *args) -> (total, terms)` as a jitted step on NumPy arrays."""
    variables = list(variables)
    grad_fn = jax.value_and_grad(_pure(loss_fn, variables), argnums=1, has_aux=True)

    @jax.jit
    def step(values, image, args):
        (total, terms), grad = grad_fn(values, image, args)
        return total, grad, terms

    def call(image: np.ndarray, *args: Any) -> tuple[float, np.ndarray, dict[str, float]]:
        total, grad, terms = step(_values(variables), jnp.asarray(image, jnp.float32), args)
        return float(total), np.asarray(grad), {k: float(v) for k, v in terms.items()}

    return call


def compile_loop(loss_fn: LossFn, variables: Sequence[Any], chunk_fn: Callable) -> Callable:
    """`n` optimiser iterations in one jitted call (keras.ops.fori_loop is
    lax.fori_loop; `n` is traced, so any chunk length reuses the compiled program).
    The loop state's buffers are donated: the history of L-BFGS is updated in place.

    On the CPU, XLA runs convolutions inside a loop body several times slower than
    at the top level (jax-ml/jax#12868: 4.7 s instead of 0.9 s per VGG-19 step at
    512 px here), so there one iteration is compiled, without a loop, and called
    `n` times from Python: the state still never leaves JAX.
    """
    variables = list(variables)
    grad_fn = jax.value_and_grad(_pure(loss_fn, variables), argnums=1, has_aux=True)

    def bind(values, args):
        def vg(image):
            (total, terms), grad = grad_fn(values, image, args)
            return total, grad, terms

        return vg

    @partial(jax.jit, donate_argnums=(1,))
    def run(values, state, n, args):
        return chunk_fn(bind(values, args), state, n)

    @partial(jax.jit, donate_argnums=(1,))
    def run_one(values, state, i, args):
        def once(lower, upper, body, st):  # the loop, minus the loop
            return body(i, st)

        return chunk_fn(bind(values, args), state, None, loop=once)

    def call(state, n, args):
        values = _values(variables)
        if not _on_cpu():
            return run(values, state, n, args)
        for i in range(int(n)):
            state = run_one(values, state, np.int32(i), args)
        return state

    return call


def _on_cpu() -> bool:
    chosen = jax.config.jax_default_device
    return (chosen.platform if chosen is not None and not isinstance(chosen, str)
            else jax.default_backend()) == "cpu"


def put(tree):
    """NumPy arrays (nested in lists/tuples) as device arrays, once per job rather than per call."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), tree)


def loop_count(n: int):
    return np.int32(n)


def set_row(matrix, index, row):
    return jax.lax.dynamic_update_index_in_dim(matrix, row.astype(matrix.dtype), index, 0)


# --- devices -------------------------------------------------------------------------------


def _gpus() -> list:
    for platform in ("gpu", "cuda", "rocm"):
        try:
            return jax.devices(platform)
        except RuntimeError:
            continue
    return []


def gpu_names() -> list[str]:
    return [d.device_kind for d in _gpus()]


def no_gpu_reason() -> str:
    return ("this jaxlib has no GPU plugin (install jax[cuda12] or jax[cuda13] on Linux or WSL2; "
            "JAX has no GPU build for native Windows)")


def use(kind: str) -> None:
    """"cpu": only the CPU platform is started (a GPU, if any, stays untouched).
    "gpu": the first GPU is the default device for arrays and compiled code."""
    if kind == "cpu":
        jax.config.update("jax_platforms", "cpu")  # effective before JAX starts its backends
        jax.config.update("jax_default_device", jax.devices("cpu")[0])
    else:
        jax.config.update("jax_default_device", _gpus()[0])


def describe() -> dict[str, str]:
    # The device is engine.device's to name (Engine.describe() adds it).
    return {"backend": NAME, "version": jax.__version__}
