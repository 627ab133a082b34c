"""engine.weights: formats, orientation, checks, download, source choice, cache.

No real weights and no network: every file is generated here in the real on-disk
layout (the published Keras notop .h5, Keras 2/3 saves, matconvnet's .mat in its
old and current struct layouts), and downloads go to an aiohttp server on
127.0.0.1 that this module starts. Most tests use a table with channel counts
divided by 8 (same names, same layout, ~1 MB); the session fixtures write one
file per format with the true VGG-19 shapes (~80 MB each, once per run).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from aiohttp import web

from engine.jobs import VGG16_CONV_LAYERS, VGG19_CONV_LAYERS
from engine.weights import (
    KERAS_FILENAME,
    KERAS_FILES,
    KERAS_MEAN_BGR,
    KERAS_URL,
    MATCONVNET_FILENAME,
    MATCONVNET_FILENAMES,
    VGG16_KERAS_FILENAME,
    VGG16_SHAPES,
    VGG19_SHAPES,
    WeightsCache,
    WeightsError,
    download,
    load_weights,
    random_weights,
    read_keras_h5,
    read_matconvnet,
    read_weights_file,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Same layer names and layout as VGG-19, channel counts / 8 (conv1_1 still takes 3).
SMALL = {
    name: (3, 3, cin if cin == 3 else cin // 8, cout // 8)
    for name, (_, _, cin, cout) in VGG19_SHAPES.items()
}
SMALL16 = {name: shape for name, shape in SMALL.items() if name in VGG16_CONV_LAYERS}
MEAN_RGB = np.array([123.68, 116.779, 103.939])

# A marker that catches a wrong layer, a transposed kernel or swapped in/out axes:
# conv2_1 kernel[h=0, w=1, in=5, out=7] in our HWIO layout.
MARK_LAYER, MARK_INDEX, MARK_VALUE = "conv2_1", (0, 1, 5, 7), 42.0
# Marks the first layer's red input channel: index 0 in matconvnet's RGB order,
# index 2 in our BGR order.
RED_INDEX_RGB, RED_INDEX_BGR, RED_VALUE = (0, 1, 0, 3), (0, 1, 2, 3), 7.0

KERAS_POOLS = ("block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool")


def keras_name(paper: str) -> str:
    block, i = paper[4:].split("_")
    return f"block{block}_conv{i}"


def make_layers(shapes, *, seed=0, fill=None):
    """Distinct values per layer (random, or the layer's index when `fill`), plus the marker."""
    rng = np.random.default_rng(seed)
    layers = {}
    for index, (name, shape) in enumerate(shapes.items()):
        if fill:  # full-size files: constant per layer is fast and still tells layers apart
            kernel = np.full(shape, index + 1, np.float32)
        else:
            kernel = rng.standard_normal(shape, dtype=np.float32)
        bias = np.arange(shape[-1], dtype=np.float32) + 1000 * index
        layers[name] = (kernel, bias)
    layers[MARK_LAYER][0][MARK_INDEX] = MARK_VALUE
    return layers


# --- writers for the real on-disk layouts ------------------------------------------------


def write_keras_h5(path, layers, *, style="keras1", extra_layer_names=()):
    """Legacy Keras weights h5.

    keras1: the published notop file: root attr layer_names (bytes), each layer
      group's weight_names "block1_conv1_W_1:0", datasets directly in the group.
    keras2: Keras 2 / tf.keras saves: "block1_conv1/kernel:0", nested group.
    model: a whole model saved with model.save(): the same under model_weights/.
    """
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if style == "model" else f
        order = ["input_1"]
        names = list(layers)
        for i, name in enumerate(names):
            order.append(keras_name(name))
            if i + 1 == len(names) or names[i + 1][4] != name[4]:  # a block's last conv
                order.append(f"block{name[4]}_pool")
        order.extend(extra_layer_names)
        root.attrs["layer_names"] = np.array([n.encode() for n in order])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.2.4" if style != "keras1" else b"1.2.2"
        for layer in order:
            group = root.create_group(layer)
            paper = next((p for p in layers if keras_name(p) == layer), None)
            if paper is None:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            kernel, bias = layers[paper]
            if style == "keras1":
                names = [f"{layer}_W_1:0", f"{layer}_b_1:0"]
            else:
                names = [f"{layer}/kernel:0", f"{layer}/bias:0"]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            group.create_dataset(names[0], data=kernel)
            group.create_dataset(names[1], data=bias)


def write_keras3(path, layers):
    """Keras 3 .weights.h5: layers/<attr name>/vars/{0,1}, layer name in vars' "name" attr."""
    with h5py.File(path, "w") as f:
        group = f.create_group("layers")
        group.create_group("input_layer/vars").attrs["name"] = "input_layer"
        for i, (name, (kernel, bias)) in enumerate(layers.items()):
            vars_ = group.create_group(f"conv2d{'' if i == 0 else f'_{i}'}/vars")
            vars_.attrs["name"] = keras_name(name)
            vars_.create_dataset("0", data=kernel)
            vars_.create_dataset("1", data=bias)
        f.create_group("vars").attrs["name"] = "vgg19"


def cell(*items):
    out = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        out[0, i] = item
    return out


def write_matconvnet(path, layers_mat, *, mean_rgb=MEAN_RGB, layout="new", mean_image_size=4):
    """matconvnet SimpleNN .mat, kernels given in matconvnet's own layout and RGB order.

    layout "old" (beta16 and earlier, md5 8ee32639...): top-level `normalization`
    with a full averageImage; per-type structs, conv fields (weights, pad, type,
    name, stride), so `layers[0][i][0][0][0][0]` is (kernel, bias) as
    anishathalye/neural-style reads it.
    layout "new" (beta17+, the file at the vlfeat URL today, md5 106118b7...):
    every layer has the same fields, weights third; `meta.normalization`
    averageImage is 1x1x3 at field index 2.
    Includes the relu/pool layers and fc6..fc8/prob, which the loader must skip.
    """
    entries = []

    def conv(name, kernel, bias):
        if layout == "old":
            return {"weights": cell(kernel, bias.reshape(1, -1)), "pad": np.ones((1, 4)),
                    "type": "conv", "name": name, "stride": np.ones((1, 2))}  # fmt: skip
        return {"name": name, "type": "conv", "weights": cell(kernel, bias.reshape(-1, 1)),
                "size": np.array([kernel.shape], float), "pad": np.ones((1, 4)),
                "stride": np.ones((1, 2)), "precious": False, "dilate": 1.0, "opts": cell()}  # fmt: skip

    def other(name, kind):
        if layout == "old":
            if kind == "pool":
                return {"name": name, "stride": np.full((1, 2), 2.0), "pad": np.zeros((1, 4)),
                        "type": "pool", "method": "max", "pool": np.full((1, 2), 2.0)}  # fmt: skip
            return {"type": kind, "name": name}
        return {"name": name, "type": kind, "weights": cell(), "size": np.zeros((1, 0)),
                "pad": np.zeros((1, 4)), "stride": np.ones((1, 2)), "precious": False,
                "dilate": 1.0, "opts": cell()}  # fmt: skip

    for name, (kernel, bias) in layers_mat.items():
        entries.append(conv(name, kernel, bias))
        entries.append(other("relu" + name[4:], "relu"))
        if name in ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4"):
            entries.append(other(f"pool{name[4]}", "pool"))
    rng = np.random.default_rng(1)
    for name, shape in (("fc6", (7, 7, 8, 16)), ("fc7", (1, 1, 16, 16)), ("fc8", (1, 1, 16, 10))):
        entries.append(
            conv(
                name, rng.standard_normal(shape).astype(np.float32), np.zeros(shape[-1], np.float32)
            )
        )
        if name != "fc8":
            entries.append(other("relu" + name[2:], "relu"))
    entries.append(other("prob", "softmax"))

    if layout == "old":
        size = mean_image_size
        # Varies across the image (as the real one may); its per-channel mean is mean_rgb.
        ripple = np.sin(np.arange(size * size)).reshape(size, size, 1)
        average = (mean_rgb + ripple - ripple.mean()).astype(np.float32)
        data = {
            "layers": cell(*entries),
            "normalization": {"averageImage": average, "keepAspect": 1.0, "border": np.zeros((1, 2)),
                              "imageSize": np.array([[224.0, 224.0, 3.0]]), "interpolation": "bilinear"},
            "classes": {"name": cell("n01440764"), "description": cell("tench")},
        }  # fmt: skip
    else:
        normalization = {"imageSize": np.array([[224.0, 224.0, 3.0, 1.0]]), "border": np.zeros((1, 2)),
                         "averageImage": mean_rgb.reshape(1, 1, 3).astype(np.float32),
                         "interpolation": "bilinear", "keepAspect": True}  # fmt: skip
        data = {
            "layers": cell(*entries),
            "meta": {"inputs": {"name": "data", "size": np.array([[224.0, 224.0, 3.0, 10.0]])},
                     "classes": {"name": cell("n01440764"), "description": cell("tench")},
                     "normalization": normalization},
        }  # fmt: skip
    scipy.io.savemat(path, data, oned_as="row")


def to_matconvnet(layers):
    """Our HWIO/BGR layers in matconvnet's layout: (H, W, in, out) too, but conv1_1 takes RGB."""
    out = {}
    for name, (kernel, bias) in layers.items():
        kernel = kernel.copy()
        if name == "conv1_1":
            kernel = kernel[:, :, ::-1, :].copy()
            kernel[RED_INDEX_RGB] = RED_VALUE
        out[name] = (kernel, bias)
    return out


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def small_layers():
    return make_layers(SMALL)


@pytest.fixture
def small_h5(tmp_path, small_layers):
    path = tmp_path / "small.h5"
    write_keras_h5(path, small_layers)
    return path


@pytest.fixture
def small_mat(tmp_path, small_layers):
    path = tmp_path / "small.mat"
    write_matconvnet(path, to_matconvnet(small_layers))
    return path


@pytest.fixture(scope="session")
def full_h5(tmp_path_factory):
    """The published notop file's layout and true shapes (~80 MB, written once)."""
    path = tmp_path_factory.mktemp("full") / KERAS_FILENAME
    write_keras_h5(path, make_layers(VGG19_SHAPES, fill=True))
    return path


@pytest.fixture(scope="session")
def full_mat(tmp_path_factory):
    """The current matconvnet file's layout and true conv shapes (fc layers kept tiny)."""
    path = tmp_path_factory.mktemp("full") / MATCONVNET_FILENAME
    write_matconvnet(path, to_matconvnet(make_layers(VGG19_SHAPES, fill=True)))
    return path


@dataclass
class LocalServer:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)

    def serve(self, name: str, body: bytes) -> str:
        self.files[name] = body
        return f"{self.url}/files/{name}"


