"""VGG-19 / VGG-16 feature extractor: the Keras architecture, the paper's layer
names, pre/deprocessing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from engine.jobs import NETWORK_LAYERS, VGG19_CONV_LAYERS
from engine.weights import VGGWeights

log = logging.getLogger(__name__)


def keras_layer_name(paper_name: str) -> str:
    """conv4_2 -> block4_conv2 (Keras' keras.applications.VGG19 naming)."""
    block, index = paper_name.removeprefix("conv").split("_")
    return f"block{block}_conv{index}"


def deepest_layer(names: Sequence[str]) -> str:
    # VGG-16's layers are VGG-19's minus conv3_4, conv4_4 and conv5_4, in the same
    # order, so VGG-19's order ranks the names of either network.
    return max(names, key=VGG19_CONV_LAYERS.index)


# The architecture each network is built after (its layer list and Keras names).
KERAS_APPLICATIONS = {"vgg19": "VGG19", "vgg16": "VGG16"}


def preprocess(rgb: np.ndarray, mean_bgr: np.ndarray) -> np.ndarray:
    """RGB 0..255 -> the Caffe convention VGG-19 was trained with: BGR minus the mean pixel."""
    return (rgb[..., ::-1] - mean_bgr).astype(np.float32)


def calibration_image(size: int = 128, seed: int = 1234) -> np.ndarray:
    """A fixed, natural-looking RGB image (1/f noise with correlated colours).

    Natural images have a roughly 1/f amplitude spectrum; this gives the units of
    the network a response like a photo's without shipping a photo.
    """
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size)
    grey = np.real(np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.random((size, size)))))
    tint = np.real(np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.random((size, size)))))
    grey = (grey - grey.mean()) / grey.std()
    tint = (tint - tint.mean()) / tint.std()
    rgb = np.stack([grey + 0.3 * tint, grey, grey - 0.3 * tint], axis=-1)
    return np.clip(118.0 + 55.0 * rgb, 0.0, 255.0).astype(np.float32)


def reference_images(size: int = 128, seed: int = 1234) -> list[np.ndarray]:
    """Fixed images every unit's yardstick is measured on (FeatureNetwork.reference_rms):
    the 1/f image, the same with pixel noise, and uniform noise: the grain an image
    picks up while it is optimised excites units that smooth pictures never do."""
    rng = np.random.default_rng(seed)
    smooth = calibration_image(size, seed)
    grainy = np.clip(smooth + rng.normal(0.0, 20.0, smooth.shape), 0.0, 255.0).astype(np.float32)
    noise = rng.uniform(0.0, 255.0, smooth.shape).astype(np.float32)
    return [smooth, grainy, noise]


