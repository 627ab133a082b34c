"""Quality on a real ImageNet network: the named strengths make art, in order, on any weights.

Runs only where the real weights have been built (`.ci/run` does it with
../shared/realnet/build_weights.py and sets STYLEBOT_REALNET_DIR); elsewhere it skips, so
the README's test command stays offline. The pairs are the sample images in docs/samples.

How painted an output is, is measured independently of the engine, with
keras.applications.VGG16 and plain NumPy Gram matrices (the measure of
shared/realnet/score.py): style_ratio = the output's mean relative Gram distance to the
painting over conv1_1..conv5_1, divided by the photo's (1.0 = no closer than the photo,
lower = more painted); content_dist = relative change of conv4_2 from the photo's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REALNET = Path(os.environ.get("STYLEBOT_REALNET_DIR", "/nonexistent"))
VGG19_LAYOUT = REALNET / "vgg19_layout_from_vgg16_notop.h5"
VGG16_FILE = REALNET / "vgg16_imagenet_notop.h5"
SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"

pytestmark = pytest.mark.skipif(
    not (VGG19_LAYOUT.exists() and VGG16_FILE.exists()),
    reason="real ImageNet weights not built (set STYLEBOT_REALNET_DIR; .ci/run builds them "
           "with ../shared/realnet/build_weights.py)",
)

SIZE = 160
PAIRS = [("chelsea.jpg", "hubble_deep_field.jpg"), ("astronaut.jpg", "brick.jpg"),
         ("coffee.jpg", "logo.png")]
STEPS = ("subtle", "normal", "strong", "extreme")
SCORE_STYLE = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]
SCORE_CONTENT = "block4_conv2"
MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def rgb(name: str) -> np.ndarray:
    with Image.open(SAMPLES / name) as im:
        return np.asarray(im.convert("RGB"), np.float32)


def resized(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    im = Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(im.resize((shape[1], shape[0]), Image.LANCZOS), np.float32)


class Scorer:
    """keras.applications.VGG16 with its own Caffe preprocessing and NumPy Grams."""

    def __init__(self, weights: Path) -> None:
        import keras

        vgg = keras.applications.VGG16(include_top=False, weights=str(weights))
        names = SCORE_STYLE + [SCORE_CONTENT]
        self.net = keras.Model(vgg.input, [vgg.get_layer(n).output for n in names])

    def features(self, image: np.ndarray):
        import keras

        out = self.net((image[None, ..., ::-1] - MEAN_BGR).astype(np.float32))
        feats = [keras.ops.convert_to_numpy(f)[0].astype(np.float64) for f in out]
        flat = [f.reshape(-1, f.shape[-1]) for f in feats[:-1]]
        return [f.T @ f / f.shape[0] for f in flat], feats[-1]

    def score(self, photo: np.ndarray, painting: np.ndarray, output: np.ndarray) -> dict:
        photo = resized(photo, output.shape[:2])
        scale = max(output.shape[:2]) / max(painting.shape[:2])
        painting = resized(painting, (round(painting.shape[0] * scale), round(painting.shape[1] * scale)))
        (g_o, f_o), (g_c, f_c), (g_s, _) = (self.features(x) for x in (output, photo, painting))
        d_o = np.mean([np.linalg.norm(o - s) / np.linalg.norm(s) for o, s in zip(g_o, g_s, strict=True)])
        d_c = np.mean([np.linalg.norm(c - s) / np.linalg.norm(s) for c, s in zip(g_c, g_s, strict=True)])
        return {"style_ratio": float(d_o / d_c),
                "content_dist": float(np.linalg.norm(f_o - f_c) / np.linalg.norm(f_c))}


@pytest.fixture(scope="module")
def real_engine():
    from engine.transfer import Engine
    from engine.weights import read_weights_file

    return Engine(read_weights_file(VGG19_LAYOUT))


@pytest.fixture(scope="module")
def scorer():
    return Scorer(VGG16_FILE)


def settings_for(step: str, **changes):
    from engine.jobs import STRENGTH_STEPS, TransferSettings

    base = TransferSettings(size=SIZE, seed=1, preview_every=0)
    return base.with_(style_strength=base.style_strength * STRENGTH_STEPS[step], **changes)


@pytest.fixture(scope="module")
def outputs(real_engine):
    """Every pair at every named step, with the engine's defaults otherwise."""
    return {(pair, step): real_engine.stylize(rgb(pair[0]), [rgb(pair[1])], settings_for(step)).image
            for pair in PAIRS for step in STEPS}


