"""Colour preservation for style transfer (NumPy only).

Follows Gatys, Bethge, Hertzmann & Shechtman 2016, "Preserving Color in Neural
Artistic Style Transfer" (arXiv:1606.05897), which gives two linear methods:

- Sec. 2, colour histogram matching: recolour the *style* image so its RGB mean
  and covariance equal the content's, then run style transfer as usual.
- Sec. 3, luminance-only transfer: run style transfer on luminance images only
  and put the content's chroma (YIQ I and Q) back afterwards.

Images are float arrays H x W x 3 on the 0..255 scale. Statistics are computed
in float64 (sums over millions of pixels); results come back as float32 unless
the input was float64.
"""

from __future__ import annotations

import numpy as np

from engine.jobs import HISTOGRAM_METHODS  # stdlib-only module: the names live there, once

# NTSC 1953 RGB -> YIQ (Y is Rec. 601 luma). The paper uses YIQ for its
# luminance-only method. The inverse is computed, not the rounded published
# matrix, so that rgb -> yiq -> rgb is exact to float precision.
_RGB_TO_YIQ = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=np.float64,
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)

# Added to covariances (units: (0..255)^2) before factorising. Far below 8-bit
# quantisation noise (1/12), so real images are unaffected, but a flat image's
# zero covariance becomes invertible instead of producing NaN or inf.
COVARIANCE_EPS = 1e-2


def _float(x: np.ndarray) -> np.ndarray:
    """Keep float64 inputs, make everything else float32."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def _apply_matrix(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    x = _float(image)
    if x.shape[-1] != 3:
        raise ValueError(f"expected an H x W x 3 array (got shape {x.shape})")
    return (x.astype(np.float64) @ matrix.T).astype(x.dtype)


def rgb_to_yiq(rgb: np.ndarray) -> np.ndarray:
    """RGB -> YIQ. Y keeps the 0..255 scale; I, Q are signed chroma."""
    return _apply_matrix(rgb, _RGB_TO_YIQ)


def yiq_to_rgb(yiq: np.ndarray) -> np.ndarray:
    """YIQ -> RGB, the exact inverse of `rgb_to_yiq` (not clipped)."""
    return _apply_matrix(yiq, _YIQ_TO_RGB)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """The Y channel, H x W."""
    return rgb_to_yiq(rgb)[..., 0]


def match_luminance(style_y: np.ndarray, content_y: np.ndarray) -> np.ndarray:
    """Sec. 3: L_S' = (σ_C / σ_S)(L_S − μ_S) + μ_C.

    Matching the first two moments keeps the style's luminance texture while
    removing its overall brightness and contrast, which would otherwise be
    transferred along with the brushwork. A flat style (σ_S = 0) has no
    contrast to rescale; it becomes flat at the content's mean.
    Not clipped: clipping would break the matched statistics.
    """
    style = np.asarray(style_y, dtype=np.float64)
    content = np.asarray(content_y, dtype=np.float64)
    mu_s, sigma_s = style.mean(), style.std()
    mu_c, sigma_c = content.mean(), content.std()
    if sigma_s <= 1e-12 * max(1.0, abs(mu_s)):
        matched = np.full_like(style, mu_c)
    else:
        matched = (sigma_c / sigma_s) * (style - mu_s) + mu_c
    return matched.astype(_float(style_y).dtype)


def _grey_rgb(y: np.ndarray) -> np.ndarray:
    return np.repeat(y[..., None], 3, axis=-1)


def luminance_inputs(
    content_rgb: np.ndarray, style_rgb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sec. 3: what the network sees for luminance-only transfer.

    Each image's Y replicated to three channels (VGG expects RGB), the style's
    Y first matched to the content's mean and standard deviation. Call once per
    style image.
    """
    content_y = luminance(content_rgb)
    style_y = match_luminance(luminance(style_rgb), content_y)
    return _grey_rgb(content_y), _grey_rgb(style_y)


