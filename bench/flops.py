"""Analytic convolution FLOPs of the VGG-19 layers a job runs (stdlib only).

Forward FLOPs of one 3x3 'same' convolution at an H x W input:
    2 * H * W * C_in * C_out * 9          (a multiply and an add per weight and position)
VGG-19's 2x2/2 pooling ('valid', floor) halves H and W before conv2_1, conv3_1,
conv4_1 and conv5_1. A style-transfer step (loss and *image* gradient) runs the
forward pass and then, for every convolution, only the gradient with respect to
its input -- the same FLOPs as its forward pass -- and no weight gradients, so
    step FLOPs = 2 * sum(forward conv FLOPs of conv1_1 .. deepest layer in use)
(a training step would be 3x). Gram matrices (2*M*C^2 per style layer, about 1 %
at 512 px), pooling, ReLU and the losses are not counted: the percentage of
matmul peak is for the convolutions, which is where the time goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# (name, C_in, C_out) in network order; pooling happens before each block's first conv.
VGG19_CONVS: tuple[tuple[str, int, int], ...] = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), ("conv5_4", 512, 512),
)  # fmt: skip
CONV_NAMES = tuple(name for name, _, _ in VGG19_CONVS)
KERNEL_TAPS = 9  # 3 x 3


def deepest(layers: Iterable[str]) -> str:
    """The deepest of the named layers (network order)."""
    return max(layers, key=CONV_NAMES.index)


def conv_layer_flops(height: int, width: int, upto: str) -> list[tuple[str, int, int, int]]:
    """[(name, H, W, forward FLOPs)] for conv1_1 .. `upto` on an H x W input."""
    if upto not in CONV_NAMES:
        raise ValueError(f"unknown VGG-19 layer {upto!r}")
    rows = []
    h, w = int(height), int(width)
    for name, c_in, c_out in VGG19_CONVS:
        if name.endswith("_1") and name != "conv1_1":
            h, w = h // 2, w // 2  # 2x2 pooling with stride 2, 'valid'
        rows.append((name, h, w, 2 * h * w * c_in * c_out * KERNEL_TAPS))
        if name == upto:
            break
    return rows


def forward_flops(height: int, width: int, upto: str) -> int:
    return sum(f for *_, f in conv_layer_flops(height, width, upto))


def step_flops(height: int, width: int, layers: Sequence[str]) -> int:
    """Loss + image-gradient FLOPs: 2x the forward convolutions up to the deepest layer used."""
    return 2 * forward_flops(height, width, deepest(layers))


def matmul_flops(n: int) -> int:
    """An n x n by n x n matrix product: n^3 multiply-adds."""
    return 2 * n**3
