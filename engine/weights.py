"""Find, download, verify and load pretrained VGG-19 or VGG-16 weights.

One loader, three sources:

a. the Keras ImageNet "notop" file of the network (downloaded automatically on first run),
b. matconvnet's ``imagenet-vgg-verydeep-19.mat`` (the file anishathalye/neural-style
   and the classic TensorFlow notebooks use; fetched by hand, it is ~550 MB) or
   ``imagenet-vgg-verydeep-16.mat``,
c. any path the host names in the config or on the command line (the format is
   read from the file's first bytes, not its extension).

Every source becomes a `VGGWeights`: per paper layer name, a float32 kernel in
Keras HWIO layout and a bias, plus the mean pixel, all in the Keras/Caffe
convention (BGR input, 0..255, mean subtracted). engine/vgg.py builds the Keras
network from it, so this module stays free of TensorFlow and Keras: the bot and
the tests can use it without loading either.

Which network a file holds is read from its layer names (`layout_of`: VGG-19
has conv3_4, conv4_4 and conv5_4, VGG-16 does not). Weights are checked before
anything expensive runs (DESIGN.md rule 10): every conv layer of the network
(16 or 13) must be present with its exact shape, so a file of the other
network, a truncated download or an HTML error page saved as ``.h5`` fails here
with a message that says what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import tempfile
import threading
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from engine.errors import WeightsError
from engine.jobs import NETWORK_LABELS, VGG16_CONV_LAYERS, VGG19_CONV_LAYERS

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, "int | None"], None]
Shapes = Mapping[str, tuple[int, int, int, int]]

# The file keras.applications.VGG19(include_top=False) downloads; the md5 is the
# file_hash Keras itself checks. Converted from the original Caffe model, so its
# input convention is Caffe's: BGR, 0..255, mean pixel subtracted.
KERAS_FILENAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/vgg19/{KERAS_FILENAME}"
KERAS_MD5 = "253f8cb515780f3b799900260a226db6"
# The same for keras.applications.VGG16 (file_hash in keras/src/applications/vgg16.py).
VGG16_KERAS_FILENAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_KERAS_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/vgg16/{VGG16_KERAS_FILENAME}"
VGG16_KERAS_MD5 = "6d6bbae143d832006294945121d1f1fc"


@dataclass(frozen=True)
class KerasFile:
    filename: str
    url: str
    md5: str


KERAS_FILES: Mapping[str, KerasFile] = {
    "vgg19": KerasFile(KERAS_FILENAME, KERAS_URL, KERAS_MD5),
    "vgg16": KerasFile(VGG16_KERAS_FILENAME, VGG16_KERAS_URL, VGG16_KERAS_MD5),
}

# Never downloaded automatically (550 MB, most of it the fully connected layers
# we do not use); only found in models_dir or named as a path. The md5 is the one
# vlfeat publishes for the current (beta17+) file; older copies (md5
# 8ee3263992981a1d26e73b3ca028a123) use an older struct layout, also read below.
MATCONVNET_FILENAME = "imagenet-vgg-verydeep-19.mat"
MATCONVNET_URL = f"https://www.vlfeat.org/matconvnet/models/{MATCONVNET_FILENAME}"
MATCONVNET_MD5 = "106118b7cf60435e6d8e04f6a6dc3657"
MATCONVNET_FILENAMES: Mapping[str, str] = {"vgg19": MATCONVNET_FILENAME,
                                           "vgg16": "imagenet-vgg-verydeep-16.mat"}

# Caffe/Keras mean pixel in BGR order (Simonyan & Zisserman's ImageNet mean).
KERAS_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)

CHUNK_BYTES = 1 << 20

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MATLAB5_HEADER = b"MATLAB 5.0 MAT-file"
MATLAB73_HEADER = b"MATLAB 7.3 MAT-file"


def _vgg_shapes(deep_convs: int) -> Shapes:
    # (convs per block, output channels), Simonyan & Zisserman Table 1: column E
    # (VGG-19) has 4 convolutions in blocks 3-5, column D (VGG-16) 3.
    shapes: dict[str, tuple[int, int, int, int]] = {}
    channels_in = 3
    blocks = ((2, 64), (2, 128), (deep_convs, 256), (deep_convs, 512), (deep_convs, 512))
    for block, (convs, channels_out) in enumerate(blocks, 1):
        for i in range(1, convs + 1):
            shapes[f"conv{block}_{i}"] = (3, 3, channels_in, channels_out)
            channels_in = channels_out
    return types.MappingProxyType(shapes)


# Kernel shape per paper layer name, Keras HWIO; the bias shape is (out,).
VGG19_SHAPES = _vgg_shapes(4)
VGG16_SHAPES = _vgg_shapes(3)
NETWORK_SHAPES: Mapping[str, Shapes] = {"vgg19": VGG19_SHAPES, "vgg16": VGG16_SHAPES}
assert tuple(VGG19_SHAPES) == VGG19_CONV_LAYERS and tuple(VGG16_SHAPES) == VGG16_CONV_LAYERS
# The layers only VGG-19 has: a file with any of them is a VGG-19 file.
VGG19_ONLY = tuple(n for n in VGG19_CONV_LAYERS if n not in VGG16_CONV_LAYERS)


def layout_of(names: Any) -> str:
    """"vgg19" or "vgg16": which network a set of paper layer names belongs to."""
    return "vgg19" if any(n in names for n in VGG19_ONLY) else "vgg16"


# eq=False: the fields hold arrays, and comparing two loaded networks element by
# element is never what `==` should silently do.
@dataclass(frozen=True, eq=False)
class VGGWeights:
    # Paper name ("conv1_1".."conv5_4") -> (kernel float32 (3,3,in,out) HWIO, bias float32 (out,)).
    # The arrays are read-only: one instance is cached and shared for the process's life.
    layers: Mapping[str, tuple[np.ndarray, np.ndarray]]
    # (3,) float32, BGR: the network input is Caffe-style BGR 0..255 minus this mean.
    mean_bgr: np.ndarray
    source: str  # the file path, or "random (seed N)"
    is_random: bool

    @property
    def network(self) -> str:
        """"vgg19" or "vgg16", from the layers present (validated to be all of one)."""
        return layout_of(self.layers)


def manual_fix(dest: Path | str | None = None, url: str = KERAS_URL) -> str:
    where = f"save it as {dest}" if dest else f"save it as models/{KERAS_FILENAME}"
    return (
        f"To fix: download it yourself from {url} and {where}, "
        "or set [weights] source in your config to a .h5/.mat path "
        '(or source = "random" to try the bot without pretrained weights)'
    )


# --- download --------------------------------------------------------------------------


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe_url_error(error: BaseException, timeout: float) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        error = error.reason if isinstance(error.reason, BaseException) else error
    if isinstance(error, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s (server down, or a very slow network)"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name ({error}): this machine looks offline"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (server down, or a proxy or firewall in the way)"
    if isinstance(error, ConnectionError):
        return f"connection lost ({error})"
    return f"{type(error).__name__}: {error}"


def download(
    url: str,
    dest: Path,
    *,
    md5: str,
    on_progress: ProgressFn | None = None,
    timeout: float = 60,
) -> Path:
    """Fetch `url` to `dest`, atomically, only if its md5 matches.

    Streams 1 MiB chunks into a temporary file beside `dest` (same file system,
    so the final `os.replace` is atomic: a crash or a Ctrl-C never leaves a half
    file under the real name for the next start to trip over). `on_progress`
    gets (bytes_done, total or None). `timeout` bounds the connect and each
    read, so a dead server fails fast instead of hanging the engine.
    Any failure removes the temporary file and raises WeightsError; an exception
    from `on_progress` (a cancel) removes it too and propagates unchanged.
    """
    dest = Path(dest)

    def fail(what: str) -> WeightsError:
        return WeightsError(
            f"could not download VGG weights from {url} (expected md5 {md5}): {what}. "
            + manual_fix(dest, url)
        )

    tmp = _temp_beside(dest, fail)
    log.info("downloading %s to %s", url, dest)
    tmp_path = Path(tmp.name)
    try:
        with tmp:
            with _open_url(url, timeout, fail) as response:
                done, total, got = _stream(response, tmp, on_progress, timeout, fail)
            _check_download(done, total, got, md5, fail)
            _sync(tmp, fail)
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    log.info("downloaded %s (%d bytes, md5 ok)", dest, done)
    return dest


Fail = Callable[[str], WeightsError]


def _temp_beside(dest: Path, fail: Fail) -> Any:
    """An open temporary file in dest's folder (created if need be), for the atomic rename."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Closed by download's `with tmp:`; opened here so failing to create it reads as a write error.
        return tempfile.NamedTemporaryFile(  # noqa: SIM115
            dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False
        )
    except OSError as e:
        raise fail(f"cannot write to {dest.parent} ({e})") from e