@pytest.fixture(scope="module")
def server():
    """aiohttp on 127.0.0.1 (random port) in its own thread: download() blocks, so the
    server must not share the test's thread."""
    files: dict[str, bytes] = {}

    async def serve(request):
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return web.Response(body=files[name], content_type="application/octet-stream")

    async def cut_short(request):
        # Promise 1 MB, send 100 KB, hang up: a dropped connection mid-download.
        response = web.StreamResponse()
        response.content_length = 1_000_000
        await response.prepare(request)
        await response.write(b"x" * 100_000)
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    app.router.add_get("/cut-short", cut_short)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield LocalServer(f"http://127.0.0.1:{port}", files)
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def assert_fix_in(message: str, url: str = KERAS_URL) -> None:
    assert f"download it yourself from {url}" in message
    assert "[weights] source" in message


# --- Keras h5 ---------------------------------------------------------------------------


def test_full_size_published_keras_layout(full_h5):
    start = time.perf_counter()
    weights = read_weights_file(full_h5)
    elapsed = time.perf_counter() - start
    assert tuple(weights.layers) == VGG19_CONV_LAYERS
    for index, (name, (kernel, bias)) in enumerate(weights.layers.items()):
        assert kernel.shape == VGG19_SHAPES[name] and kernel.dtype == np.float32
        assert bias.shape == (VGG19_SHAPES[name][-1],) and bias.dtype == np.float32
        if name != MARK_LAYER:
            assert np.all(kernel == index + 1)  # each layer's own values, none swapped
    assert weights.layers[MARK_LAYER][0][MARK_INDEX] == MARK_VALUE
    np.testing.assert_allclose(weights.mean_bgr, [103.939, 116.779, 123.68])
    assert weights.source == str(full_h5) and not weights.is_random
    assert elapsed < 5, f"loading 80 MB took {elapsed:.1f} s"


