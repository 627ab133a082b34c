"""engine.color: Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer"."""

from __future__ import annotations

import numpy as np
import pytest

from engine.color import (
    luminance,
    luminance_inputs,
    match_color_histogram,
    match_luminance,
    recombine_luminance,
    rgb_to_yiq,
    yiq_to_rgb,
)


def smooth_image(h: int, w: int, seed: int, lo: float = 40.0, hi: float = 215.0) -> np.ndarray:
    """Random but correlated colours in [lo, hi], so transforms stay inside 0..255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    mix = rng.normal(size=(3, 3))
    base = np.stack([np.sin(3 * x + 1), np.cos(2 * y), x * y], axis=-1) @ mix
    base += 0.3 * rng.normal(size=(h, w, 3))
    base = (base - base.min()) / (base.max() - base.min())
    return lo + (hi - lo) * base


def test_yiq_round_trip():
    rgb = np.random.default_rng(0).uniform(0, 255, (16, 16, 3))
    np.testing.assert_allclose(yiq_to_rgb(rgb_to_yiq(rgb)), rgb, atol=1e-9)


def test_yiq_of_grey_has_no_chroma():
    grey = np.full((2, 2, 3), 77.0)
    yiq = rgb_to_yiq(grey)
    np.testing.assert_allclose(yiq[..., 0], 77.0)
    np.testing.assert_allclose(yiq[..., 1:], 0.0, atol=1e-4)  # published coefficients are rounded


def test_float32_stays_float32_and_uint8_is_accepted():
    assert rgb_to_yiq(np.zeros((2, 2, 3), np.float32)).dtype == np.float32
    assert rgb_to_yiq(np.zeros((2, 2, 3), np.uint8)).dtype == np.float32


def test_match_luminance_takes_content_mean_and_std():
    rng = np.random.default_rng(1)
    style_y = rng.uniform(0, 255, (30, 40))
    content_y = rng.normal(120, 20, (25, 25))
    matched = match_luminance(style_y, content_y)
    assert matched.shape == style_y.shape
    assert matched.mean() == pytest.approx(content_y.mean(), rel=1e-9)
    assert matched.std() == pytest.approx(content_y.std(), rel=1e-9)
    # A positive affine map: the style's texture (its ordering) is unchanged.
    np.testing.assert_array_equal(np.argsort(matched, axis=None), np.argsort(style_y, axis=None))


def test_match_luminance_flat_style_does_not_divide_by_zero():
    matched = match_luminance(
        np.full((8, 8), 50.0), np.random.default_rng(2).uniform(0, 255, (8, 8))
    )
    assert np.isfinite(matched).all()
    assert np.ptp(matched) == 0.0


def test_luminance_inputs_are_grey_and_matched():
    content = smooth_image(24, 32, seed=3)
    style = smooth_image(20, 20, seed=4, lo=0, hi=255)
    content_lum, style_lum = luminance_inputs(content, style)
    assert content_lum.shape == content.shape and style_lum.shape == style.shape
    for image in (content_lum, style_lum):
        np.testing.assert_array_equal(image[..., 0], image[..., 1])
        np.testing.assert_array_equal(image[..., 0], image[..., 2])
    np.testing.assert_allclose(content_lum[..., 0], luminance(content))
    content_y = luminance(content)
    assert style_lum[..., 0].mean() == pytest.approx(content_y.mean(), rel=1e-9)
    assert style_lum[..., 0].std() == pytest.approx(content_y.std(), rel=1e-9)


def test_recombine_keeps_content_chroma_and_stylised_luminance():
    content = smooth_image(24, 32, seed=5, lo=60, hi=190)
    # A "stylised" grey result: some other luminance pattern, in range.
    stylised_y = smooth_image(24, 32, seed=6, lo=90, hi=160)[..., 0]
    stylised = np.repeat(stylised_y[..., None], 3, axis=-1)
    out = recombine_luminance(stylised, content)
    assert out.min() > 0 and out.max() < 255  # clipping did not bite
    out_yiq, content_yiq = rgb_to_yiq(out), rgb_to_yiq(content)
    np.testing.assert_allclose(out_yiq[..., 1:], content_yiq[..., 1:], atol=1e-9)
    np.testing.assert_allclose(out_yiq[..., 0], luminance(stylised), atol=1e-9)


def test_recombine_clips_and_checks_sizes():
    content = np.full((4, 4, 3), (250.0, 10.0, 10.0))
    out = recombine_luminance(np.full((4, 4, 3), 250.0), content)
    assert out.min() >= 0 and out.max() <= 255
    with pytest.raises(ValueError, match="same size"):
        recombine_luminance(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))


def stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = image.reshape(-1, 3).astype(np.float64)
    return pixels.mean(axis=0), np.cov(pixels, rowvar=False, bias=True)


@pytest.mark.parametrize("method", ["cholesky", "pca"])
def test_histogram_matching_gives_style_the_content_statistics(method):
    style = smooth_image(40, 30, seed=7, lo=0, hi=255)
    content = smooth_image(32, 32, seed=8, lo=70, hi=180)
    matched = match_color_histogram(style, content, method, clip=False)
    assert matched.shape == style.shape
    mean_m, cov_m = stats(matched)
    mean_c, cov_c = stats(content)
    np.testing.assert_allclose(mean_m, mean_c, rtol=1e-6)
    np.testing.assert_allclose(cov_m, cov_c, rtol=1e-3, atol=1e-3 * np.abs(cov_c).max())


@pytest.mark.parametrize("method", ["cholesky", "pca"])
def test_histogram_matching_clips_by_default(method):
    style = smooth_image(20, 20, seed=9, lo=0, hi=255)
    content = smooth_image(20, 20, seed=10, lo=0, hi=255)
    matched = match_color_histogram(style, content, method)
    assert matched.min() >= 0 and matched.max() <= 255


def test_the_two_methods_differ_only_by_a_rotation():
    style = smooth_image(20, 20, seed=11, lo=0, hi=255)
    content = smooth_image(20, 20, seed=12, lo=0, hi=255)
    a = match_color_histogram(style, content, "cholesky", clip=False)
    b = match_color_histogram(style, content, "pca", clip=False)
    assert not np.allclose(a, b)  # genuinely different transforms, same statistics (up to eps)
    np.testing.assert_allclose(stats(a)[1], stats(b)[1], rtol=1e-4)


@pytest.mark.parametrize("method", ["cholesky", "pca"])
@pytest.mark.parametrize("flat", ["style", "content", "both"])
def test_flat_images_do_not_produce_nan(method, flat):
    varied = smooth_image(16, 16, seed=13)
    uniform = np.full((16, 16, 3), (30.0, 140.0, 200.0))
    style = uniform if flat in ("style", "both") else varied
    content = uniform if flat in ("content", "both") else varied
    matched = match_color_histogram(style, content, method)
    assert np.isfinite(matched).all()
    np.testing.assert_allclose(stats(matched)[0], stats(content)[0], atol=1e-3)


def test_greyscale_style_stays_finite():
    # R = G = B: a rank-one covariance, common for charcoal or ink styles.
    grey = smooth_image(16, 16, seed=14)[..., :1].repeat(3, axis=-1)
    matched = match_color_histogram(grey, smooth_image(16, 16, seed=15), "cholesky")
    assert np.isfinite(matched).all()


def test_histogram_matching_rejects_unknown_method():
    with pytest.raises(ValueError, match="cholesky, pca"):
        match_color_histogram(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)), "lab")
