"""Optimisers over a value-and-gradient function on flat pixel vectors.

`evaluate(x) -> (loss, grad)` is one VGG-19 forward and backward pass; it is where
progress is reported and cancellation raised, so both optimisers count work in
evaluations: N iterations always cost N network passes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Evaluate = Callable[[np.ndarray], tuple[float, np.ndarray]]

# L-BFGS memory. jcjohnson/neural-style keeps 100 pairs, but each pair is two
# copies of the image (6 MB at 512 px in float32); 20 converges about as fast here
# and keeps a 512-px job well inside the memory budget.
LBFGS_HISTORY = 20


def lbfgs(evaluate: Evaluate, x0: np.ndarray, *, evaluations: int, lower: float, upper: float,
          history: int = LBFGS_HISTORY, learning_rate: float = 1.0) -> np.ndarray:
    """L-BFGS (Nocedal & Wright, Alg. 7.4), one evaluation per iteration, on the host.

    The host fallback (STYLEBOT_LOOP=host); the default is the device loop below.
    This is the variant jcjohnson/neural-style runs (torch's optim.lbfgs without a
    line search): a unit step along the quasi-Newton direction, the first step
    1/|g|_1 long, pixels clipped to the bounds, a curvature pair kept only if
    s.y > 0. At the default style strength it matches SciPy's L-BFGS-B per
    evaluation; at very strong style weights it oscillates where the device loop's
    backtracking does not (tests/engine/test_transfer.py). It replaced SciPy's
    L-BFGS-B, whose single-threaded bound-constrained iteration cost as much as a
    network pass per evaluation at 256 px.
    """
    x = np.asarray(x0, dtype=np.float32).ravel().copy()
    best = _Best(x)
    pairs: list[tuple[np.ndarray, np.ndarray, float]] = []  # (s, y, 1/(y.s)), oldest first
    gamma = 1.0
    x_prev = g_prev = None
    for _ in range(evaluations):
        loss, grad = evaluate(x)
        g = np.asarray(grad, dtype=np.float32).ravel()
        best.offer(x, loss)
        if x_prev is None:
            step = -g * (learning_rate * min(1.0, 1.0 / max(float(np.abs(g).sum()), 1e-30)))
        else:
            s, y = x - x_prev, g - g_prev
            sy = float(s @ y)
            if sy > 1e-10:
                if len(pairs) == history:
                    pairs.pop(0)
                pairs.append((s, y, 1.0 / sy))
                gamma = sy / float(y @ y)
            step = -learning_rate * two_loop(g, pairs, gamma)
        x_prev, g_prev = x, g
        x = np.clip(x + step, lower, upper)
    return best.x


def two_loop(g: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray, float]], gamma: float) -> np.ndarray:
    """H·g for the L-BFGS inverse-Hessian estimate H (Nocedal & Wright, Alg. 7.4)."""
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(s @ q)
        q -= a * y
        alphas.append(a)
    r = gamma * q
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        r += s * (a - rho * float(y @ r))
    return r


class _Best:
    """The lowest-loss point evaluated (without a line search a step can overshoot)."""

    def __init__(self, x0: np.ndarray) -> None:
        self.x = x0
        self.loss = np.inf
        self.evaluations = 0

    def offer(self, x: np.ndarray, loss: float) -> None:
        self.evaluations += 1
        if loss < self.loss:
            self.x, self.loss = x.copy(), loss


def adam(evaluate: Evaluate, x0: np.ndarray, *, evaluations: int, lower: float, upper: float,
         learning_rate: float = 2.0, beta1: float = 0.9, beta2: float = 0.999,
         epsilon: float = 1e-8) -> np.ndarray:
    """Adam (Kingma & Ba 2015) with the iterate clipped to the pixel range after each step."""
    x = np.asarray(x0, dtype=np.float32).ravel().copy()
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    for t in range(1, evaluations + 1):
        _, grad = evaluate(x)
        grad = np.asarray(grad, dtype=np.float32).ravel()
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        x -= learning_rate * m_hat / (np.sqrt(v_hat) + epsilon)
        np.clip(x, lower, upper, out=x)
    return x


# --- on-device loops ------------------------------------------------------------------------
#
# L-BFGS and Adam, written in keras.ops so that a run of iterations compiles into
# one device program per backend (engine/backends: jax.jit over lax.fori_loop,
# tf.function over tf.while_loop, PyTorch's queue of GPU kernels). The host only
# sees a chunk's per-iteration losses, and an image where a preview or the caller
# needs one: a 512-px image does not cross PCIe, and no host code runs, between
# two VGG-19 passes that take a few milliseconds on a GPU.
#
# The L-BFGS differs from the host lbfgs() above (unit steps, no line search) and
# from SciPy's L-BFGS-B (used before it) as follows:
#  - a line search spread over iterations: each iteration is exactly one
#    evaluation, of a candidate that is accepted if the loss fell enough (Armijo,
#    with slack for the loss's rounding noise) and otherwise replaced by a shorter
#    step from the last accepted point (backtracking, quadratic interpolation).
#    "N iterations = N network passes" stays exact and the loop needs no
#    data-dependent exits. With unit steps and no search (torch.optim.LBFGS's
#    default, which jcjohnson/neural-style used, and lbfgs() above) the loss
#    oscillated at strong style weights in our tests, ending 2x higher after 40
#    iterations; with bfloat16 convolutions a step of 1/|g|_1 is lost in the
#    loss's rounding noise, hence a first step of FIRST_STEP pixel levels.
#  - bounds by projection: a candidate is clipped to [lower, upper], and pixels
#    that sit at a bound with the gradient pushing them outward are left out of the
#    step (a simplified two-metric projection, Bertsekas 1982). L-BFGS-B instead
#    finds the generalized Cauchy point and minimises the quasi-Newton model over
#    the free pixels, and keeps bound pixels out of its curvature pairs, which here
#    are taken between the clipped points. Without the held-pixel rule the clipped
#    steps were much shorter than the model promised and the search stalled at
#    strong style weights. A pair whose s.y is not positive is skipped, so the
#    model stays positive definite.
# Per evaluation it reached the same loss as SciPy's L-BFGS-B (within 2 % at 64-96
# px, 100-150 evaluations, content and noise starts) at half the time per
# evaluation on a 2-core CPU at 512 px (L-BFGS-B's Fortran cost 0.8 s a call).
# Both loops return the lowest-loss image evaluated, like lbfgs() above.

MAX_CHUNK = 25  # most iterations one compiled call runs; the records' length
CHUNK_SECONDS = 0.5  # chunk length aimed at: progress and cancellation every ~0.5 s
CURVATURE_EPS = 1e-10  # torch.optim.LBFGS's threshold on s.y
ARMIJO = 1e-4  # sufficient decrease (Nocedal & Wright's c1)
TAU_MIN = 1e-3  # a step shortened this far: drop the curvature pairs, start over
FIRST_STEP = 4.0  # pixel levels the first (steepest-descent) step moves the most-pushed pixel
# Relative rounding noise of the loss allowed for in the sufficient-decrease test:
# measured about 1e-6 with float32 and 1e-5..3e-5 with bfloat16 convolutions.
NOISE_FLOAT32, NOISE_BFLOAT16 = 1e-6, 1e-4


def _dot(a, b):
    from keras import ops

    return ops.sum(a * b)


def lbfgs_state(x0, *, history: int, learning_rate: float, terms: int) -> dict:
    from keras import ops

    x = ops.convert_to_tensor(np.asarray(x0, np.float32))
    zeros = ops.zeros_like(x)
    scalar = lambda v, dtype="float32": ops.convert_to_tensor(v, dtype)  # noqa: E731
    return {
        "x": x,  # the point evaluated next
        # The last accepted point, its gradient and loss (inf: the first is accepted).
        "x_acc": ops.copy(x), "g_acc": zeros, "f_acc": scalar(np.inf),
        "step": ops.zeros_like(x), "tau": scalar(1.0), "slope": scalar(0.0),
        "S": ops.zeros((history, *x.shape), "float32"),
        "Y": ops.zeros((history, *x.shape), "float32"),
        "rho": ops.zeros((history,), "float32"), "gamma": scalar(1.0),
        "head": scalar(0, "int32"), "stored": scalar(0, "int32"),
        "lr": scalar(learning_rate),
        **_common_state(x, terms),
    }


def adam_state(x0, *, learning_rate: float, terms: int) -> dict:
    from keras import ops

    x = ops.convert_to_tensor(np.asarray(x0, np.float32))
    return {
        "x": x, "m": ops.zeros_like(x), "v": ops.zeros_like(x),
        "t": ops.convert_to_tensor(0.0, "float32"),
        "lr": ops.convert_to_tensor(learning_rate, "float32"),
        **_common_state(x, terms),
    }


def _common_state(x, terms: int) -> dict:
    from keras import ops

    return {
        # Distinct buffers throughout: JAX donates the state to the compiled loop.
        "best_x": ops.copy(x), "best_loss": ops.convert_to_tensor(np.inf, "float32"),
        "x_seen": ops.copy(x),  # the image evaluated last (for previews)
        "losses": ops.zeros((MAX_CHUNK,), "float32"),
        "terms": ops.zeros((MAX_CHUNK, terms), "float32"),
    }


def _record(state: dict, i, x, loss, terms, set_row) -> dict:
    """The evaluation's loss and terms into the chunk's records; the best point so far."""
    from keras import ops

    better = loss < state["best_loss"]
    return {
        **state,
        "losses": set_row(state["losses"], i, loss),
        "terms": set_row(state["terms"], i, terms),
        "best_x": ops.where(better, x, state["best_x"]),
        "best_loss": ops.where(better, loss, state["best_loss"]),
        "x_seen": x,
    }


def lbfgs_chunk(vg, state: dict, n, *, lower: float, upper: float, history: int,
                term_names: tuple[str, ...], set_row, loop=None, noise: float = NOISE_FLOAT32) -> dict:
    """`n` L-BFGS iterations (one evaluation each) in keras.ops; see the notes above.

    An iteration evaluates the candidate point. If the loss fell enough (Armijo,
    with `noise` x |f| of slack for the rounding noise of the loss) the candidate is
    accepted: its curvature pair is stored and a new quasi-Newton step is proposed
    at full length. If not, the step from the accepted point is shortened (the
    minimiser of the quadratic through f, the slope and the new value, kept within
    [0.1, 0.5] of the last length) and tried next: a backtracking line search
    spread over iterations. After TAU_MIN of shortening the memory is dropped and
    a steepest-descent step starts over.
    """
    from keras import ops

    def body(i, st):
        x = st["x"]
        loss, grad, terms = vg(x)
        f, g = ops.cast(loss, "float32"), ops.cast(grad, "float32")
        st = _record(st, i, x, f, _term_row(terms, term_names), set_row)
        tau, slope, f_old = st["tau"], st["slope"], st["f_acc"]
        accept = _sufficient_decrease(f, f_old, tau, slope, noise)
        memory = _store_pair(st, x - st["x_acc"], g - st["g_acc"], accept, history, set_row)
        x_acc = ops.where(accept, x, st["x_acc"])
        g_acc = ops.where(accept, g, st["g_acc"])
        f_acc = ops.where(accept, f, f_old)
        # Rejected: shorten the same step or, once it is TAU_MIN short, forget the
        # curvature pairs and start over.
        shorter = tau * _shrink(f, f_old, tau, slope)
        restart = ops.logical_and(ops.logical_not(accept), shorter < TAU_MIN)
        memory = _forget(memory, restart)
        fresh = ops.logical_or(accept, restart)
        new_step = _quasi_newton_step(x_acc, g_acc, memory, st["lr"], lower=lower, upper=upper,
                                      history=history)
        step = ops.where(fresh, new_step, st["step"])
        tau = ops.where(fresh, 1.0, shorter)
        slope = ops.where(fresh, _dot(g_acc, new_step), slope)
        x_new = ops.clip(x_acc + tau * step, lower, upper)
        return {**st, **memory, "x": x_new, "x_acc": x_acc, "g_acc": g_acc, "f_acc": f_acc,
                "step": step, "tau": tau, "slope": slope}

    return (loop or ops.fori_loop)(0, n, body, state)


def _term_row(terms, term_names: tuple[str, ...]):
    from keras import ops

    return ops.stack([ops.cast(terms[k], "float32") for k in term_names])


def _sufficient_decrease(f, f_old, tau, slope, noise: float):
    """Armijo's test with slack for the loss's rounding noise. f_old is inf before
    the first point: that one is always accepted."""
    from keras import ops

    return ops.logical_and(ops.isfinite(f),
                           f <= f_old + ARMIJO * tau * slope + noise * ops.abs(f_old))


def _store_pair(st: dict, s, y, accept, history: int, set_row) -> dict:
    """The L-BFGS memory with the curvature pair (s, y) to an accepted point written
    into the ring buffer (none on the first point, where s = 0, nor when s.y is not
    positive). Returns the memory's entries: S, Y, rho, gamma, head, stored."""
    from keras import ops

    sy = _dot(s, y)
    keep = ops.logical_and(accept, sy > CURVATURE_EPS)
    head = st["head"]
    S = set_row(st["S"], head, ops.where(keep, s, ops.take(st["S"], head, axis=0)))
    Y = set_row(st["Y"], head, ops.where(keep, y, ops.take(st["Y"], head, axis=0)))
    rho = set_row(st["rho"], head, ops.where(keep, 1.0 / ops.where(keep, sy, 1.0),
                                             ops.take(st["rho"], head, axis=0)))
    return {
        "S": S, "Y": Y, "rho": rho,
        "gamma": ops.where(keep, sy / ops.where(keep, _dot(y, y), 1.0), st["gamma"]),
        "head": ops.where(keep, (head + 1) % history, head),
        "stored": ops.where(keep, ops.minimum(st["stored"] + 1, history), st["stored"]),
    }


