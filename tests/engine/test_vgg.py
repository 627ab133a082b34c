"""The feature network: Keras' VGG-19 architecture, paper names, pooling, truncation
and mirrored borders."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from engine.jobs import VGG19_CONV_LAYERS
from engine.vgg import FeatureNetwork, keras_layer_name, preprocess


def test_paper_names_map_to_keras_names():
    assert keras_layer_name("conv1_1") == "block1_conv1"
    assert keras_layer_name("conv4_2") == "block4_conv2"
    reference = keras.applications.VGG19(include_top=False, weights=None)
    keras_convs = [layer.name for layer in reference.layers if isinstance(layer, keras.layers.Conv2D)]
    assert keras_convs == [keras_layer_name(n) for n in VGG19_CONV_LAYERS]


@pytest.mark.parametrize("pooling,cls", [("avg", keras.layers.AveragePooling2D), ("max", keras.layers.MaxPooling2D)])
def test_architecture_matches_keras_and_is_truncated(random_vgg_weights, pooling, cls):
    net = FeatureNetwork(random_vgg_weights, pooling=pooling, deepest="conv4_2")
    convs = [layer for layer in net.model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.name for c in convs] == [keras_layer_name(n) for n in VGG19_CONV_LAYERS[:10]]
    assert convs[-1].name == "block4_conv2"  # nothing past the deepest layer in use
    pools = [layer for layer in net.model.layers if "pool" in layer.name]
    assert len(pools) == 3 and all(isinstance(p, cls) for p in pools)
    for name, conv in zip(VGG19_CONV_LAYERS, convs):
        np.testing.assert_array_equal(conv.get_weights()[0], random_vgg_weights.layers[name][0])


def test_weights_are_used_as_the_file_has_them(random_vgg_weights):
    """No fitted rescaling: the losses standardise channels instead (engine/losses.py)."""
    net = FeatureNetwork(random_vgg_weights)
    for name in ("conv1_1", "conv3_1", "conv5_1"):
        kernel, bias = net.model.get_layer(keras_layer_name(name)).get_weights()
        np.testing.assert_array_equal(kernel, random_vgg_weights.layers[name][0])
        np.testing.assert_array_equal(bias, random_vgg_weights.layers[name][1])


def test_a_flat_image_gives_the_same_features_at_the_border_as_inside(random_vgg_weights):
    """Zero padding made border positions differ from the interior (and the optimised
    image's border came out tinted); mirrored padding keeps a flat image flat."""
    net = FeatureNetwork(random_vgg_weights)
    flat = np.full((48, 64, 3), [200.0, 120.0, 40.0], np.float32)
    feats = net.features(flat, ["conv1_1", "conv3_1", "conv5_1"])
    for name, f in feats.items():
        assert np.abs(f - f[f.shape[0] // 2, f.shape[1] // 2]).max() <= 1e-4 * max(1.0, np.abs(f).max()), name


def test_preprocess_is_caffe_bgr_minus_mean():
    rgb = np.array([[[10.0, 20.0, 30.0]]], np.float32)
    out = preprocess(rgb, np.array([1.0, 2.0, 3.0], np.float32))
    np.testing.assert_allclose(out, [[[29.0, 18.0, 7.0]]])


def test_deep_random_layers_still_respond_to_the_input(random_vgg_weights):
    """With He init the deepest layer of the random test network varies with the input
    (with Keras' default initialiser it would all but vanish)."""
    net = FeatureNetwork(random_vgg_weights)
    rng = np.random.default_rng(1)
    a = net.features(rng.uniform(0, 255, (64, 64, 3)).astype(np.float32), ["conv5_1"])["conv5_1"]
    b = net.features(rng.uniform(0, 255, (64, 64, 3)).astype(np.float32), ["conv5_1"])["conv5_1"]
    assert a.std() > 0.01 * np.abs(a).mean() and np.abs(a - b).mean() > 0.01 * np.abs(a).mean()