def _open_url(url: str, timeout: float, fail: Fail) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "stylebot"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except (OSError, http.client.HTTPException) as e:  # URLError/HTTPError are OSErrors
        raise fail(_describe_url_error(e, timeout)) from e


def _stream(response: Any, out: Any, on_progress: ProgressFn | None, timeout: float,
            fail: Fail) -> tuple[int, int | None, str]:
    """Copy the body to `out` in CHUNK_BYTES pieces, reporting progress: (bytes, total, md5)."""
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    digest = hashlib.md5()
    done = 0
    if on_progress:
        on_progress(0, total)
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as e:
            # A timeout, a reset, or http.client.IncompleteRead.
            raise fail(f"interrupted after {done} bytes: {_describe_url_error(e, timeout)}") from e
        if not chunk:
            return done, total, digest.hexdigest()
        try:
            out.write(chunk)
        except OSError as e:  # disk full, most likely
            raise fail(f"cannot write to {Path(out.name).parent} ({e})") from e
        digest.update(chunk)
        done += len(chunk)
        if on_progress:
            on_progress(done, total)


def _check_download(done: int, total: int | None, got: str, md5: str, fail: Fail) -> None:
    if total is not None and done != total:
        raise fail(f"connection closed after {done} of {total} bytes")
    if got != md5.lower():
        raise fail(f"hash mismatch: got {got} ({done} bytes)")


