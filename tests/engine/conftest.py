"""Shared fixtures: one randomly initialised VGG-19 engine per test session.

Real weights can't be downloaded in CI; a seeded random VGG-19 with normalised
activations exercises the same math (see engine/vgg.py).
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def random_vgg_weights():
    from engine.weights import random_weights

    return random_weights(0)


@pytest.fixture(scope="session")
def engine(random_vgg_weights):
    from engine.transfer import Engine

    return Engine(random_vgg_weights)


def smooth_photo(height: int = 36, width: int = 48, seed: int = 0) -> np.ndarray:
    """A photo-like image: smooth gradients and a bright disc, warm colours."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = ((y - height / 2) ** 2 + (x - width / 3) ** 2 < (height / 4) ** 2).astype(np.float32)
    r = 90 + 100 * x / width + 60 * disc
    g = 70 + 80 * y / height + 40 * disc
    b = 40 + 30 * disc
    rng = np.random.default_rng(seed)
    return np.clip(np.stack([r, g, b], -1) + rng.normal(0, 3, (height, width, 3)), 0, 255).astype(np.float32)


def stripes_texture(height: int = 48, width: int = 48) -> np.ndarray:
    """A style-like texture: blue/white diagonal stripes, far from the photo's colours."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    band = (np.sin((x + y) * 0.9) > 0).astype(np.float32)
    return np.stack([30 + 200 * band, 60 + 180 * band, 220 + 30 * band], -1).astype(np.float32)