@pytest.mark.parametrize("style", ["keras1", "keras2", "model", "keras3"])
def test_keras_layouts_give_identical_weights(tmp_path, small_layers, style):
    path = tmp_path / "w.h5"
    if style == "keras3":
        write_keras3(path, small_layers)
    else:
        write_keras_h5(path, small_layers, style=style)
    weights = read_keras_h5(path, shapes=SMALL)
    assert tuple(weights.layers) == VGG19_CONV_LAYERS
    for name, (kernel, bias) in small_layers.items():
        np.testing.assert_array_equal(weights.layers[name][0], kernel)  # HWIO as stored
        np.testing.assert_array_equal(weights.layers[name][1], bias)
    assert weights.layers[MARK_LAYER][0][MARK_INDEX] == MARK_VALUE
    np.testing.assert_array_equal(weights.mean_bgr, KERAS_MEAN_BGR)


def test_loaded_arrays_are_read_only(small_h5):
    # The cached instance is shared by every job in the process.
    kernel, bias = read_keras_h5(small_h5, shapes=SMALL).layers["conv1_1"]
    with pytest.raises(ValueError):
        kernel[0, 0, 0, 0] = 1.0
    assert not bias.flags.writeable


def test_extra_keras_layers_are_ignored(tmp_path, small_layers):
    # A file with the classifier (fc1, fc2, predictions) still loads: only convs are used.
    path = tmp_path / "top.h5"
    write_keras_h5(path, small_layers, extra_layer_names=("flatten", "fc1", "predictions"))
    assert tuple(read_keras_h5(path, shapes=SMALL).layers) == VGG19_CONV_LAYERS


