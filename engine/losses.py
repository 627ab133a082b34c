"""The losses of Gatys, Ecker & Bethge (CVPR 2016), made invariant to the scale of
each channel, as small pure functions.

Written with `keras.ops` so they run on any Keras 3 backend. Feature maps are
(H, W, C) tensors of one layer for one image: C = N_l filters, H*W = M_l positions.

Why standardised features. The paper's α/β assumes its own network, rescaled so
that every filter's mean activation over ImageNet is one (CVPR 2016, Sec. 2).
Caffe-scale weights (what every public weight file holds) compute the same
function up to a positive factor d_c per channel, and that factor multiplies
the content loss by d_c² and the style loss by d_i·d_j·d_k·d_l: the working α/β
moves by orders of magnitude, differently at each layer (with ImageNet weights
conv5_1 alone carried 70-85 % of the paper-form style loss). So every term here
reads features divided by a fixed per-channel statistic of the job's own images
(`channel_scales`): rescaling channel c rescales that statistic by the same d_c,
and the loss, its gradient and the image do not change at all. This is the
paper's normalisation redone on the two input images instead of on ImageNet
(the recommendation of shared research, after andersbll's and Torchelie's
scale-free losses, which normalise gradients or whole instances instead).
With means instead of sums every term is also independent of the image size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from keras import ops

# A channel's scale is 1 / sqrt(rms_c² + (FLOOR · ref_c)²), where ref_c is the unit's
# RMS response to fixed reference images (engine.vgg.reference_images). Both terms
# scale with the unit, so the scale is exactly invariant to rescaling it. The second
# term matters for units that both images use less than they answer the references:
# with rms_c alone they were blown up by 1/tiny (with ImageNet weights 100-1000x; the
# loss at a noisy start rose to 1e7 and bfloat16 rounding changed it 20x). At 0.1 the
# loss stayed stiff (on a random network it fell 16 % in 60 L-BFGS steps, against 51 %
# at 1.0); at 1.0 the pictures on ImageNet weights were as good and the loss converged.
FLOOR = 1.0
# A unit whose spread is below this fraction of its layer's median is treated as
# silent (scale 0): what is left of it is rounding (bfloat16 leaves 1e-6-sized
# responses in units that float32 computes as exactly 0, and 1/1e-6 made the loss
# of a 32-px test image 40,000x its float32 value). This is the one place a unit is
# compared with its layer: it only concerns units a thousand times quieter than
# their neighbours on every image used.
SILENT = 1e-3


def channel_rms(features: np.ndarray) -> np.ndarray:
    """Root mean square of each channel of an (H, W, C) map over positions: (C,)."""
    flat = np.asarray(features, np.float64).reshape(-1, np.shape(features)[-1])
    return np.sqrt(np.mean(np.square(flat), axis=0))


def channel_scales(rms_maps: Sequence[np.ndarray], weights: Sequence[float],
                   reference: np.ndarray) -> np.ndarray:
    """1 / (pooled RMS) per channel, from the channel RMS of the job's images.

    `rms_maps` are `channel_rms` of the photo and of each painting at one layer,
    `weights` how much each image counts (they need not sum to 1). Pooling the
    photo with the paintings keeps the scale finite for a unit the painting never
    uses but the photo does (the painting alone would give 1/0, and that unit
    would swamp the loss), while staying exact under per-channel rescaling: every
    term of the pool scales by the same d_c. `reference` (the unit's response to
    fixed images, see FLOOR) keeps units that both images barely use from blowing up.
    A unit silent everywhere gets scale 0: there is nothing to match.
    """
    weights = np.asarray(weights, np.float64) / float(np.sum(weights))
    pooled = np.sqrt(sum(w * np.square(np.asarray(r, np.float64)) for w, r in zip(weights, rms_maps, strict=True)))
    spread = np.sqrt(np.square(pooled) + np.square(FLOOR * np.asarray(reference, np.float64)))
    alive = spread > SILENT * float(np.median(spread))
    return np.where(alive, 1.0 / np.where(alive, spread, 1.0), 0.0).astype(np.float32)


def standardise(features, scales):
    """F̂ = F · s per channel: the features in units of the job's own statistics."""
    return features * scales


def content_loss(features, target):
    """Eq. 1 as a mean: L_content = mean_ij (F̂_ij − P̂_ij)² (the paper's ½Σ over N·M entries)."""
    return ops.mean(ops.square(features - target))


def gram_matrix(features):
    """Eq. 3 per position: G_ij = (1/M_l) Σ_k F_ik F_jk.

    The paper's G is unnormalised and its E_l divides by 4 N_l² M_l². Per position,
    Grams of a style image and an output of different sizes (style scale, several
    styles) compare like with like (jcjohnson/neural-style does the same).
    """
    channels = ops.shape(features)[-1]
    flat = ops.reshape(features, (-1, channels))
    positions = ops.cast(ops.shape(flat)[0], flat.dtype)
    return ops.matmul(ops.transpose(flat), flat) / positions


def style_layer_loss(gram, target_gram):
    """Eq. 4 as a mean: E_l = mean_ij (Ĝ_ij − Â_ij)², on standardised features.

    The paper's 1/(4 N_l²) becomes the mean over the N_l² entries; with F̂ in units
    of each channel's RMS, Â has ones (or close) on its diagonal at every layer, so
    no layer outweighs another by the size of its activations.
    """
    return ops.mean(ops.square(gram - target_gram))


def total_variation_loss(image):
    """Mean squared difference of neighbouring pixels of an (H, W, 3) image in 0..1 units.

    Not in Gatys et al.; a common smoothness prior (Mahendran & Vedaldi 2015, used by
    jcjohnson/neural-style) that suppresses high-frequency noise. `image` is 0..255.
    """
    dy = (image[1:, :, :] - image[:-1, :, :]) / 255.0
    dx = (image[:, 1:, :] - image[:, :-1, :]) / 255.0
    return ops.mean(ops.square(dy)) + ops.mean(ops.square(dx))


def term_weights(layer_weights: Sequence[float]) -> np.ndarray:
    """Layer weights scaled to sum to 1, so a term's size never depends on how many
    layers it uses (the paper's w_l = 1/5 over five layers)."""
    w = np.asarray(layer_weights, np.float32)
    total = float(w.sum())
    return w / total if total > 0 else w


def strength_split(style_strength: float) -> tuple[float, float]:
    """(content weight, style weight) = (1 − λ, λ) with λ = s / (1 + s).

    `style_strength` s is the paper's β/α in standardised units; splitting it as a
    convex combination keeps the total loss O(1) at every strength, so the
    optimiser's step sizes and the loss's rounding noise behave the same at a subtle
    and an extreme setting.
    """
    lam = style_strength / (1.0 + style_strength)
    return 1.0 - lam, lam


def weighted_sum(values, weights):
    total = 0.0
    for value, weight in zip(values, weights, strict=True):
        total = total + weight * value
    return total
