"""How much memory a job needs at its peak, and how to tile one that would not fit.

A small pure model (stdlib only: the bot imports it to refuse or shrink a job before
it is queued). The peak resident memory of an engine process running one job is

    base + per_pixel * (pixels optimised at once) + style_per_pixel * (style pixels)

where `base` is the process with the framework and the weights loaded, `per_pixel`
the forward and backward pass of VGG-19 up to conv5_1 over the image with the
optimiser's state (L-BFGS keeps 2 x LBFGS_HISTORY copies of the image: 0.5 KB a pixel),
and the style images' own forward pass for the targets (once, before the loop, at
style size; its activations are freed before the loop starts, so it counts only
where it is larger than the loop).

The coefficients were fitted to peak RSS measured with `python -m bench.peakrss` (a
fresh process each: a child's ru_maxrss after fork counts its parent's pages) on
the TensorFlow backend, 2-core CPU, real ImageNet weights, 10 iterations; see
MEASURED below. Other backends reuse TensorFlow's per-pixel figure with their own
base; that is a guess, kept on the safe side by HEADROOM.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

MiB = 1024 * 1024

# (backend, precision) -> bytes a pixel of the optimised image costs at the peak.
# Fitted on TensorFlow (see MEASURED); bfloat16 halves the convolution activations
# but keeps float32 Gram matrices and gradients, so it saves less than half.
PER_PIXEL = {
    "float32": 5650.0,
    "bfloat16": 4900.0,
}
# Bytes a pixel of the largest image costs in the (forward only) targets pass.
STYLE_PER_PIXEL = 3300.0
# The process before the first job: interpreter, framework, compiled step, weights (MiB).
BASE_MIB = {"tensorflow": 850.0, "jax": 900.0, "torch": 850.0}
# Added to every estimate: allocator fragmentation and the image buffers (MiB).
SLACK_MIB = 100.0
# With max_memory = 0 (auto): the machine's memory less this much for everything
# else (MiB), and never more than AUTO_FRACTION of it.
HEADROOM_MIB = 2048.0
AUTO_FRACTION = 0.8
# Tiles are never smaller than this (px, longest side): conv5_1 looks 16 px apart
# and its receptive field is about 200 px; a smaller tile loses the style's large
# structures.
MIN_TILE = 192

# (longest side, short side, backend, precision, style pixels, peak RSS MiB) measured.
# chelsea x hubble (docs/samples), 10 iterations, seed 1, one fresh process each.
MEASURED: tuple[tuple[int, int, str, str, int, float], ...] = (
    (256, 170, "tensorflow", "bfloat16", 256 * 223, 1043.0),
    (512, 341, "tensorflow", "bfloat16", 512 * 446, 1658.0),
    (768, 511, "tensorflow", "bfloat16", 768 * 669, 2670.0),
    (1024, 681, "tensorflow", "bfloat16", 1024 * 892, 4009.0),
    (512, 341, "tensorflow", "float32", 512 * 446, 1765.0),
    (768, 511, "tensorflow", "float32", 768 * 669, 2936.0),
    # style_scale 2: the style's targets pass (1024 x 892) sets the peak
    (512, 341, "tensorflow", "bfloat16", 1024 * 892, 3708.0),
)


def machine_memory_mib() -> float:
    """Total physical memory (MiB), or 8 GiB where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MiB
    except (ValueError, OSError, AttributeError):
        return 8192.0


def budget_mib(max_memory: int, total_mib: float | None = None) -> float:
    """The memory a job may use (MiB): `max_memory` when set, else the machine's
    memory minus HEADROOM_MIB (at most AUTO_FRACTION of it)."""
    if max_memory > 0:
        return float(max_memory)
    total = machine_memory_mib() if total_mib is None else total_mib
    return max(1024.0, min(total - HEADROOM_MIB, AUTO_FRACTION * total))


def per_pixel(precision: str) -> float:
    return PER_PIXEL.get(precision, PER_PIXEL["float32"])


