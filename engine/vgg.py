"""VGG-19 feature extractor: the Keras architecture, the paper's layer names,
pre/deprocessing, and activation normalisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np

from engine.jobs import VGG19_CONV_LAYERS
from engine.weights import VGGWeights

log = logging.getLogger(__name__)


def keras_layer_name(paper_name: str) -> str:
    """conv4_2 -> block4_conv2 (Keras' keras.applications.VGG19 naming)."""
    block, index = paper_name.removeprefix("conv").split("_")
    return f"block{block}_conv{index}"


def deepest_layer(names: Sequence[str]) -> str:
    return max(names, key=VGG19_CONV_LAYERS.index)


def preprocess(rgb: np.ndarray, mean_bgr: np.ndarray) -> np.ndarray:
    """RGB 0..255 -> the Caffe convention VGG-19 was trained with: BGR minus the mean pixel."""
    return (rgb[..., ::-1] - mean_bgr).astype(np.float32)


def calibration_image(size: int = 128, seed: int = 1234) -> np.ndarray:
    """A fixed, natural-looking RGB image (1/f noise with correlated colours).

    Natural images have a roughly 1/f amplitude spectrum; this gives the
    normalisation below activations like a photo's without shipping a photo.
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


@dataclass(frozen=True)
class NetworkKey:
    pooling: str = "avg"
    precision: str = "float32"


class FeatureNetwork:
    """keras.applications.VGG19(include_top=False), rebuilt with the pooling we want
    and truncated at the deepest layer in use, returning the paper's layers by name.

    Activations are normalised (Gatys et al. 2016, Sec. 2: "We normalized the network
    by scaling the weights such that the mean activation of each convolutional filter
    over images and positions is equal to one"). We scale per layer rather than per
    filter, on a fixed synthetic image: a per-filter scale measured on one image
    blows up filters that image never excites. ReLU and pooling commute with a
    positive scale, so only the loss balance changes, never what the network sees.
    This makes `style_strength` mean the same for every weight file, and keeps the
    deep layers of a random network from vanishing.
    """

    def __init__(self, weights: VGGWeights, *, pooling: str = "avg", precision: str = "float32",
                 deepest: str = "conv5_1", normalize: bool = True) -> None:
        self.weights = weights
        self.key = NetworkKey(pooling, precision)
        self.layer_names = VGG19_CONV_LAYERS[: VGG19_CONV_LAYERS.index(deepest) + 1]
        self.mean_bgr = np.asarray(weights.mean_bgr, dtype=np.float32)
        self._conv_layers: dict[str, keras.layers.Layer] = {}
        self.model = self._build(pooling, precision)
        # A fixed feature extractor: no backend tracks gradients for the weights
        # (PyTorch would otherwise build autograd graphs through them, targets included).
        self.model.trainable = False
        self._load(weights)
        if normalize:
            self._normalize()
        self._submodels: dict[tuple[str, ...], keras.Model] = {}

    def _build(self, pooling: str, precision: str) -> keras.Model:
        # Follow the application model's own layer list so the architecture (and the
        # Keras names the weight files use) is exactly keras.applications.VGG19's.
        reference = keras.applications.VGG19(include_top=False, weights=None)
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
                                           padding=layer.padding, activation=layer.activation,
                                           name=layer.name, dtype=dtype)
                x = conv(x)
                paper = self.layer_names[[keras_layer_name(n) for n in self.layer_names].index(layer.name)]
                self._conv_layers[paper] = conv
                # Losses and Gram matrices stay float32 whatever the convolution precision.
                outputs[paper] = keras.ops.cast(x, "float32")
                if layer.name == last:
                    break
            else:  # pooling: the paper found average pooling "slightly more appealing"
                pool_cls = keras.layers.AveragePooling2D if pooling == "avg" else keras.layers.MaxPooling2D
                x = pool_cls(pool_size=layer.pool_size, strides=layer.strides,
                             padding=layer.padding, name=layer.name, dtype=dtype)(x)
        return keras.Model(inputs, outputs, name="vgg19_features")

    def _load(self, weights: VGGWeights) -> None:
        for name, conv in self._conv_layers.items():
            kernel, bias = weights.layers[name]
            conv.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])

    def _normalize(self) -> None:
        image = preprocess(calibration_image(), self.mean_bgr)[None]
        activations = self.model(image, training=False)
        previous = 1.0
        for name in self.layer_names:
            mean = float(np.mean(keras.ops.convert_to_numpy(activations[name])))
            scale = 1.0 / mean if mean > 1e-12 else 1.0
            conv = self._conv_layers[name]
            kernel, bias = conv.get_weights()
            # a'_l = c_l a_l  with  a'_{l-1} = c_{l-1} a_{l-1}  =>  W' = W c_l / c_{l-1},  b' = b c_l
            conv.set_weights([kernel * (scale / previous), bias * scale])
            previous = scale
        log.debug("normalised VGG-19 activations on the calibration image")

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
        return {name: keras.ops.convert_to_numpy(out)[0] for name, out in zip(layers, outputs)}
