"""Optimisers over a value-and-gradient function on flat pixel vectors.

`evaluate(x) -> (loss, grad)` is one VGG-19 forward and backward pass; it is where
progress is reported and cancellation raised, so both optimisers count work in
evaluations: N iterations always cost N network passes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.optimize

Evaluate = Callable[[np.ndarray], tuple[float, np.ndarray]]

# L-BFGS memory. jcjohnson/neural-style keeps 100 pairs, but each pair is two
# float64 copies of the image (12 MB at 512 px); 20 converges about as fast here
# and keeps a 512-px job well inside the memory budget.
LBFGS_HISTORY = 20


def lbfgs(evaluate: Evaluate, x0: np.ndarray, *, evaluations: int, lower: float, upper: float,
          history: int = LBFGS_HISTORY) -> np.ndarray:
    """SciPy's L-BFGS-B with box bounds on the pixels (Gatys et al. used L-BFGS).

    The bounds keep pixels displayable without the clipping that would fight the
    optimiser. gtol is 0: style losses are large numbers and SciPy's default would
    stop early on a "small" projected gradient.
    """
    x0 = np.asarray(x0, dtype=np.float64).ravel()
    best = _Best(x0)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        # SciPy's maxfun is checked only between iterations, so a line search can
        # overrun it; the budget is enforced here to keep "N iterations" exact.
        if best.evaluations >= evaluations:
            raise _BudgetSpent
        loss, grad = evaluate(x)
        best.offer(x, loss)
        return loss, np.asarray(grad, dtype=np.float64).ravel()

    try:
        scipy.optimize.minimize(
            fun, x0, jac=True, method="L-BFGS-B",
            bounds=scipy.optimize.Bounds(lower, upper),
            options={"maxfun": evaluations, "maxiter": evaluations, "maxcor": history,
                     "gtol": 0.0, "ftol": 1e-12},
        )
    except _BudgetSpent:
        pass
    return best.x


class _BudgetSpent(Exception):
    pass


class _Best:
    """The lowest-loss point evaluated (a line search's last trial may be worse)."""

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