# --- matconvnet .mat --------------------------------------------------------------------


def test_generated_mat_matches_the_layout_real_code_reads(small_mat, tmp_path, small_layers):
    """Guard on the fixture itself: read it the way anishathalye/neural-style does."""
    data = scipy.io.loadmat(small_mat)  # current layout
    layers = data["layers"][0]
    assert layers[0][0][0]["name"][0] == "conv1_1"
    kernels, bias = layers[0][0][0][2][0]  # new format: weights is field 2
    assert kernels.shape == SMALL["conv1_1"] and bias.size == SMALL["conv1_1"][-1]
    np.testing.assert_allclose(
        data["meta"]["normalization"][0][0][0][0][2][0][0], MEAN_RGB, rtol=1e-6
    )

    old = tmp_path / "old.mat"
    write_matconvnet(old, to_matconvnet(small_layers), layout="old", mean_image_size=224)
    data = scipy.io.loadmat(old)
    kernels, bias = data["layers"][0][0][0][0][0][0]  # old format: weights is field 0
    assert kernels.shape == SMALL["conv1_1"] and bias.shape == (1, SMALL["conv1_1"][-1])
    assert data["normalization"][0][0][0].shape == (224, 224, 3)
    np.testing.assert_allclose(
        np.mean(data["normalization"][0][0][0], axis=(0, 1)), MEAN_RGB, rtol=1e-5
    )
    assert (
        len(layers) == len(data["layers"][0]) == 16 + 16 + 5 + 3 + 2 + 1
    )  # conv relu pool fc relu prob


@pytest.mark.parametrize("layout", ["new", "old"])
def test_matconvnet_orientation_channels_and_mean(tmp_path, small_layers, layout):
    path = tmp_path / "vgg.mat"
    stored = to_matconvnet(small_layers)
    write_matconvnet(path, stored, layout=layout)
    weights = read_matconvnet(path, shapes=SMALL)
    assert tuple(weights.layers) == VGG19_CONV_LAYERS  # fc6..fc8 skipped
    # Spatial axes kept: matconvnet's filters are (H, W, in, out) like Keras'.
    assert weights.layers[MARK_LAYER][0][MARK_INDEX] == MARK_VALUE
    for name in VGG19_CONV_LAYERS[1:]:
        np.testing.assert_array_equal(weights.layers[name][0], stored[name][0])
        np.testing.assert_array_equal(weights.layers[name][1], stored[name][1])
    # conv1_1 takes BGR now: its input-channel axis is reversed, the red marker moves to index 2.
    conv1_1 = weights.layers["conv1_1"][0]
    assert conv1_1[RED_INDEX_BGR] == RED_VALUE
    np.testing.assert_array_equal(conv1_1, stored["conv1_1"][0][:, :, ::-1, :])
    # Mean pixel: RGB in the file, BGR here.
    np.testing.assert_allclose(weights.mean_bgr, MEAN_RGB[::-1], rtol=1e-5)
    assert weights.mean_bgr.dtype == np.float32 and weights.mean_bgr.shape == (3,)


def test_full_size_matconvnet(full_mat):
    weights = read_weights_file(full_mat)
    assert tuple(weights.layers) == VGG19_CONV_LAYERS
    for name, (kernel, bias) in weights.layers.items():
        assert kernel.shape == VGG19_SHAPES[name] and bias.shape == (VGG19_SHAPES[name][-1],)
    assert weights.layers[MARK_LAYER][0][MARK_INDEX] == MARK_VALUE
    assert weights.layers["conv1_1"][0][RED_INDEX_BGR] == RED_VALUE
    np.testing.assert_allclose(weights.mean_bgr, [103.939, 116.779, 123.68], rtol=1e-6)