def _shrink(f, f_old, tau, slope):
    """How much a rejected step is shortened: the minimiser of the quadratic through
    f_old, the slope and f, kept within [0.1, 0.5] (0.5, or 0.1 for a non-finite f)."""
    from keras import ops

    excess = f - f_old - slope * tau
    quadratic = -slope * tau / (2.0 * ops.where(excess > 0, excess, 1.0))
    return ops.clip(ops.where(ops.logical_and(excess > 0, ops.isfinite(f)), quadratic,
                              ops.where(ops.isfinite(f), 0.5, 0.1)), 0.1, 0.5)


def _forget(memory: dict, restart) -> dict:
    """The memory emptied where `restart`: rho = 0 drops every slot's S and Y out."""
    from keras import ops

    return {**memory, "rho": ops.where(restart, 0.0, memory["rho"]),
            "stored": ops.where(restart, 0, memory["stored"]),
            "gamma": ops.where(restart, 1.0, memory["gamma"])}


def _quasi_newton_step(x_acc, g_acc, memory: dict, lr, *, lower: float, upper: float, history: int):
    """The step from the accepted point: -H.g over the pixels not held at a bound.

    Pixels held at a bound by their gradient (at 0 and pushed down, at 255 and
    pushed up) stay out of the step: projecting a quasi-Newton step that moves
    them would make it much shorter than the model expects, and the model's
    slope would promise a decrease the clipped step does not deliver
    (Bertsekas' two-metric projection, simplified).
    """
    from keras import ops

    held = ops.logical_or(ops.logical_and(x_acc <= lower, g_acc > 0),
                          ops.logical_and(x_acc >= upper, g_acc < 0))
    q = ops.where(held, 0.0, g_acc)
    g_max = ops.max(ops.abs(q))
    r = _two_loop_ring(q, memory, history)
    # No curvature yet: steepest descent that moves the most-pushed pixel by
    # FIRST_STEP levels (a step of 1/|g| would change the loss by less than the
    # rounding noise of a bfloat16 network, and no pair could be learned from it).
    first = lr * FIRST_STEP / ops.where(g_max > 0, g_max, 1.0)
    length = ops.where(memory["stored"] > 0, lr, first)
    return ops.where(held, 0.0, -length * r)