def _sync(out: Any, fail: Fail) -> None:
    """On disk before the rename, so a power cut cannot leave a renamed empty file."""
    try:
        out.flush()
        os.fsync(out.fileno())
    except OSError as e:
        raise fail(f"cannot write to {Path(out.name).parent} ({e})") from e


# --- reading files ---------------------------------------------------------------------


def sniff_format(path: Path) -> str:
    """Return "hdf5" or "matlab", judged by the file's first bytes; WeightsError otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(128)
    except FileNotFoundError:
        raise WeightsError(
            f"weights file not found: {Path(path).resolve()}. " + manual_fix()
        ) from None
    except OSError as e:
        raise WeightsError(f"cannot read weights file {path}: {e}") from e
    if not head:
        raise WeightsError(
            f"weights file {path} is empty (an interrupted download?). " + manual_fix()
        )
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    if head.startswith(MATLAB73_HEADER):
        raise WeightsError(
            f"{path} is a MATLAB v7.3 file, which scipy cannot read; "
            "re-save it in MATLAB with save(..., '-v7') or use the Keras .h5 file"
        )
    if head.startswith(MATLAB5_HEADER):
        return "matlab"
    raise WeightsError(
        f"{path} is not an HDF5 (.h5) or MATLAB (.mat) file: it starts with {head[:24]!r} "
        "(an HTML error page saved in its place?). " + manual_fix()
    )


def read_weights_file(path: Path | str, *, network: str | None = None,
                      shapes: Shapes | None = None) -> VGGWeights:
    """Read a Keras .h5 or matconvnet .mat file, whatever its name says.

    `network` ("vgg19" or "vgg16") is the network the caller will run; None takes
    whichever the file holds. `shapes` overrides the network's shape table (tests)."""
    path = Path(path)
    if sniff_format(path) == "hdf5":
        return read_keras_h5(path, network=network, shapes=shapes)
    return read_matconvnet(path, network=network, shapes=shapes)