def test_format_is_read_from_content_not_extension(tmp_path, small_h5, small_mat, small_layers):
    h5_named_mat = tmp_path / "weights.mat"
    h5_named_mat.write_bytes(small_h5.read_bytes())
    mat_named_h5 = tmp_path / "weights.h5"
    mat_named_h5.write_bytes(small_mat.read_bytes())
    assert (
        load_weights(str(h5_named_mat), models_dir=tmp_path, shapes=SMALL).layers[MARK_LAYER][0][
            MARK_INDEX
        ]
        == 42
    )
    from_mat = load_weights(str(mat_named_h5), models_dir=tmp_path, shapes=SMALL)
    assert from_mat.layers["conv1_1"][0][RED_INDEX_BGR] == RED_VALUE


# --- bad files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"hello, these are not weights\n", "not an HDF5 (.h5) or MATLAB (.mat) file"),
        (b"<!DOCTYPE html><html><body>403 Forbidden</body></html>", "HTML error page"),
        (b"", "is empty"),
        (b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + b" " * 100, "v7.3"),
    ],
)
def test_unreadable_files(tmp_path, content, expected):
    path = tmp_path / "vgg19.h5"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=re.escape(expected)) as e:
        read_weights_file(path)
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found") as e:
        load_weights(str(tmp_path / "nope.h5"), models_dir=tmp_path)
    assert_fix_in(str(e.value))


@pytest.mark.parametrize("fixture", ["small_h5", "small_mat"])
def test_truncated_files(request, tmp_path, fixture):
    data = request.getfixturevalue(fixture).read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt") as e:
        read_weights_file(path, shapes=SMALL)
    assert_fix_in(str(e.value))


def test_vgg16_like_file_names_missing_layers(tmp_path, small_layers):
    vgg16 = {k: v for k, v in small_layers.items() if k not in ("conv3_4", "conv4_4", "conv5_4")}
    path = tmp_path / "vgg16.h5"
    write_keras_h5(path, vgg16)
    with pytest.raises(WeightsError, match=r"missing layers conv3_4, conv4_4, conv5_4\b") as e:
        read_keras_h5(path, shapes=SMALL)
    assert "VGG-16" in str(e.value)


def test_missing_deep_layers_are_an_error(tmp_path, small_layers):
    shallow = {k: v for k, v in small_layers.items() if not k.startswith("conv5")}
    path = tmp_path / "shallow.mat"
    write_matconvnet(path, to_matconvnet(shallow))
    with pytest.raises(WeightsError, match=r"missing layers conv5_1\.\.conv5_4"):
        read_matconvnet(path, shapes=SMALL)


def test_wrong_shape_is_named(tmp_path, small_layers):
    layers = dict(small_layers)
    layers["conv3_2"] = (np.zeros((3, 3, 16, 32), np.float32), np.zeros(32, np.float32))
    path = tmp_path / "odd.h5"
    write_keras_h5(path, layers)
    with pytest.raises(WeightsError) as e:
        read_keras_h5(path, shapes=SMALL)
    message = str(e.value)
    assert "layer conv3_2 has kernel shape (3,3,16,32); VGG-19 needs (3,3,32,32)" in message
    assert "VGG-16 or another network" in message and str(path) in message


def test_real_shape_table_rejects_a_wrong_layer(full_h5, tmp_path):
    # The message the host sees with real sizes (and a channels-first kernel gets a hint).
    path = tmp_path / "w.h5"
    path.write_bytes(full_h5.read_bytes())
    with h5py.File(path, "r+") as f:
        group = f["block3_conv2"]
        del group["block3_conv2_W_1:0"]
        group.create_dataset("block3_conv2_W_1:0", data=np.zeros((3, 3, 128, 256), np.float32))
        group = f["block1_conv1"]
        del group["block1_conv1_W_1:0"]
        group.create_dataset("block1_conv1_W_1:0", data=np.zeros((64, 3, 3, 3), np.float32))
    with pytest.raises(WeightsError) as e:
        read_weights_file(path)
    message = str(e.value)
    assert "layer conv3_2 has kernel shape (3,3,128,256); VGG-19 needs (3,3,256,256)" in message
    assert (
        "layer conv1_1 has kernel shape (64,3,3,3); VGG-19 needs (3,3,3,64) (channels-first"
        in message
    )


def test_nan_weights_are_rejected(tmp_path, small_layers):
    small_layers["conv4_1"][0][0, 0, 0, 0] = np.nan
    path = tmp_path / "nan.h5"
    write_keras_h5(path, small_layers)
    with pytest.raises(WeightsError, match="conv4_1 contains NaN"):
        read_keras_h5(path, shapes=SMALL)


def test_hdf5_that_is_not_keras(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 2)))
    with pytest.raises(WeightsError, match="not Keras weights"):
        read_weights_file(path)