def _two_loop_ring(q, memory: dict, history: int):
    """H.q by the two-loop recursion (Nocedal & Wright, Alg. 7.4) over the ring
    buffer, newest pair first; empty slots (rho = 0) drop out."""
    from keras import ops

    S, Y, rho, head = memory["S"], memory["Y"], memory["rho"], memory["head"]
    alphas = []
    for j in range(history):
        idx = (head - 1 - j) % history
        a = ops.take(rho, idx, axis=0) * _dot(ops.take(S, idx, axis=0), q)
        q = q - a * ops.take(Y, idx, axis=0)
        alphas.append(a)
    r = memory["gamma"] * q
    for j in reversed(range(history)):
        idx = (head - 1 - j) % history
        b = ops.take(rho, idx, axis=0) * _dot(ops.take(Y, idx, axis=0), r)
        r = r + ops.take(S, idx, axis=0) * (alphas[j] - b)
    return r


def adam_chunk(vg, state: dict, n, *, lower: float, upper: float, term_names: tuple[str, ...],
               set_row, loop=None, beta1: float = 0.9, beta2: float = 0.999,
               epsilon: float = 1e-8) -> dict:
    """`n` Adam iterations in keras.ops: the same update as adam() above."""
    from keras import ops

    def body(i, st):
        x = st["x"]
        loss, grad, terms = vg(x)
        g = ops.cast(grad, "float32")
        st = _record(st, i, x, ops.cast(loss, "float32"), _term_row(terms, term_names), set_row)
        t = st["t"] + 1.0
        m = beta1 * st["m"] + (1 - beta1) * g
        v = beta2 * st["v"] + (1 - beta2) * g * g
        m_hat = m / (1 - ops.power(beta1, t))
        v_hat = v / (1 - ops.power(beta2, t))
        x_new = ops.clip(x - st["lr"] * m_hat / (ops.sqrt(v_hat) + epsilon), lower, upper)
        return {**st, "x": x_new, "m": m, "v": v, "t": t}

    return (loop or ops.fori_loop)(0, n, body, state)