def _paper_name(name: str) -> str | None:
    # Keras names the layers block{b}_conv{i}; the paper (and matconvnet) conv{b}_{i}.
    match = re.fullmatch(r"block(\d)_conv(\d)", name) or re.fullmatch(r"conv(\d)_(\d)", name)
    return f"conv{match[1]}_{match[2]}" if match else None


def _h5_names(obj: Any, attr: str) -> list[str]:
    # Keras splits attributes over 64 KB into attr0, attr1, ... (HDF5 header limit).
    if attr in obj.attrs:
        chunks = [obj.attrs[attr]]
    else:
        chunks, i = [], 0
        while f"{attr}{i}" in obj.attrs:
            chunks.append(obj.attrs[f"{attr}{i}"])
            i += 1
    return [
        n.decode("utf8") if isinstance(n, bytes) else str(n) for c in chunks for n in np.ravel(c)
    ]


def _kernel_and_bias(arrays: list[np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
    # Pick by rank rather than name: the published file calls them
    # "block1_conv1_W_1:0"/"_b_1:0" (Keras 1), later saves "kernel:0"/"bias:0".
    kernel = next((a for a in arrays if a.ndim == 4), None)
    bias = next((a for a in arrays if a.ndim == 1), None)
    return kernel, bias


def _keras_layers(f: h5py.File) -> dict[str, list[np.ndarray]]:
    root: Any = f
    if not _h5_names(f, "layer_names") and "model_weights" in f:
        root = f["model_weights"]  # a whole model saved with model.save(): weights live here
    found: dict[str, list[np.ndarray]] = {}
    layer_names = _h5_names(root, "layer_names")
    if layer_names:
        # Legacy Keras h5 (the published file): one group per layer, its attribute
        # weight_names gives the dataset paths inside it, in set_weights order.
        for name in layer_names:
            paper = _paper_name(name)
            if paper is not None:
                group = root[name]
                found[paper] = [np.asarray(group[w]) for w in _h5_names(group, "weight_names")]
        return found
    if isinstance(root.get("layers"), h5py.Group):
        # Keras 3 ".weights.h5": layers/<attribute name>/vars/0 (kernel), /1 (bias);
        # the layer's own name is the vars group's "name" attribute.
        for key, group in root["layers"].items():
            vars_ = group.get("vars") if isinstance(group, h5py.Group) else None
            if not isinstance(vars_, h5py.Group):
                continue
            name = vars_.attrs.get("name", key)
            paper = _paper_name(name.decode() if isinstance(name, bytes) else str(name))
            if paper is not None:
                found[paper] = [np.asarray(vars_[k]) for k in sorted(vars_, key=int)]
        return found
    raise WeightsError(
        "it is an HDF5 file but not Keras weights (no layer_names attribute, no layers/ group)"
    )


def read_keras_h5(path: Path | str, *, network: str | None = None,
                  shapes: Shapes | None = None) -> VGGWeights:
    """Read Keras VGG weights (legacy h5 as published, or Keras 3 .weights.h5).

    Keras kernels are already HWIO and the network already expects Caffe's BGR
    input with the mean pixel subtracted, so nothing is converted; the file does
    not record the mean, which is the Caffe/Keras constant.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            raw = _keras_layers(f)
    except WeightsError as e:
        raise WeightsError(f"cannot use {path}: {e}. " + manual_fix()) from None
    except (OSError, KeyError, ValueError, TypeError) as e:
        # h5py reports a short file as OSError ("truncated file: eof = ..."),
        # a damaged one as OSError/KeyError from whichever object is broken.
        raise WeightsError(f"{path} is truncated or corrupt ({e}). " + manual_fix()) from e
    layers: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {
        name: _kernel_and_bias(arrays) for name, arrays in raw.items()
    }
    return VGGWeights(
        layers=checked_layers(layers, network=network, shapes=shapes, source=str(path)),
        mean_bgr=_frozen(KERAS_MEAN_BGR.copy()),
        source=str(path),
        is_random=False,
    )


def _mat_record(value: Any) -> Any:
    """The single struct inside loadmat's nested (1,1) object/struct arrays."""
    while isinstance(value, np.ndarray) and value.dtype.names is None and value.dtype == object:
        if value.size != 1:
            raise ValueError(f"expected one struct, found an array of shape {value.shape}")
        value = value.ravel()[0]
    if isinstance(value, np.ndarray) and value.dtype.names is not None:
        if value.size != 1:
            raise ValueError(f"expected one struct, found a struct array of shape {value.shape}")
        value = value.ravel()[0]
    if not isinstance(value, np.void) or value.dtype.names is None:
        raise ValueError(f"expected a struct, found {type(value).__name__}")
    return value


def _mat_str(value: Any) -> str:
    array = np.asarray(value).ravel()
    return str(array[0]) if array.size else ""


def _mat_field(record: Any, name: str) -> Any:
    return record[name] if name in (record.dtype.names or ()) else None


def _matconvnet_mean_rgb(data: Mapping[str, Any]) -> np.ndarray | None:
    # Old files (beta16 and before): top-level `normalization` with a 224x224x3
    # averageImage (a constant image of the mean pixel). Current files (beta17+,
    # after vl_simplenn_tidy): meta.normalization.averageImage, a 1x1x3 pixel.
    # Either way the last axis is the channel axis, in RGB order.
    if "normalization" in data:
        normalization = data["normalization"]
    elif "meta" in data:
        normalization = _mat_field(_mat_record(data["meta"]), "normalization")
    else:
        return None
    if normalization is None:
        return None
    average = _mat_field(_mat_record(normalization), "averageImage")
    average = None if average is None else np.asarray(average, dtype=np.float64)
    if average is None or average.size == 0 or average.size % 3:
        return None
    return average.reshape(-1, 3).mean(axis=0)


def _matconvnet_kernel_to_hwio(kernel: np.ndarray) -> np.ndarray:
    # No spatial transpose, deliberately. vl_nnconv's help text calls the filter
    # "FW x FH x FC x K", and anishathalye/neural-style (and code copied from it)
    # therefore transposes axes 0 and 1. But the filter's first axis is matched
    # against the image's first axis, which in MATLAB is the row (height) axis,
    # and matconvnet's own Caffe importer (utils/import-caffe.py, default
    # --transpose, used for imagenet-vgg-verydeep-19) turns Caffe's
    # (out, in, H, W) blobs into (H, W, in, out): the same layout as Keras HWIO.
    # Transposing would give every 3x3 filter mirrored about its diagonal, i.e.
    # the network of a transposed image (see anishathalye/neural-style#180).
    return kernel


def read_matconvnet(path: Path | str, *, network: str | None = None,
                    shapes: Shapes | None = None) -> VGGWeights:
    """Read matconvnet's SimpleNN imagenet-vgg-verydeep-19.mat or -16.mat (old or current layout).

    `layers` is a 1xN cell of 1x1 structs with `name`, `type` and `weights` (a
    1x2 cell: kernel, bias). Only conv layers with VGG conv names are used;
    relu/pool/fc6..fc8/prob are ignored. Two conventions differ from ours:
    matconvnet's network takes RGB input with an RGB mean pixel, so conv1_1's
    input-channel axis and the mean are both reversed to BGR; reversing the
    first layer's input channels is exactly equivalent to feeding it the
    channel-reversed image, so the network computes the same features from a
    BGR input as the original did from RGB. Deeper layers see only feature
    maps and are unaffected.
    """
    path = Path(path)
    try:
        # loadmat raises a zoo of types on damaged input (ValueError, TypeError,
        # OSError, zlib.error, ...); all of them mean the same thing here.
        data = scipy.io.loadmat(path)
    except Exception as e:
        raise WeightsError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}). " + manual_fix()
        ) from e
    if "layers" not in data:
        raise WeightsError(
            f"{path} is a MATLAB file but not a matconvnet SimpleNN model (no 'layers' variable; "
            f"found {', '.join(k for k in data if not k.startswith('__')) or 'nothing'}). "
            + manual_fix()
        )
    try:
        layers = _matconvnet_convs(data["layers"], shapes or VGG19_SHAPES)
        mean_rgb = _matconvnet_mean_rgb(data)
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise WeightsError(
            f"{path} does not have matconvnet's layout ({e}). " + manual_fix()
        ) from e
    if mean_rgb is None:
        log.warning("%s has no normalization.averageImage; using the Caffe mean pixel", path)
        mean_bgr = KERAS_MEAN_BGR.copy()
    else:
        mean_bgr = mean_rgb[::-1].astype(np.float32)
    return VGGWeights(
        layers=checked_layers(layers, network=network, shapes=shapes, source=str(path)),
        mean_bgr=_frozen(mean_bgr),
        source=str(path),
        is_random=False,
    )