def test_mat_that_is_not_matconvnet(tmp_path):
    path = tmp_path / "data.mat"
    scipy.io.savemat(path, {"X": np.zeros((2, 2))})
    with pytest.raises(WeightsError, match="not a matconvnet SimpleNN model.*found X"):
        read_weights_file(path)


# --- random weights ---------------------------------------------------------------------


def test_random_weights_deterministic_per_seed():
    a, b, c = (
        random_weights(3, shapes=SMALL),
        random_weights(3, shapes=SMALL),
        random_weights(4, shapes=SMALL),
    )
    for name in VGG19_CONV_LAYERS:
        np.testing.assert_array_equal(a.layers[name][0], b.layers[name][0])
        assert not np.array_equal(a.layers[name][0], c.layers[name][0])
        assert not a.layers[name][1].any()
    assert a.is_random and a.source == "random (seed 3)"
    np.testing.assert_array_equal(a.mean_bgr, KERAS_MEAN_BGR)


def test_random_weights_full_shapes_and_he_scale():
    weights = load_weights("random", models_dir=Path("/nonexistent"), random_seed=0)
    assert tuple(weights.layers) == VGG19_CONV_LAYERS
    for name, (kernel, bias) in weights.layers.items():
        assert kernel.shape == VGG19_SHAPES[name] and kernel.dtype == np.float32
        assert bias.shape == (kernel.shape[-1],)
    kernel = weights.layers["conv4_2"][0]  # 2.4M samples: the std is tight
    assert kernel.std() == pytest.approx(np.sqrt(2 / (9 * 512)), rel=0.01)


# --- download ---------------------------------------------------------------------------


def test_download_success_progress_and_atomic(server, tmp_path):
    body = os.urandom(2 * (1 << 20) + 12345)  # three 1 MiB chunks
    url = server.serve("ok.bin", body)
    dest = tmp_path / "models" / "w.h5"  # the folder does not exist yet
    calls = []
    assert (
        download(
            url, dest, md5=md5(body), on_progress=lambda done, total: calls.append((done, total))
        )
        == dest
    )
    assert dest.read_bytes() == body
    assert os.listdir(dest.parent) == ["w.h5"]  # no temp file left
    done = [d for d, _ in calls]
    assert done[0] == 0 and done[-1] == len(body) and done == sorted(done) and len(done) >= 4
    assert {t for _, t in calls} == {len(body)}


def test_download_wrong_hash(server, tmp_path):
    body = b"not the weights you are looking for"
    url = server.serve("bad.bin", body)
    expected = "0" * 32
    with pytest.raises(WeightsError) as e:
        download(url, tmp_path / "w.h5", md5=expected)
    message = str(e.value)
    assert url in message and expected in message and f"hash mismatch: got {md5(body)}" in message
    assert_fix_in(message, url)
    assert os.listdir(tmp_path) == []  # neither the file nor its temp


def test_download_404(server, tmp_path):
    url = f"{server.url}/files/missing.h5"
    with pytest.raises(WeightsError, match="HTTP 404") as e:
        download(url, tmp_path / "w.h5", md5="0" * 32)
    assert_fix_in(str(e.value), url)
    assert os.listdir(tmp_path) == []


def test_download_connection_dropped(server, tmp_path):
    with pytest.raises(WeightsError, match="connection closed after 100000 of 1000000 bytes"):
        download(f"{server.url}/cut-short", tmp_path / "w.h5", md5="0" * 32)
    assert os.listdir(tmp_path) == []


def test_download_server_down_fails_fast(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{KERAS_FILENAME}"
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="connection refused") as e:
        download(url, tmp_path / "w.h5", md5="0" * 32)
    assert time.perf_counter() - start < 2
    assert_fix_in(str(e.value), url)
    assert os.listdir(tmp_path) == []


def test_download_silent_server_times_out(tmp_path):
    # Accepts the connection (kernel backlog) but never answers.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        start = time.perf_counter()
        with pytest.raises(WeightsError, match="no answer within 0.3 s"):
            download(
                f"http://127.0.0.1:{s.getsockname()[1]}/w.h5",
                tmp_path / "w.h5",
                md5="0" * 32,
                timeout=0.3,
            )
        assert time.perf_counter() - start < 2
    assert os.listdir(tmp_path) == []


def test_cancel_from_progress_callback_cleans_up(server, tmp_path):
    body = os.urandom(3 * (1 << 20))
    url = server.serve("big.bin", body)

    class Stop(Exception):
        pass

    def on_progress(done, total):
        if done >= 1 << 20:
            raise Stop

    with pytest.raises(Stop):
        download(url, tmp_path / "w.h5", md5=md5(body), on_progress=on_progress)
    assert os.listdir(tmp_path) == []


