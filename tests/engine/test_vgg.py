"""The feature network: Keras' VGG-19 architecture, paper names, pooling, truncation
and the activation normalisation of Gatys et al."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from engine.jobs import VGG19_CONV_LAYERS
from engine.vgg import FeatureNetwork, calibration_image, keras_layer_name, preprocess


def test_paper_names_map_to_keras_names():
    assert keras_layer_name("conv1_1") == "block1_conv1"
    assert keras_layer_name("conv4_2") == "block4_conv2"
    reference = keras.applications.VGG19(include_top=False, weights=None)
    keras_convs = [layer.name for layer in reference.layers if isinstance(layer, keras.layers.Conv2D)]
    assert keras_convs == [keras_layer_name(n) for n in VGG19_CONV_LAYERS]


@pytest.mark.parametrize("pooling,cls", [("avg", keras.layers.AveragePooling2D), ("max", keras.layers.MaxPooling2D)])
def test_architecture_matches_keras_and_is_truncated(random_vgg_weights, pooling, cls):
    net = FeatureNetwork(random_vgg_weights, pooling=pooling, deepest="conv4_2", normalize=False)
    convs = [layer for layer in net.model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.name for c in convs] == [keras_layer_name(n) for n in VGG19_CONV_LAYERS[:10]]
    assert convs[-1].name == "block4_conv2"  # nothing past the deepest layer in use
    pools = [layer for layer in net.model.layers if "pool" in layer.name]
    assert len(pools) == 3 and all(isinstance(p, cls) for p in pools)
    for name, conv in zip(VGG19_CONV_LAYERS, convs):
        np.testing.assert_array_equal(conv.get_weights()[0], random_vgg_weights.layers[name][0])


def test_normalisation_gives_unit_mean_activations_without_changing_what_is_seen(random_vgg_weights):
    layers = ["conv1_1", "conv3_1", "conv5_1"]
    raw = FeatureNetwork(random_vgg_weights, normalize=False)
    normed = FeatureNetwork(random_vgg_weights, normalize=True)
    image = calibration_image()
    feats = normed.features(image, layers)
    for name in layers:
        assert feats[name].mean() == pytest.approx(1.0, rel=1e-3)
    # ReLU and pooling commute with positive scales: same features up to a factor.
    photo = np.random.default_rng(0).uniform(0, 255, (40, 40, 3)).astype(np.float32)
    a, b = raw.features(photo, ["conv5_1"])["conv5_1"], normed.features(photo, ["conv5_1"])["conv5_1"]
    ratio = b[a > 1e-3 * a.max()] / a[a > 1e-3 * a.max()]
    assert ratio.std() / ratio.mean() < 1e-3


def test_preprocess_is_caffe_bgr_minus_mean():
    rgb = np.array([[[10.0, 20.0, 30.0]]], np.float32)
    out = preprocess(rgb, np.array([1.0, 2.0, 3.0], np.float32))
    np.testing.assert_allclose(out, [[[29.0, 18.0, 7.0]]])


def test_deep_random_layers_keep_a_useful_scale(random_vgg_weights):
    """With He init plus normalisation the deepest layer still varies with the input;
    with Keras' default initialiser it would all but vanish and style would do nothing."""
    net = FeatureNetwork(random_vgg_weights)
    a = net.features(calibration_image(64, seed=1), ["conv5_1"])["conv5_1"]
    b = net.features(calibration_image(64, seed=2), ["conv5_1"])["conv5_1"]
    assert a.std() > 0.1 and np.abs(a - b).mean() > 0.05
