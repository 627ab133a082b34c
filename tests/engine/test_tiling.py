"""Large outputs within memory: the memory model, the tile grid and a tiled job."""

from __future__ import annotations

import numpy as np
import pytest

from engine import memory, tiling
from tests.engine.conftest import smooth_photo, stripes_texture


def test_memory_model_fits_the_measured_peaks():
    for longest, short, backend, precision, style_pixels, peak in memory.MEASURED:
        est = memory.estimate_mib(longest * short, style_pixels=style_pixels, backend=backend,
                                  precision=precision)
        assert abs(est - peak) / peak < 0.12, (longest, precision, est, peak)


def test_budget_is_max_memory_or_the_machine_less_headroom():
    assert memory.budget_mib(3072) == 3072
    assert memory.budget_mib(0, total_mib=8192) == 8192 - memory.HEADROOM_MIB
    assert memory.budget_mib(0, total_mib=65536) == pytest.approx(0.8 * 65536)


def test_plan_tiles_above_the_threshold_or_the_budget():
    small = memory.plan_tiles((512, 384), budget=8192, tile_above=1024, tile_size=576, overlap=96)
    assert not small.tiled
    big = memory.plan_tiles((1536, 1024), budget=30000, tile_above=1024, tile_size=576, overlap=96)
    assert big.tiled and big.tile == (576, 560) and big.estimate_mib < 3 * 1024
    # 1024 px fits 8 GiB whole, not 2.5 GiB: the budget alone makes it tile.
    assert not memory.plan_tiles((1024, 768), budget=8192, tile_above=0, tile_size=576, overlap=96).tiled
    tight = memory.plan_tiles((1024, 768), budget=2500, tile_above=0, tile_size=576, overlap=96)
    assert tight.tiled and tight.estimate_mib <= 2500 < tight.untiled_mib


def test_grid_covers_the_image_and_weights_cross_fade_to_one():
    shape = (100, 170)
    tiles = tiling.grid(shape, (48, 64), 16)
    assert len({(t.height, t.width) for t in tiles}) == 1
    total = np.zeros(shape, np.float32)
    for t in tiles:
        total[t.region] += tiling.weights(t)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    canvas = tiling.Canvas(np.zeros((*shape, 3), np.float32))
    for t in tiles:
        canvas.add(t, np.full((t.height, t.width, 3), 7.0, np.float32))
    np.testing.assert_allclose(canvas.image(), 7.0, atol=1e-4)


def _column_steps(image: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))


def test_tiled_job_is_close_to_the_untiled_one_without_seams(engine):
    from engine.jobs import TransferSettings

    photo, style = smooth_photo(64, 96), stripes_texture(48, 48)
    # Adam: its steps follow the local gradient (L-BFGS's path through a random network's
    # loss is chaotic enough that two runs of nearly the same problem end far apart).
    settings = TransferSettings(size=96, iterations=20, seed=1, precision="float32", preview_every=0,
                                optimizer="adam", learning_rate=3.0)
    whole = engine.stylize(photo, [style], settings).image
    tiled_settings = settings.with_(tile_above=64, tile_size=64, tile_overlap=16)
    plan = engine.tile_plan(whole.shape[:2], tiled_settings)
    assert plan.tiled
    tiled = engine.stylize(photo, [style], tiled_settings).image
    job = engine.prepare(photo, [style], settings)
    _, args = job.level()

    def loss(image):
        return float(job.objective.step(image, *args)[0])

    # The tiled picture is about as good a minimum of the WHOLE picture's loss.
    start = loss(job.content_seen)
    print("losses: start", start, "whole", loss(whole), "tiled", loss(tiled), "pixels",
          np.abs(tiled - whole).mean(), np.abs(whole - job.content_seen).mean())
    # Measured (two tiles of 64 x 56): the tiled run lowers the whole picture's loss 77 % as
    # much as the untiled one, and differs from it by two thirds of what either changed
    # (12.9 vs 19.2 levels: a random network's optimisation wanders).
    assert start - loss(tiled) > 0.6 * (start - loss(whole)) > 0
    assert np.abs(tiled - whole).mean() < 0.8 * np.abs(whole - job.content_seen).mean()
    # No seam: the step between columns where tiles meet is no larger than elsewhere.
    steps = _column_steps(tiled)
    edges = set()
    for t in tiling.grid(whole.shape[:2], plan.tile, plan.overlap):
        edges |= {t.x - 1, t.x, t.x + t.width - 1, t.x + t.width - 2}
    edges = sorted(e for e in edges if 2 <= e < len(steps) - 2)
    inner = [i for i in range(2, len(steps) - 2) if i not in edges]
    assert edges and steps[edges].max() <= 1.1 * steps[inner].max()


def test_upscale_starts_from_the_previous_result(engine):
    from engine.jobs import TransferSettings

    photo, style = smooth_photo(36, 48), stripes_texture(48, 48)
    small = np.full((18, 24, 3), 30.0, np.float32)  # a "previous result" far from the photo
    settings = TransferSettings(size=48, iterations=2, seed=1, precision="float32", preview_every=0)
    out = engine.stylize(photo, [style], settings, init=small).image
    fresh = engine.stylize(photo, [style], settings).image
    assert out.shape == fresh.shape == (36, 48, 3)
    assert np.abs(out - 30.0).mean() < np.abs(fresh - 30.0).mean() / 2
    grey = engine.stylize(photo, [style], settings.with_(color="luminance"), init=small).image
    assert grey.shape == (36, 48, 3)  # luminance mode takes the start's luminance