# --- choosing the source ------------------------------------------------------------------


def test_auto_downloads_keras_file_then_reuses_it(server, tmp_path, small_h5):
    body = small_h5.read_bytes()
    url = server.serve("notop.h5", body)
    models = tmp_path / "models"
    kwargs = {"models_dir": models, "shapes": SMALL, "keras_url": url, "keras_md5": md5(body)}
    seen = []
    weights = load_weights("auto", on_progress=lambda d, t: seen.append(d), **kwargs)
    assert weights.source == str(models / KERAS_FILENAME) and seen[-1] == len(body)
    del server.files["notop.h5"]  # a second load must not touch the network
    again = load_weights("auto", allow_download=False, **kwargs)
    assert again.layers[MARK_LAYER][0][MARK_INDEX] == MARK_VALUE


def test_auto_prefers_keras_then_matconvnet(tmp_path, small_h5, small_mat):
    models = tmp_path / "models"
    models.mkdir()
    (models / MATCONVNET_FILENAME).write_bytes(small_mat.read_bytes())
    weights = load_weights("auto", models_dir=models, allow_download=False, shapes=SMALL)
    assert weights.source.endswith(MATCONVNET_FILENAME)
    (models / KERAS_FILENAME).write_bytes(small_h5.read_bytes())
    weights = load_weights("auto", models_dir=models, allow_download=False, shapes=SMALL)
    assert weights.source.endswith(KERAS_FILENAME)


def test_auto_with_real_shapes(tmp_path, full_h5):
    models = tmp_path / "models"
    models.mkdir()
    (models / KERAS_FILENAME).symlink_to(full_h5)
    weights = load_weights("auto", models_dir=models, allow_download=False)
    assert weights.layers["conv5_4"][0].shape == (3, 3, 512, 512)


def test_auto_nothing_present_no_download(tmp_path):
    with pytest.raises(WeightsError) as e:
        load_weights("auto", models_dir=tmp_path / "models", allow_download=False)
    message = str(e.value)
    assert "downloading is turned off" in message and KERAS_FILENAME in message
    assert f"save it as {tmp_path / 'models' / KERAS_FILENAME}" in message
    assert_fix_in(message)


# --- cache ------------------------------------------------------------------------------


def test_cache_loads_each_source_once(tmp_path, small_h5, monkeypatch):
    cache = WeightsCache()
    first = cache.get("random", models_dir=tmp_path, random_seed=1, shapes=SMALL)
    assert cache.get("random", models_dir=tmp_path, random_seed=1, shapes=SMALL) is first
    assert cache.get("random", models_dir=tmp_path, random_seed=2, shapes=SMALL) is not first
    from_file = cache.get(str(small_h5), models_dir=tmp_path, shapes=SMALL)
    monkeypatch.chdir(small_h5.parent)  # the same file by a relative name is the same entry
    assert cache.get(small_h5.name, models_dir=tmp_path, shapes=SMALL) is from_file
    small_h5.unlink()  # and really is not read again
    assert cache.get(str(small_h5), models_dir=tmp_path, shapes=SMALL) is from_file