@pytest.fixture(scope="module")
def scores(outputs, scorer):
    return {key: scorer.score(rgb(key[0][0]), rgb(key[0][1]), image) for key, image in outputs.items()}


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_every_named_step_is_visibly_stylised_and_ordered(scores, pair):
    ratios = [scores[pair, step]["style_ratio"] for step in STEPS]
    # subtle already moves the photo a visible way towards the painting...
    assert ratios[0] < 0.95, ratios
    # ...and each step paints more than the one before, by a visible margin.
    assert all(b < a - 0.03 for a, b in zip(ratios, ratios[1:], strict=False)), ratios
    # normal is the classic look: a plain Gatys run on these weights scores 0.36-0.56
    assert ratios[STEPS.index("normal")] < 0.7, ratios


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_the_photo_stays_recognisable(scores, scorer, pair):
    """At every step the output's conv4_2 content is closer to the photo's than the
    painting's is: the subject is still there, even at extreme."""
    photo, painting = rgb(pair[0]), rgb(pair[1])
    as_big = resized(painting, photo.shape[:2])
    painting_dist = scorer.score(photo, painting, as_big)["content_dist"]
    for step in STEPS:
        assert scores[pair, step]["content_dist"] < 0.9 * painting_dist, (step, painting_dist)


def frame_and_band(image: np.ndarray, width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour of the outer `width`-px frame, and of the next `2*width` px in."""
    def ring(lo: int, hi: int) -> np.ndarray:
        mask = np.zeros(image.shape[:2], bool)
        mask[lo:image.shape[0] - lo, lo:image.shape[1] - lo] = True
        mask[hi:image.shape[0] - hi, hi:image.shape[1] - hi] = False
        return image[mask].mean(axis=0)

    return ring(0, width), ring(width, 3 * width)


@pytest.mark.parametrize("step", ["strong", "extreme"])
def test_the_border_is_not_tinted(outputs, step):
    """With zero padding, strong styles left a blue or green frame two pixels wide (on
    coffee x logo the frame differed from the band inside by -18/+41/-23 in R/G/B)."""
    for pair in PAIRS:
        frame, band = frame_and_band(outputs[pair, step])
        shift = frame - band
        tint = shift - shift.mean()  # a change of colour, not of brightness
        assert np.abs(tint).max() < 10.0, (pair, frame.round(1), band.round(1))
        assert np.abs(shift).max() < 20.0, (pair, frame.round(1), band.round(1))


def test_no_style_layer_dominates_at_the_photo(real_engine):
    """Equal layer weights mean equal say: at the photo, no layer carries half the style loss
    (with paper-form losses on these weights conv5_1 carried 70-85 %)."""
    from engine import images, transfer
    from engine.transfer import style_size

    settings = settings_for("normal")
    for photo_name, painting_name in PAIRS:
        photo = images.resize_longest(rgb(photo_name), SIZE)
        painting = images.resize_longest(rgb(painting_name), style_size(settings))
        objective = real_engine.objective(settings)
        args = transfer.step_args(objective, photo, [painting], settings)
        grams, scales = args[1], args[3]
        feats = objective.network.features(photo, objective.style_layers)
        per_layer = []
        for name, target, scale in zip(objective.style_layers, grams, scales, strict=False):
            f = feats[name].reshape(-1, feats[name].shape[-1]) * scale
            per_layer.append(float(np.mean((f.T @ f / f.shape[0] - target) ** 2)))
        shares = np.array(per_layer) / sum(per_layer)
        assert shares.max() < 0.5, (photo_name, painting_name, shares.round(2))


def test_the_same_strength_gives_the_same_loss_on_rescaled_weights(real_engine):
    """Rescale every channel of the network to unit mean activation, as Gatys et al. did
    (Caffe-scale and normalised weights differ exactly so): the network computes the same
    function up to those factors, and the loss and its gradient must not move."""
    from engine import images, transfer
    from engine.transfer import Engine
    from engine.weights import VGGWeights

    weights = real_engine.weights
    probe = real_engine.network(settings_for("normal", precision="float32"))
    names = list(weights.layers)
    photos = [images.resize_longest(rgb(n), 96) for n, _ in PAIRS]
    layers, previous = {}, None
    for name, (kernel, bias) in weights.layers.items():
        mean = np.mean([probe.features(p, [name])[name].mean(axis=(0, 1)) for p in photos], axis=0) \
            if name in probe.layer_names else np.ones(kernel.shape[-1])
        factor = np.where(mean > 1e-6, 1.0 / np.maximum(mean, 1e-6), 1.0).astype(np.float32)
        kernel = kernel * factor
        if previous is not None:
            kernel = kernel / previous[None, None, :, None]
        layers[name], previous = (kernel, bias * factor), factor
    assert len(layers) == len(names)
    rescaled = Engine(VGGWeights(layers=layers, mean_bgr=weights.mean_bgr, source="rescaled",
                                 is_random=False))
    settings = settings_for("normal", size=96, precision="float32")
    photo = photos[0]
    painting = images.resize_longest(rgb(PAIRS[0][1]), 96)
    x = np.clip(photo + np.random.default_rng(1).normal(0, 10, photo.shape), 0, 255).astype(np.float32)
    results = []
    for eng in (real_engine, rescaled):
        objective = eng.objective(settings)
        args = transfer.step_args(objective, photo, [painting], settings)
        results.append(objective.step(x, *args))
    (loss_a, grad_a, _), (loss_b, grad_b, _) = results
    assert loss_b == pytest.approx(loss_a, rel=1e-4)
    np.testing.assert_allclose(grad_b, grad_a, rtol=1e-2, atol=1e-3 * np.abs(grad_a).max())
