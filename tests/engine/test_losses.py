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


def test_content_loss_is_the_mean_square(feats):
    f, p = feats
    got = float(losses.content_loss(keras.ops.convert_to_tensor(f), keras.ops.convert_to_tensor(p)))
    assert got == pytest.approx(np.mean((f - p) ** 2), rel=1e-5)


def test_gram_is_ffT_per_position(feats):
    f, _ = feats
    got = keras.ops.convert_to_numpy(losses.gram_matrix(keras.ops.convert_to_tensor(f)))
    assert got.shape == (4, 4)
    np.testing.assert_allclose(got, np_gram_paper(f) / (5 * 7), rtol=1e-5)
    np.testing.assert_allclose(got, got.T, rtol=1e-6)


def test_style_layer_loss_is_the_papers_up_to_a_constant_for_equal_sizes(feats):
    """Eq. 4 with per-position Grams and a mean over N² entries: the paper's E_l × 4."""
    f, a = feats
    g = losses.gram_matrix(keras.ops.convert_to_tensor(f))
    t = losses.gram_matrix(keras.ops.convert_to_tensor(a))
    got = float(losses.style_layer_loss(g, t))
    assert got == pytest.approx(4 * np_style_layer_paper(f, a), rel=1e-4)
    assert float(losses.style_layer_loss(g, g)) == 0.0


def test_channel_scales_undo_any_per_channel_rescaling_exactly():
    """The point of standardising: d_c·F gives the same standardised features as F,
    for any positive d_c, because every statistic used scales with its own unit."""
    rng = np.random.default_rng(0)
    photo, painting = rng.uniform(0.0, 1.5, (6, 5, 8)), rng.uniform(0.0, 1.5, (7, 4, 8))
    reference = rng.uniform(0.5, 2.0, 8)

    def standardised(d):
        scales = losses.channel_scales([losses.channel_rms(photo * d), losses.channel_rms(painting * d)],
                                       [1.0, 1.0], reference * d)
        return photo * d * scales

    d = np.exp(rng.uniform(-3.0, 3.0, 8))  # factors from 1/20 to 20
    np.testing.assert_allclose(standardised(d), standardised(1.0), rtol=1e-5)


def test_a_unit_both_images_barely_use_is_held_at_its_reference_not_blown_up():
    photo, painting = np.ones((4, 4, 4)), np.ones((4, 4, 4))
    photo[..., 1] = painting[..., 1] = 1e-9
    photo[..., 3] = painting[..., 3] = 0.0
    reference = np.array([1.0, 2.0, 0.0, 1e-9])
    scales = losses.channel_scales([losses.channel_rms(photo), losses.channel_rms(painting)], [1, 1],
                                   reference)
    assert scales[1] == pytest.approx(1.0 / (losses.FLOOR * 2.0), rel=1e-3)
    assert scales[0] == pytest.approx(1.0 / np.sqrt(1.0 + losses.FLOOR**2), rel=1e-4)
    assert scales[1] < scales[0]  # the quiet unit is not amplified above the busy one
    assert scales[2] == pytest.approx(1.0)  # used by the images, silent on the reference
    assert scales[3] == 0.0  # rounding, not a response: silent
    silent = losses.channel_scales([np.zeros(3), np.zeros(3)], [1, 1], np.zeros(3))
    assert np.all(silent == 0)


def test_strength_split_is_a_convex_combination_with_ratio_s():
    content, style = losses.strength_split(10.0)
    assert content + style == pytest.approx(1.0) and style / content == pytest.approx(10.0)
    assert losses.strength_split(0.0) == (1.0, 0.0)


def test_total_variation_counts_squared_neighbour_differences():
    img = np.zeros((3, 4, 3), np.float32)
    img[1, 2, 0] = 255.0  # one bright pixel: 2 vertical and 2 horizontal neighbours differ by 1
    # 2 of the 2*4*3 vertical and 2 of the 3*3*3 horizontal differences, in 0..1 units
    expected = 2 / (2 * 4 * 3) + 2 / (3 * 3 * 3)
    assert float(losses.total_variation_loss(keras.ops.convert_to_tensor(img))) == pytest.approx(expected)


def test_objective_gradient_matches_finite_differences(engine):
    """The compiled step's image gradient against central differences of its loss."""
    from engine.jobs import TransferSettings
    from tests.engine.conftest import smooth_photo, stripes_texture

    # float32: the check needs the loss's rounding far below its change over ±eps.
    settings = TransferSettings(size=24, tv_weight=1e-1, style_strength=10.0, precision="float32")
    job = engine.prepare(smooth_photo(18, 24), [stripes_texture(24, 24)], settings)
    objective = job.objective
    content, args = job.level()
    rng = np.random.default_rng(0)
    x = np.clip(content + rng.normal(0, 20, content.shape), 0, 255).astype(np.float32)
    loss, grad, terms = objective.step(x, *args)
    assert loss == pytest.approx(terms["content"] + terms["style"] + settings.tv_weight * terms["tv"], rel=1e-4)
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