class MirrorPad(keras.layers.Layer):
    """Pads (H, W) by `width` with the mirror image of the border ("symmetric": for the
    width 1 of a 3x3 convolution, the edge pixel repeated), before a 'valid' convolution.

    VGG was trained with zero padding, which at the image border means "mean-grey
    pixels out there" (the input is mean-subtracted). Optimising an image through
    it, the outermost pixels are pulled towards whatever makes those fake grey
    neighbours look like the painting, and the border came out tinted (a blue or
    green frame two pixels wide at strong style). Mirroring at every layer gives the
    border real-looking neighbours; the weights and the interior are untouched.
    "symmetric" rather than "reflect" works on maps one position wide (a small image
    at conv5_1), and every backend has it (PyTorch's is "replicate").
    """

    def __init__(self, width: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.width = width

    def call(self, x):
        w = self.width
        return keras.ops.pad(x, [[0, 0], [w, w], [w, w], [0, 0]], mode="symmetric")

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        grow = 2 * self.width
        return (n, None if h is None else h + grow, None if w is None else w + grow, c)


@dataclass(frozen=True)
class NetworkKey:
    network: str = "vgg19"
    pooling: str = "avg"
    precision: str = "float32"


class FeatureNetwork:
    """keras.applications.VGG19 or VGG16 (include_top=False, whichever network the
    weights are), rebuilt with the pooling we want and truncated at the deepest
    layer in use, returning the paper's layers by name.

    The weights are used as the file has them. Gatys et al. (2016, Sec. 2) rescaled
    their network so that each filter's mean activation over ImageNet is one; here the
    losses standardise every channel by statistics of the job's own images instead
    (engine/losses.py), which makes the activation scale of a weight file irrelevant.
    """

    def __init__(self, weights: VGGWeights, *, pooling: str = "avg", precision: str = "float32",
                 deepest: str = "conv5_1") -> None:
        self.weights = weights
        self.key = NetworkKey(weights.network, pooling, precision)
        names = NETWORK_LAYERS[weights.network]
        if deepest not in names:
            raise ValueError(f"{weights.network} has no layer {deepest}; it has {', '.join(names)}")
        self.layer_names = names[: names.index(deepest) + 1]
        self.mean_bgr = np.asarray(weights.mean_bgr, dtype=np.float32)
        self._conv_layers: dict[str, keras.layers.Layer] = {}
        self.model = self._build(pooling, precision)
        # A fixed feature extractor: no backend tracks gradients for the weights
        # (PyTorch would otherwise build autograd graphs through them, targets included).
        self.model.trainable = False
        self._load(weights)
        self._submodels: dict[tuple[str, ...], keras.Model] = {}
        self._reference_rms: dict[str, np.ndarray] = {}

    def _build(self, pooling: str, precision: str) -> keras.Model:
        # Follow the application model's own layer list so the architecture (and the
        # Keras names the weight files use) is exactly keras.applications.VGG19's or VGG16's.
        application = getattr(keras.applications, KERAS_APPLICATIONS[self.key.network])
        reference = application(include_top=False, weights=None)
        dtype = "mixed_bfloat16" if precision == "bfloat16" else "float32"
        inputs = keras.Input(shape=(None, None, 3), name="bgr_minus_mean")
        x = inputs
        outputs = {}
        last = keras_layer_name(self.layer_names[-1])
        for layer in reference.layers[1:]:
            # Layer attributes, not get_config(): serialising a config imports
            # TensorFlow whenever it is installed, whatever the backend (+400 MB).
            if isinstance(layer, keras.layers.Conv2D):
                conv = keras.layers.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides,
                                           padding="valid", activation=layer.activation,
                                           name=layer.name, dtype=dtype)
                # 'same' padding done by mirroring instead of zeros (MirrorPad says why).
                x = conv(MirrorPad(layer.kernel_size[0] // 2, name=f"{layer.name}_pad", dtype=dtype)(x))
                paper = self.layer_names[[keras_layer_name(n) for n in self.layer_names].index(layer.name)]
                self._conv_layers[paper] = conv
                # Losses and Gram matrices stay float32 whatever the convolution precision.
                outputs[paper] = keras.ops.cast(x, "float32")
                if layer.name == last:
                    break
            else:  # pooling: the paper found average pooling "slightly more appealing"
                pool_cls = keras.layers.AveragePooling2D if pooling == "avg" else keras.layers.MaxPooling2D
                # "same": an odd-sized map keeps its last row and column (pooled over
                # what there is). With VGG's "valid" pooling they were dropped, the image's
                # last rows got no gradient from deeper layers, and on a 171-px-high
                # output the bottom two rows came out tinted (-25 levels of green and blue).
                x = pool_cls(pool_size=layer.pool_size, strides=layer.strides,
                             padding="same", name=layer.name, dtype=dtype)(x)
        return keras.Model(inputs, outputs, name=f"{self.key.network}_features")

    def _load(self, weights: VGGWeights) -> None:
        for name, conv in self._conv_layers.items():
            kernel, bias = weights.layers[name]
            conv.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])

    def reference_rms(self, layer: str) -> np.ndarray:
        """Each channel's RMS response to reference_images(): a fixed yardstick per unit
        that scales with the unit exactly as its response to any image does."""
        if layer not in self._reference_rms:
            from engine.losses import channel_rms

            maps = [self.features(image, self.layer_names) for image in reference_images()]
            self._reference_rms.update({
                name: np.sqrt(np.mean([np.square(channel_rms(m[name])) for m in maps], axis=0))
                for name in self.layer_names})
        return self._reference_rms[layer]

    def submodel(self, layers: Sequence[str]) -> keras.Model:
        """A model returning only `layers`; Keras prunes everything past the deepest."""
        key = tuple(layers)
        if key not in self._submodels:
            self._submodels[key] = keras.Model(
                self.model.input, [self.model.output[name] for name in key]
            )
        return self._submodels[key]

    def features(self, rgb: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """Eager feature maps (H, W, C) of one RGB 0..255 image, for targets and tests."""
        outputs = self.submodel(layers)(preprocess(rgb, self.mean_bgr)[None], training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return {name: keras.ops.convert_to_numpy(out)[0] for name, out in zip(layers, outputs, strict=True)}