def _matconvnet_convs(entries: Any, names: Any) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """(kernel, bias) of each conv layer in `names`, in our layout (read_matconvnet says why)."""
    layers: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
    for entry in np.ravel(entries):
        record = _mat_record(entry)
        name = _mat_str(_mat_field(record, "name"))
        if name not in names or _mat_str(_mat_field(record, "type")) != "conv":
            continue
        weights = _mat_field(record, "weights")
        if weights is not None:
            cells = [np.asarray(c) for c in np.ravel(weights)]
        else:  # matconvnet before beta13 kept them as separate fields
            cells = [
                np.asarray(_mat_field(record, "filters")),
                np.asarray(_mat_field(record, "biases")),
            ]
        kernel = _matconvnet_kernel_to_hwio(cells[0]) if cells and cells[0].ndim == 4 else None
        # The bias is stored (1, out) or (out, 1) depending on the matconvnet version.
        bias = cells[1].reshape(-1) if len(cells) > 1 and cells[1].size else None
        if kernel is not None and name == "conv1_1":
            kernel = kernel[:, :, ::-1, :]  # RGB -> BGR input channels, see read_matconvnet
        layers[name] = (kernel, bias)
    return layers


# --- checking ----------------------------------------------------------------------------


def _name_runs(names: list[str], order: tuple[str, ...]) -> str:
    """'conv3_4, conv5_1..conv5_4': consecutive layers (in network order) collapsed."""
    index = {n: i for i, n in enumerate(order)}
    ordered = sorted(names, key=lambda n: index.get(n, len(order)))
    runs: list[list[str]] = []
    for name in ordered:
        if (
            runs
            and name in index
            and runs[-1][-1] in index
            and index[name] == index[runs[-1][-1]] + 1
        ):
            runs[-1].append(name)
        else:
            runs.append([name])
    return ", ".join(r[0] if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float32)
    array.setflags(write=False)
    return array


