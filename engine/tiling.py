"""Overlapping tiles with feathered blend weights (NumPy only).

A large output is optimised a tile at a time (engine/transfer.py): every tile has
the same shape (so the compiled step is built once), tiles overlap by at least
`overlap` pixels, and each tile's result enters the picture with a weight that
ramps linearly from ~0 at a tile edge that borders another tile to 1 at `overlap`
pixels in (edges on the picture's border keep weight 1). Where tiles overlap the
picture is the weighted mean, so there is no step at a tile's edge: the weights
of two neighbours cross-fade over the whole overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` px covering `length`, spread evenly, each
    overlapping the next by at least `overlap` px."""
    if tile >= length:
        return [0]
    count = 1 + -(-(length - tile) // max(1, tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    height: int
    width: int
    # How many px this tile shares with its neighbour above, below, left and right.
    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @property
    def region(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)


def _shared(offsets: list[int], tile: int, i: int) -> tuple[int, int]:
    before = offsets[i - 1] + tile - offsets[i] if i > 0 else 0
    after = offsets[i] + tile - offsets[i + 1] if i + 1 < len(offsets) else 0
    return max(0, before), max(0, after)


def grid(shape: tuple[int, int], tile: tuple[int, int], overlap: int) -> list[Tile]:
    """The tiles covering an image of `shape`, row by row, all of one shape."""
    th, tw = min(tile[0], shape[0]), min(tile[1], shape[1])
    ys, xs = starts(shape[0], th, overlap), starts(shape[1], tw, overlap)
    out = []
    for i, y in enumerate(ys):
        top, bottom = _shared(ys, th, i)
        for j, x in enumerate(xs):
            left, right = _shared(xs, tw, j)
            out.append(Tile(y, x, th, tw, top, bottom, left, right))
    return out


def _ramp(length: int, lo: int, hi: int) -> np.ndarray:
    """1-D weights: rising over the `lo` px shared with the previous tile, falling over
    the `hi` px shared with the next; 1 elsewhere. Two neighbours' ramps over their
    shared strip sum to 1 (a linear cross-fade), and are never exactly 0."""
    w = np.ones(length, np.float32)
    if lo > 0:
        n = min(lo, length)
        w[:n] = np.minimum(w[:n], (np.arange(n, dtype=np.float32) + 0.5) / lo)
    if hi > 0:
        n = min(hi, length)
        w[length - n:] = np.minimum(w[length - n:], ((np.arange(n, dtype=np.float32) + 0.5) / hi)[::-1])
    return w


def weights(tile: Tile) -> np.ndarray:
    """The tile's (H, W) blend weights: cross-faded over what it shares with its neighbours."""
    return np.outer(_ramp(tile.height, tile.top, tile.bottom), _ramp(tile.width, tile.left, tile.right))


class Canvas:
    """The picture being assembled: a running weighted mean of the tiles written so
    far, over the initial image where no tile has been written yet."""

    def __init__(self, init: np.ndarray) -> None:
        self.init = np.asarray(init, np.float32)
        self.shape = self.init.shape[:2]
        self.sum = np.zeros_like(self.init)
        self.weight = np.zeros(self.shape, np.float32)

    def image(self) -> np.ndarray:
        w = self.weight[..., None]
        return np.where(w > 0, self.sum / np.maximum(w, 1e-12), self.init).astype(np.float32)

    def crop(self, tile: Tile) -> np.ndarray:
        """What a tile starts from: its finished neighbours' results where they overlap
        it, faded into the initial image by their weights (a neighbour's own border,
        where its weight is near 0, shows its border effects: those are not passed on)."""
        w = self.weight[tile.region][..., None]
        return ((self.sum[tile.region] + np.maximum(0.0, 1.0 - w) * self.init[tile.region])
                / np.maximum(w, 1.0)).astype(np.float32)

    def add(self, tile: Tile, image: np.ndarray) -> None:
        w = weights(tile)
        self.sum[tile.region] += image * w[..., None]
        self.weight[tile.region] += w

    def preview(self, tile: Tile, image: np.ndarray) -> np.ndarray:
        """The picture with `image` (a tile still being optimised) pasted in."""
        out = self.image()
        out[tile.region] = image
        return out
