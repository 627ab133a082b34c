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
    for name, conv in zip(VGG19_CONV_LAYERS, convs, strict=False):  # the net stops at conv4_2
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


# --- VGG-16 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_weights():
    from engine.weights import random_weights

    return random_weights(0, network="vgg16")


def test_vgg16_is_keras_vgg16_with_paper_names(vgg16_weights):
    from engine.jobs import VGG16_CONV_LAYERS

    reference = keras.applications.VGG16(include_top=False, weights=None)
    keras_convs = [layer for layer in reference.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.name for c in keras_convs] == [keras_layer_name(n) for n in VGG16_CONV_LAYERS]
    net = FeatureNetwork(vgg16_weights, deepest="conv5_3")
    assert net.key.network == "vgg16" and net.layer_names == VGG16_CONV_LAYERS
    convs = [layer for layer in net.model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.name for c in convs] == [c.name for c in keras_convs]
    for name, conv, ref in zip(VGG16_CONV_LAYERS, convs, keras_convs, strict=True):
        kernel = conv.get_weights()[0]
        assert kernel.shape == tuple(ref.kernel.shape)
        np.testing.assert_array_equal(kernel, vgg16_weights.layers[name][0])
    with pytest.raises(ValueError, match="vgg16 has no layer conv5_4"):
        FeatureNetwork(vgg16_weights, deepest="conv5_4")


def test_vgg16_computes_what_vgg19_with_identity_layers_computes(vgg16_weights):
    """A VGG-19 whose conv3_4, conv4_4 and conv5_4 are identities (as shared/realnet
    writes VGG-16 into the VGG-19 layout) is VGG-16: ReLU features are non-negative,
    and a mirrored 3x3 identity passes them through. The native network must agree."""
    from engine.weights import VGGWeights

    layers = dict(vgg16_weights.layers)
    for name, channels in (("conv3_4", 256), ("conv4_4", 512), ("conv5_4", 512)):
        kernel = np.zeros((3, 3, channels, channels), np.float32)
        kernel[1, 1] = np.eye(channels, dtype=np.float32)
        layers[name] = (kernel, np.zeros(channels, np.float32))
    as_vgg19 = VGGWeights(layers, vgg16_weights.mean_bgr, "identity-padded", True)
    assert as_vgg19.network == "vgg19"
    image = np.random.default_rng(2).uniform(0, 255, (40, 56, 3)).astype(np.float32)
    names = ["conv1_1", "conv3_1", "conv4_2", "conv5_1"]
    native = FeatureNetwork(vgg16_weights).features(image, names)
    padded = FeatureNetwork(as_vgg19).features(image, names)
    for name in names:
        np.testing.assert_allclose(native[name], padded[name], rtol=1e-4,
                                   atol=1e-4 * np.abs(native[name]).max())