def checked_layers(
    layers: Mapping[str, tuple[np.ndarray | None, np.ndarray | None]],
    *,
    network: str | None,
    shapes: Shapes | None,
    source: str,
) -> Mapping[str, tuple[np.ndarray, np.ndarray]]:
    """The layers of the network the file holds, validated; a clear error when that
    is not `network`.

    A VGG-19 file is not run as VGG-16 by dropping conv3_4, conv4_4 and conv5_4:
    the next layer of each block was trained on their output, not on conv3_3's,
    so the network would compute features no one trained (the same the other way
    round, where three layers would be missing)."""
    found = layout_of(layers)
    if network is not None and found != network:
        raise WeightsError(network_mismatch(source, found, network))
    return validate_layers(layers, shapes=shapes or NETWORK_SHAPES[found], source=source)


def network_mismatch(source: str, found: str, wanted: str) -> str:
    has = "has" if found == "vgg19" else "lacks"
    return (
        f"{source} holds {NETWORK_LABELS[found]} weights (it {has} {', '.join(VGG19_ONLY)}), "
        f"but the engine is set to run {NETWORK_LABELS[wanted]}. To fix: set [engine] network = "
        f'"{found}" (--network {found}) to use this file, or point [weights] source at '
        f"{NETWORK_LABELS[wanted]} weights"
    )


