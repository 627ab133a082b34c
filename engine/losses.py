"""The losses of Gatys, Ecker & Bethge (CVPR 2016), as small pure functions.

Written with `keras.ops` so they run on any Keras 3 backend. Feature maps are
(H, W, C) tensors of one layer for one image: C = N_l filters, H*W = M_l positions.
"""

from __future__ import annotations

from keras import ops


def content_loss(features, target):
    """Eq. 1: L_content = 1/2 * sum_ij (F_ij - P_ij)^2."""
    return 0.5 * ops.sum(ops.square(features - target))


def gram_matrix(features):
    """Eq. 3 with a 1/M_l factor: G_ij = (1/M_l) * sum_k F_ik F_jk.

    The paper's G is unnormalised and its E_l divides by 4 N_l^2 M_l^2. Dividing G
    by M_l here and E_l by 4 N_l^2 below is the same number when the style image
    and the output have the same size (the paper's setting), and stays meaningful
    when they differ (style scale, several styles of different sizes), where the
    paper's form would compare Gram matrices summed over different numbers of
    positions. The same normalisation is used by jcjohnson/neural-style.
    """
    channels = ops.shape(features)[-1]
    flat = ops.reshape(features, (-1, channels))
    positions = ops.cast(ops.shape(flat)[0], flat.dtype)
    return ops.matmul(ops.transpose(flat), flat) / positions


def style_layer_loss(gram, target_gram):
    """Eq. 4: E_l = 1/(4 N_l^2 M_l^2) * sum_ij (G_ij - A_ij)^2, with G, A per position (see gram_matrix)."""
    channels = ops.cast(ops.shape(gram)[0], gram.dtype)
    return ops.sum(ops.square(gram - target_gram)) / (4.0 * channels * channels)


def total_variation_loss(image):
    """Squared total variation of an (H, W, 3) image, summed over pixels.

    Not in Gatys et al.; a common smoothness prior (Mahendran & Vedaldi 2015,
    used by jcjohnson/neural-style) that suppresses high-frequency noise.
    """
    dy = image[1:, :, :] - image[:-1, :, :]
    dx = image[:, 1:, :] - image[:, :-1, :]
    return ops.sum(ops.square(dy)) + ops.sum(ops.square(dx))


def weighted_sum(values, weights):
    total = 0.0
    for value, weight in zip(values, weights):
        total = total + weight * value
    return total
