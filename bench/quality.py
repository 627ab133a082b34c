"""Time to quality on loss-versus-time curves (pure, stdlib only).

A curve is a list of points (iteration, seconds, loss, work, cpu_seconds), in evaluation order:
`seconds` is wall time since the method's start with the benchmark's own
bookkeeping subtracted, `loss` the full-resolution loss of the image evaluated at
that iteration, `work` the full-resolution-equivalent evaluations done so far
(the sum over all evaluations up to this one of its pixels / full-resolution
pixels: 1 per step at full resolution, 1/4 at half). A curve may be sparse (a
pyramid's coarse scales are scored on snapshots); `work` still counts every step.
`cpu_seconds` is the CPU time the benchmark process used since the method's start
(all threads): on a shared machine it grows with the work done, not with the
time other processes take, so its ratios are a second cross-check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[int, float, float, float, float]

TARGET_FACTOR = 1.02  # the "<= 1.02 x L_ref"


def target_loss(reference_loss: float, factor: float = TARGET_FACTOR) -> float:
    return reference_loss * factor


def first_reaching(curve: Sequence[Point], target: float) -> int | None:
    """Index of the first point whose loss is <= target, or None."""
    for i, point in enumerate(curve):
        loss = point[2]
        if math.isfinite(loss) and loss <= target:
            return i
    return None


def time_to_target(curve: Sequence[Point], target: float) -> float | None:
    i = first_reaching(curve, target)
    return None if i is None else curve[i][1]


def work_to_target(curve: Sequence[Point], target: float) -> float | None:
    """Full-resolution-equivalent evaluations until the target.

    A measure of work free of machine noise, to cross-check wall-time ratios; it
    assumes a step costs in proportion to its pixels and ignores precision.
    """
    i = first_reaching(curve, target)
    return None if i is None else curve[i][3]


def cpu_to_target(curve: Sequence[Point], target: float) -> float | None:
    i = first_reaching(curve, target)
    return None if i is None else curve[i][4]


def best_loss(curve: Sequence[Point]) -> float:
    finite = [p[2] for p in curve if math.isfinite(p[2])]
    return min(finite) if finite else math.nan


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    if not s:
        return math.nan
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])