def validate_layers(
    layers: Mapping[str, tuple[np.ndarray | None, np.ndarray | None]],
    *,
    shapes: Shapes = VGG19_SHAPES,
    source: str = "the weights file",
) -> Mapping[str, tuple[np.ndarray, np.ndarray]]:
    """Check every layer of `shapes` is present with its exact shape; return them
    as read-only contiguous float32 arrays in network order. All problems are
    reported together so one error message is enough to diagnose a bad file."""
    label = NETWORK_LABELS[layout_of(shapes)]
    problems: list[str] = []
    missing = [name for name in shapes if name not in layers]
    if missing:
        problems.append(f"missing layers {_name_runs(missing, tuple(shapes))}")
    wrong_network = bool(missing)
    result: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, expected in shapes.items():
        if name not in layers:
            continue
        kernel, bias = layers[name]
        problem, other_network = _layer_problem(name, kernel, bias, expected, label)
        wrong_network = wrong_network or other_network
        if problem:
            problems.append(problem)
        else:
            result[name] = (_frozen(kernel), _frozen(bias))
    if problems:
        other = NETWORK_LABELS["vgg16" if label == "VGG-19" else "vgg19"]
        question = f" Is this a {other} or another network?" if wrong_network else ""
        raise WeightsError(
            f"{source} does not hold usable {label} weights: {'; '.join(problems)}.{question} "
            + manual_fix()
        )
    return types.MappingProxyType(result)


def _layer_problem(name: str, kernel: np.ndarray | None, bias: np.ndarray | None,
                   expected: tuple[int, ...], label: str) -> tuple[str, bool]:
    """What is wrong with one layer ("" if nothing), and whether the wrong shape
    suggests another network (rather than a channels-first layout)."""
    if kernel is None or bias is None:
        return f"layer {name} has no {'kernel' if kernel is None else 'bias'}", False
    if tuple(kernel.shape) != tuple(expected):
        transposed = sorted(kernel.shape) == sorted(expected) and kernel.shape[-1] != expected[-1]
        hint = " (channels-first Theano/PyTorch layout? use the tf_kernels file)" if transposed else ""
        return (f"layer {name} has kernel shape {_fmt_shape(kernel.shape)}; "
                f"{label} needs {_fmt_shape(expected)}{hint}"), not transposed
    if tuple(bias.shape) != (expected[-1],):
        return (f"layer {name} has bias shape {_fmt_shape(bias.shape)}; "
                f"{label} needs ({expected[-1]},)"), False
    if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
        return f"layer {name} contains NaN or infinite values (corrupt file?)", False
    return "", False


# --- random weights ------------------------------------------------------------------


def random_weights(seed: int, *, network: str = "vgg19", shapes: Shapes | None = None) -> VGGWeights:
    """He-normal kernels (std sqrt(2 / fan_in), fan_in = 3*3*in) and zero biases.

    For tests, benchmarks and trying the bot without the download: the pictures
    are not art. The activations' scale does not matter: the losses standardise
    every channel (engine/losses.py).
    """
    rng = np.random.default_rng(seed)
    layers = {}
    for name, shape in (shapes or NETWORK_SHAPES[network]).items():
        std = np.float32(np.sqrt(2.0 / (shape[0] * shape[1] * shape[2])))
        kernel = rng.standard_normal(shape, dtype=np.float32) * std
        layers[name] = (_frozen(kernel), _frozen(np.zeros(shape[-1], np.float32)))
    return VGGWeights(
        layers=types.MappingProxyType(layers),
        mean_bgr=_frozen(KERAS_MEAN_BGR.copy()),
        source=f"random (seed {seed})",
        is_random=True,
    )


# --- choosing a source ------------------------------------------------------------------


