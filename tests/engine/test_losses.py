"""The loss formulas against a NumPy transcription of Gatys et al. (2016), and the
image gradient of the whole objective against finite differences."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from engine import losses


def np_gram_paper(f: np.ndarray) -> np.ndarray:
    """Eq. 3 verbatim: F is N_l x M_l (filters x positions), G = F F^T."""
    F = f.reshape(-1, f.shape[-1]).T
    return F @ F.T


def np_style_layer_paper(f: np.ndarray, a: np.ndarray) -> float:
    """Eq. 4 verbatim: E_l = 1/(4 N^2 M^2) sum (G - A)^2 with unnormalised Grams."""
    n = f.shape[-1]
    m = f.shape[0] * f.shape[1]
    return float(np.sum((np_gram_paper(f) - np_gram_paper(a)) ** 2) / (4 * n**2 * m**2))


@pytest.fixture
def feats():
    rng = np.random.default_rng(3)
    return rng.random((5, 7, 4)).astype(np.float32), rng.random((5, 7, 4)).astype(np.float32)


def test_content_loss_is_half_sum_of_squares(feats):
    f, p = feats
    got = float(losses.content_loss(keras.ops.convert_to_tensor(f), keras.ops.convert_to_tensor(p)))
    assert got == pytest.approx(0.5 * np.sum((f - p) ** 2), rel=1e-5)


def test_gram_is_ffT_per_position(feats):
    f, _ = feats
    got = keras.ops.convert_to_numpy(losses.gram_matrix(keras.ops.convert_to_tensor(f)))
    assert got.shape == (4, 4)
    np.testing.assert_allclose(got, np_gram_paper(f) / (5 * 7), rtol=1e-5)
    np.testing.assert_allclose(got, got.T, rtol=1e-6)


def test_style_layer_loss_equals_paper_for_equal_sizes(feats):
    f, a = feats
    g = losses.gram_matrix(keras.ops.convert_to_tensor(f))
    t = losses.gram_matrix(keras.ops.convert_to_tensor(a))
    got = float(losses.style_layer_loss(g, t))
    assert got == pytest.approx(np_style_layer_paper(f, a), rel=1e-4)
    assert float(losses.style_layer_loss(g, g)) == 0.0


def test_total_variation_counts_squared_neighbour_differences():
    img = np.zeros((3, 4, 3), np.float32)
    img[1, 2, 0] = 2.0  # one bright pixel: 4 neighbours differ by 2 -> 4 * 2^2
    assert float(losses.total_variation_loss(keras.ops.convert_to_tensor(img))) == pytest.approx(16.0)


def test_objective_gradient_matches_finite_differences(engine):
    """The compiled step's image gradient against central differences of its loss."""
    from engine.jobs import TransferSettings
    from engine.transfer import content_scale
    from tests.engine.conftest import smooth_photo, stripes_texture

    settings = TransferSettings(size=24, tv_weight=1e-3, style_strength=1e4)
    objective = engine.objective(settings)
    content = smooth_photo(18, 24)
    style = stripes_texture(24, 24)
    args = engine.step_args(objective, content, [style], settings)
    rng = np.random.default_rng(0)
    x = np.clip(content + rng.normal(0, 20, content.shape), 0, 255).astype(np.float32)
    loss, grad, terms = objective.step(x, *args)
    assert loss == pytest.approx(terms["content"] + terms["style"] + settings.tv_weight * content_scale(18, 24) * terms["tv"], rel=1e-4)
    x64 = x.astype(np.float64)
    eps = 0.5
    # Check the pixels with the largest gradients: their finite differences stand
    # far above float32 rounding of the loss.
    for flat in np.argsort(np.abs(grad).ravel())[-6:]:
        idx = np.unravel_index(flat, x.shape)
        plus, minus = x64.copy(), x64.copy()
        plus[idx] += eps
        minus[idx] -= eps
        lp, _, _ = objective.step(plus.astype(np.float32), *args)
        lm, _, _ = objective.step(minus.astype(np.float32), *args)
        numeric = (lp - lm) / (2 * eps)
        assert grad[idx] == pytest.approx(numeric, rel=0.05, abs=1e-3 * abs(loss)), idx