def recombine_luminance(stylized_rgb: np.ndarray, content_rgb: np.ndarray) -> np.ndarray:
    """Sec. 3: Y of the stylised luminance result + I, Q of the content, clipped to 0..255.

    The stylised image should be grey, but the optimiser works on three channels
    and may drift in colour; taking its Y discards that drift.
    """
    stylized = np.asarray(stylized_rgb)
    content = np.asarray(content_rgb)
    if stylized.shape != content.shape:
        raise ValueError(
            f"stylised and content images must be the same size "
            f"(got {stylized.shape} and {content.shape})"
        )
    yiq = rgb_to_yiq(content)
    yiq[..., 0] = luminance(stylized)
    return np.clip(yiq_to_rgb(yiq), 0.0, 255.0)


def _mean_cov(pixels: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean (3,) and covariance (3, 3) of N x 3 pixels, regularised by eps·I."""
    mean = pixels.mean(axis=0)
    centred = pixels - mean
    cov = centred.T @ centred / max(1, len(pixels))
    return mean, cov + eps * np.eye(3)


def _sym_power(cov: np.ndarray, power: float) -> np.ndarray:
    """Σ^power for a symmetric positive definite Σ, via its eigendecomposition."""
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, np.finfo(np.float64).tiny)  # eigh can return -0 or -1e-17
    return (v * w**power) @ v.T


def cholesky_transform(cov_style: np.ndarray, cov_content: np.ndarray) -> np.ndarray:
    """Sec. 2: A = L_C L_S⁻¹, with Σ = L Lᵀ (Cholesky), so that A Σ_S Aᵀ = Σ_C."""
    l_c = np.linalg.cholesky(cov_content)
    l_s = np.linalg.cholesky(cov_style)
    # L_C L_S⁻¹ = (L_S⁻ᵀ L_Cᵀ)ᵀ: solve instead of inverting.
    return np.linalg.solve(l_s.T, l_c.T).T


def pca_transform(cov_style: np.ndarray, cov_content: np.ndarray) -> np.ndarray:
    """Sec. 2, the image-analogies variant: A = Σ_C^½ Σ_S^-½ (symmetric square roots)."""
    return _sym_power(cov_content, 0.5) @ _sym_power(cov_style, -0.5)


def match_color_histogram(
    style_rgb: np.ndarray,
    content_rgb: np.ndarray,
    method: str = "cholesky",
    *,
    clip: bool = True,
    eps: float = COVARIANCE_EPS,
) -> np.ndarray:
    """Sec. 2: x' = A(x − μ_S) + μ_C for every style pixel x.

    Afterwards the style image has the content's RGB mean and covariance (up to
    eps), so style transfer copies its brushwork but not its palette. Both
    methods satisfy A Σ_S Aᵀ = Σ_C; they differ only in the rotation they pick.

    `clip=True` clips to 0..255 for use as an image, which shifts the statistics
    slightly where the transform leaves the range; `clip=False` returns the
    exact linear transform.
    """
    if method not in HISTOGRAM_METHODS:
        raise ValueError(f"method must be one of {', '.join(HISTOGRAM_METHODS)} (got {method!r})")
    style = np.asarray(style_rgb)
    if style.shape[-1] != 3 or np.asarray(content_rgb).shape[-1] != 3:
        raise ValueError("expected H x W x 3 arrays")
    x_s = style.reshape(-1, 3).astype(np.float64)
    x_c = np.asarray(content_rgb).reshape(-1, 3).astype(np.float64)
    mu_s, cov_s = _mean_cov(x_s, eps)
    mu_c, cov_c = _mean_cov(x_c, eps)
    transform = cholesky_transform if method == "cholesky" else pca_transform
    a = transform(cov_s, cov_c)
    out = ((x_s - mu_s) @ a.T + mu_c).reshape(style.shape)
    if clip:
        out = np.clip(out, 0.0, 255.0)
    return out.astype(_float(style).dtype)