def find_auto(
    models_dir: Path,
    *,
    network: str = "vgg19",
    allow_download: bool = True,
    on_progress: ProgressFn | None = None,
    keras_url: str | None = None,
    keras_md5: str | None = None,
) -> Path:
    """The network's Keras file in models_dir, else its matconvnet file, else download
    the Keras one (from `keras_url` with `keras_md5`: the real file's by default)."""
    models_dir = Path(models_dir)
    keras = KERAS_FILES[network]
    keras_path = models_dir / keras.filename
    mat_path = models_dir / MATCONVNET_FILENAMES[network]
    if keras_path.is_file():
        return keras_path
    if mat_path.is_file():
        return mat_path
    url = keras_url or keras.url
    if not allow_download:
        raise WeightsError(
            f"no {NETWORK_LABELS[network]} weights in {models_dir} (looked for {keras.filename} "
            f"and {mat_path.name}) and downloading is turned off. " + manual_fix(keras_path, url)
        )
    return download(url, keras_path, md5=keras_md5 or keras.md5, on_progress=on_progress)


def load_weights(
    source: str,
    *,
    models_dir: Path,
    network: str = "vgg19",
    random_seed: int = 0,
    allow_download: bool = True,
    on_progress: ProgressFn | None = None,
    shapes: Shapes | None = None,
    keras_url: str | None = None,
    keras_md5: str | None = None,
) -> VGGWeights:
    """Weights of `network` for `source`: "random", "auto" (models_dir, downloading
    if allowed) or a path, which must hold that network's weights.

    A relative path is taken relative to the current directory. `shapes`,
    `keras_url` and `keras_md5` exist so tests can use small files and a local
    server; the defaults are the real network and the real file.
    """
    source = source.strip()
    if source == "random":
        return random_weights(random_seed, network=network, shapes=shapes)
    if source == "auto":
        path = find_auto(Path(models_dir), network=network, allow_download=allow_download,
                         on_progress=on_progress, keras_url=keras_url, keras_md5=keras_md5)
    else:
        path = Path(source).expanduser()
    weights = read_weights_file(path, network=network, shapes=shapes)
    log.info("loaded %s weights from %s", NETWORK_LABELS[network], weights.source)
    return weights


class WeightsCache:
    """Loads each weights source once per process.

    An object the engine worker creates and passes in, rather than a module
    global or functools.lru_cache: the cache's lifetime is then the worker's,
    tests get a fresh one each, and on_progress (a per-call callback, not part
    of the identity of the weights) stays out of the key. The key is the
    network and the resolved source: ("random", seed), ("auto", models_dir) or
    the file path.
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str, str, int | None], VGGWeights] = {}
        self._lock = threading.Lock()  # two jobs asking at once load the file once

    @staticmethod
    def key(source: str, *, models_dir: Path, random_seed: int = 0,
            network: str = "vgg19") -> tuple[str, str, str, int | None]:
        source = source.strip()
        if source == "random":
            return (network, "random", "", random_seed)
        if source == "auto":
            return (network, "auto", str(Path(models_dir).resolve()), None)
        return (network, "path", str(Path(source).expanduser().resolve()), None)

    def get(
        self, source: str, *, models_dir: Path, random_seed: int = 0, network: str = "vgg19",
        **kwargs: Any
    ) -> VGGWeights:
        """Like load_weights (same keyword arguments), cached."""
        key = self.key(source, models_dir=models_dir, random_seed=random_seed, network=network)
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = load_weights(
                    source, models_dir=models_dir, random_seed=random_seed, network=network,
                    **kwargs
                )
            return self._loaded[key]


__all__ = [
    "KERAS_FILENAME", "KERAS_FILES", "KERAS_MD5", "KERAS_MEAN_BGR", "KERAS_URL",
    "MATCONVNET_FILENAME", "MATCONVNET_FILENAMES", "MATCONVNET_MD5", "MATCONVNET_URL",
    "NETWORK_SHAPES", "VGG16_KERAS_FILENAME", "VGG16_KERAS_MD5", "VGG16_KERAS_URL",
    "VGG16_SHAPES", "VGG19_SHAPES", "VGGWeights", "WeightsCache", "WeightsError",
    "checked_layers", "download", "file_md5", "find_auto", "layout_of", "load_weights", "manual_fix",
    "random_weights", "read_keras_h5", "read_matconvnet", "read_weights_file",
    "sniff_format", "validate_layers",
]  # fmt: skip