def test_module_does_not_import_keras_or_tensorflow():
    code = (
        "import sys, engine.weights; "
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


# --- VGG-16 -------------------------------------------------------------------------------


@pytest.fixture
def small16_h5(tmp_path):
    path = tmp_path / "small16.h5"
    write_keras_h5(path, make_layers(SMALL16))
    return path


def test_vgg16_shapes_are_column_d_of_the_vgg_paper():
    assert tuple(VGG16_SHAPES) == VGG16_CONV_LAYERS and len(VGG16_SHAPES) == 13
    for name, shape in VGG16_SHAPES.items():
        assert shape == VGG19_SHAPES[name]  # conv4_1 and conv5_1 take 256 / 512 channels either way


def test_vgg16_keras_file_is_the_one_keras_downloads():
    # The md5 Keras itself checks for VGG16(include_top=False, weights="imagenet").
    import keras.src.applications.vgg16 as keras_vgg16

    source = Path(keras_vgg16.__file__).read_text()
    vgg16 = KERAS_FILES["vgg16"]
    assert vgg16.url == keras_vgg16.WEIGHTS_PATH_NO_TOP
    assert vgg16.url == ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                         "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert f'file_hash="{vgg16.md5}"' in source
    assert KERAS_FILES["vgg19"].filename == KERAS_FILENAME


@pytest.mark.parametrize("style", ["keras1", "keras3", "mat"])
def test_vgg16_files_are_recognised_by_their_layers(tmp_path, style):
    layers = make_layers(SMALL16)
    path = tmp_path / "w16"
    if style == "keras3":
        write_keras3(path, layers)
    elif style == "mat":
        write_matconvnet(path, to_matconvnet(layers))
    else:
        write_keras_h5(path, layers)
    weights = read_weights_file(path, shapes=SMALL16)
    assert weights.network == "vgg16" and tuple(weights.layers) == VGG16_CONV_LAYERS
    assert weights.layers[MARK_LAYER][0][MARK_INDEX] == MARK_VALUE
    assert load_weights(str(path), models_dir=tmp_path, network="vgg16", shapes=SMALL16).network == "vgg16"


def test_a_file_of_the_other_network_is_refused_with_the_fix(tmp_path, small16_h5, small_h5):
    with pytest.raises(WeightsError) as e:
        load_weights(str(small16_h5), models_dir=tmp_path, network="vgg19", shapes=SMALL)
    message = str(e.value)
    assert "holds VGG-16 weights" in message and "run VGG-19" in message
    assert '[engine] network = "vgg16"' in message and "--network vgg16" in message
    # Not run as VGG-16 by dropping conv3_4/4_4/5_4: the next layers were trained on them.
    with pytest.raises(WeightsError, match=r"holds VGG-19 weights.*--network vgg19"):
        load_weights(str(small_h5), models_dir=tmp_path, network="vgg16", shapes=SMALL16)


def test_a_broken_vgg16_file_names_vgg16_shapes(tmp_path):
    layers = make_layers(SMALL16)
    layers["conv3_2"] = (np.zeros((3, 3, 16, 32), np.float32), np.zeros(32, np.float32))
    path = tmp_path / "odd16.h5"
    write_keras_h5(path, layers)
    with pytest.raises(WeightsError, match=r"VGG-16 needs \(3,3,32,32\).*Is this a VGG-19"):
        read_weights_file(path, shapes=SMALL16)


def test_random_vgg16_weights():
    weights = load_weights("random", models_dir=Path("/nonexistent"), network="vgg16")
    assert weights.network == "vgg16" and weights.is_random
    assert {name: k.shape for name, (k, _) in weights.layers.items()} == dict(VGG16_SHAPES)
    assert random_weights(0).network == "vgg19"


def test_auto_downloads_the_vgg16_file(server, tmp_path, small16_h5, small_h5):
    body = small16_h5.read_bytes()
    url = server.serve("vgg16-notop.h5", body)
    models = tmp_path / "models"
    models.mkdir()
    (models / KERAS_FILENAME).write_bytes(small_h5.read_bytes())  # VGG-19's file is not VGG-16's
    seen = []
    weights = load_weights("auto", models_dir=models, network="vgg16", shapes=SMALL16,
                           keras_url=url, keras_md5=md5(body), on_progress=lambda d, t: seen.append((d, t)))
    assert weights.source == str(models / VGG16_KERAS_FILENAME) and weights.network == "vgg16"
    assert seen[0] == (0, len(body)) and seen[-1] == (len(body), len(body))
    assert sorted(os.listdir(models)) == sorted([KERAS_FILENAME, VGG16_KERAS_FILENAME])  # no temp left
    with pytest.raises(WeightsError, match="hash mismatch"):
        load_weights("auto", models_dir=tmp_path / "other", network="vgg16", shapes=SMALL16,
                     keras_url=url, keras_md5="0" * 32)


def test_auto_vgg16_finds_its_own_files_and_names_them(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(WeightsError) as e:
        load_weights("auto", models_dir=models, network="vgg16", allow_download=False)
    message = str(e.value)
    assert "no VGG-16 weights" in message and VGG16_KERAS_FILENAME in message
    assert MATCONVNET_FILENAMES["vgg16"] in message and KERAS_FILES["vgg16"].url in message
    write_matconvnet(models / MATCONVNET_FILENAMES["vgg16"], to_matconvnet(make_layers(SMALL16)))
    weights = load_weights("auto", models_dir=models, network="vgg16", allow_download=False, shapes=SMALL16)
    assert weights.network == "vgg16" and weights.source.endswith("imagenet-vgg-verydeep-16.mat")


def test_cache_keeps_networks_apart(tmp_path):
    cache = WeightsCache()
    vgg19 = cache.get("random", models_dir=tmp_path, random_seed=1)
    vgg16 = cache.get("random", models_dir=tmp_path, random_seed=1, network="vgg16")
    assert (vgg19.network, vgg16.network) == ("vgg19", "vgg16")
    assert cache.get("random", models_dir=tmp_path, random_seed=1, network="vgg16") is vgg16