def estimate_mib(pixels: int, *, style_pixels: int = 0, backend: str = "tensorflow",
                 precision: str = "float32") -> float:
    """Peak resident memory (MiB) of an engine process optimising `pixels` at once,
    after a targets pass whose largest image (one at a time) has `style_pixels`."""
    base = BASE_MIB.get(backend, max(BASE_MIB.values()))
    loop = per_pixel(precision) * pixels
    targets = STYLE_PER_PIXEL * style_pixels
    return base + SLACK_MIB + max(loop, targets) / MiB


def pixels_within(budget: float, *, backend: str = "tensorflow", precision: str = "float32") -> int:
    """The most pixels one optimisation may hold at once within `budget` MiB."""
    base = BASE_MIB.get(backend, max(BASE_MIB.values())) + SLACK_MIB
    return max(0, int((budget - base) * MiB / per_pixel(precision)))


@dataclass(frozen=True)
class TilePlan:
    """How the fine scale of a job runs: whole (tile = None) or in tiles."""

    shape: tuple[int, int]
    tile: tuple[int, int] | None  # (height, width) of every tile, or None: untiled
    overlap: int
    estimate_mib: float  # peak with this plan
    untiled_mib: float  # peak without tiles
    budget_mib: float

    @property
    def tiled(self) -> bool:
        return self.tile is not None


def plan_tiles(shape: tuple[int, int], *, budget: float, tile_above: int, tile_size: int,
               overlap: int, backend: str = "tensorflow", precision: str = "float32",
               style_pixels: int = 0) -> TilePlan:
    """Tile when the longest side is above `tile_above` (0: never for size alone) or
    when the whole image would not fit `budget`. Tiles are at most `tile_size` px a
    side, shrunk until one fits the budget (never below MIN_TILE)."""
    height, width = shape
    untiled = estimate_mib(height * width, style_pixels=style_pixels, backend=backend, precision=precision)
    too_big = untiled > budget
    if not too_big and not (tile_above and max(shape) > tile_above):
        return TilePlan(shape, None, 0, untiled, untiled, budget)
    side = min(tile_size, max(shape))
    floor = min(side, MIN_TILE)
    limit = pixels_within(budget, backend=backend, precision=precision)
    while side > floor and (min(side, height) * min(side, width)) > limit:
        side = max(floor, int(side * 0.9))
    overlap = min(overlap, side // 3)
    # As few tiles a side as `side` allows, each then as small as covers the side with
    # `overlap` between neighbours: 681 px with 576-px tiles is two tiles of 389, not
    # two of 576 (which would optimise 70 % more pixels than there are).
    tile = (balanced(height, side, overlap), balanced(width, side, overlap))
    if tile == (height, width):  # one tile is the whole image
        return TilePlan(shape, None, 0, untiled, untiled, budget)
    est = estimate_mib(tile[0] * tile[1], backend=backend, precision=precision)
    return TilePlan(shape, tile, overlap, est, untiled, budget)


def balanced(length: int, side: int, overlap: int) -> int:
    """The smallest tile length that covers `length` with as few tiles of at most
    `side` (overlapping by `overlap`) as possible."""
    count = tiles_needed(length, side, overlap)
    return length if count == 1 else min(side, math.ceil((length + (count - 1) * overlap) / count))


def chunk_side(tile: tuple[int, int], precision: str = "float32") -> int:
    """Side (px) of the pieces a tiled job computes its targets over: forward passes
    only, sized to need no more than one tile's optimisation."""
    return max(MIN_TILE, int(math.sqrt(tile[0] * tile[1] * per_pixel(precision) / STYLE_PER_PIXEL)))


def tiles_needed(length: int, tile: int, overlap: int) -> int:
    """How many tiles of `tile` px overlapping by at least `overlap` cover `length`."""
    if tile >= length:
        return 1
    return 1 + math.ceil((length - tile) / max(1, tile - overlap))


def fits(shape: tuple[int, int], *, budget: float, backend: str = "tensorflow",
         precision: str = "float32") -> bool:
    """Whether a job of `shape` can run within `budget`, tiled if need be."""
    smallest = min(MIN_TILE, shape[0]) * min(MIN_TILE, shape[1])
    return estimate_mib(smallest, backend=backend, precision=precision) <= budget


def gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB"