class DeviceLoops:
    """The compiled on-device optimisers of one loss, built on first use."""

    def __init__(self, backend, loss_fn, variables, *, term_names: tuple[str, ...],
                 noise: float = NOISE_FLOAT32) -> None:
        self.backend = backend
        self.noise = noise
        self.loss_fn = loss_fn
        self.variables = list(variables)
        self.term_names = tuple(term_names)
        self._compiled: dict = {}

    def runner(self, method: str, *, lower: float, upper: float, history: int = LBFGS_HISTORY):
        key = (method, lower, upper, history)
        if key not in self._compiled:
            common = {"lower": lower, "upper": upper, "term_names": self.term_names,
                      "set_row": self.backend.set_row}
            if method == "lbfgs":
                def chunk(vg, state, n, loop=None):
                    return lbfgs_chunk(vg, state, n, history=history, loop=loop,
                                       noise=self.noise, **common)
            elif method == "adam":
                def chunk(vg, state, n, loop=None):
                    return adam_chunk(vg, state, n, loop=loop, **common)
            else:
                raise ValueError(f"unknown optimizer {method!r}")
            self._compiled[key] = self.backend.compile_loop(self.loss_fn, self.variables, chunk)
        return self._compiled[key]

    def minimize(self, method: str, x0: np.ndarray, args: tuple, *, evaluations: int, lower: float,
                 upper: float, learning_rate: float = 1.0, history: int = LBFGS_HISTORY,
                 report: Callable[[float, dict[str, float], np.ndarray | None], None] | None = None,
                 needs_image: Callable[[int], bool] = lambda k: False) -> np.ndarray:
        """Run `evaluations` iterations on the device; return the best image evaluated.

        After each chunk, `report(loss, terms, image)` is called once per iteration
        of it, in order; `image` is that iteration's evaluated image where
        `needs_image(k)` (k = 1..evaluations) asked for one, else None. Chunks end
        at every such k, so previews show exactly the image of their iteration.
        `report` may raise (cancellation) between any two iterations' reports.

        The next chunk is queued on the device before the last one is reported, so
        the host's work (progress, preview PNGs) overlaps the device's: a report
        (and a cancellation) lags the device by at most one chunk.
        """
        import time

        from keras import ops

        runner = self.runner(method, lower=lower, upper=upper, history=history)
        args = self.backend.put(tuple(args))
        terms = len(self.term_names)
        if method == "lbfgs":
            state = lbfgs_state(x0, history=history, learning_rate=learning_rate, terms=terms)
        else:
            state = adam_state(x0, learning_rate=learning_rate, terms=terms)
        # The first chunk (which compiles) is one iteration long, the second two;
        # later ones last about CHUNK_SECONDS at the speed measured.
        done, chunk, pending, finished_at = 0, 1, None, None
        while True:
            queued = None
            if done < evaluations:
                n = min(chunk, MAX_CHUNK, evaluations - done)
                for k in range(done + 1, done + n):
                    if needs_image(k):
                        n = k - done
                        break
                state = runner(state, self.backend.loop_count(n), args)
                # Copies of what the host reads: the next chunk may reuse the buffers.
                queued = (n, ops.copy(state["losses"]), ops.copy(state["terms"]),
                          ops.copy(state["x_seen"]) if needs_image(done + n) else None)
                done += n
            if pending is not None:
                n_done, losses, term_values, image = pending
                losses = ops.convert_to_numpy(losses)[:n_done]  # waits for that chunk
                now = time.perf_counter()
                if finished_at is not None:
                    per_step = max((now - finished_at) / n_done, 1e-6)
                    chunk = max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / per_step)))
                else:
                    chunk = 2
                finished_at = now
                term_values = ops.convert_to_numpy(term_values)[:n_done]
                image = None if image is None else ops.convert_to_numpy(image)
                if report is not None:
                    for j in range(n_done):
                        report(float(losses[j]), {name: float(term_values[j, t])
                                                  for t, name in enumerate(self.term_names)},
                               image if j == n_done - 1 else None)
            if queued is None:
                break
            pending = queued
        return ops.convert_to_numpy(state["best_x"])
