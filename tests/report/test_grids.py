"""Image-grid numerics: error maps, the highest-error window, exact pixel zoom, heatmap scale."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from evalvae.report import grids
from evalvae.report.gallery import png


def test_error_map_is_mean_absolute_error_over_rgb():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (9, 7, 3)).astype(np.uint8)
    b = rng.uniform(0, 255, (9, 7, 3)).astype(np.float32)
    expected = np.abs(a.astype(np.float64) - b.astype(np.float64)).sum(axis=2) / 3
    np.testing.assert_allclose(grids.error_map(a, b), expected, rtol=1e-6)
    assert grids.error_map(a, a.astype(np.float32)).max() == 0


@pytest.mark.parametrize("size", [1, 3, 8])
def test_worst_window_equals_brute_force(size):
    err = np.random.default_rng(size).random((23, 31))
    brute = {(t, x): err[t : t + size, x : x + size].sum() for t in range(23 - size + 1) for x in range(31 - size + 1)}
    best = max(brute.values())
    top, left = grids.worst_window(err, size)
    assert brute[(top, left)] == pytest.approx(best, rel=1e-12)


def test_worst_window_finds_a_planted_blob_at_the_border():
    err = np.zeros((64, 64))
    err[50:64, 0:10] = 5.0
    assert grids.worst_window(err, 16) == (48, 0)


def test_zoom_repeats_pixels_exactly():
    rgb = np.random.default_rng(1).integers(0, 256, (20, 20, 3)).astype(np.uint8)
    z = grids.zoom(rgb, 3, 5, 4, 6)
    assert z.shape == (24, 24, 3)
    for i in range(4):
        for j in range(4):
            block = z[6 * i : 6 * i + 6, 6 * j : 6 * j + 6]
            assert (block == rgb[3 + i, 5 + j]).all()  # nearest neighbour: no blending between pixels


def test_heatmap_scale_and_saturation():
    cmap = matplotlib.colormaps[grids.COLORMAP]
    h = grids.heatmap(np.array([[0.0, 10.0, 20.0, 400.0]]), vmax=20)
    np.testing.assert_array_equal(h[0, 0], (np.array(cmap(0.0)[:3]) * 255).round())
    np.testing.assert_array_equal(h[0, 2], h[0, 3])  # above the scale saturates
    assert grids.error_scale([np.full((4, 4), 2.2), np.full((4, 4), 7.1)]) == 8
    assert grids.error_scale([np.zeros((4, 4))]) == 1


def test_crop_size_and_box():
    assert grids.crop_size((512, 768)) == 64
    assert grids.crop_size((32, 32)) == 8
    boxed = grids.with_box(np.zeros((40, 40, 3), np.uint8), 10, 12, 8)
    assert (boxed[9, 11:21] == grids.BOX_COLOUR).all() and (boxed[10:18, 12:20] == 0).all()  # outline outside the crop


def test_png_is_lossless_for_photos_and_paletted_heatmaps():
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    heat = grids.heatmap(rng.random((32, 32)) * 30, 20)
    for rgb in (photo, heat):
        back = np.asarray(Image.open(io.BytesIO(png(rgb))).convert("RGB"))
        np.testing.assert_array_equal(back, rgb)
    assert Image.open(io.BytesIO(png(heat))).mode == "P"


def test_compose_pastes_tiles_unresampled():
    tile = np.random.default_rng(3).integers(0, 256, (30, 20, 3)).astype(np.uint8)
    canvas = np.asarray(grids.compose("t", ["a", "b"], [("row", [tile, None])], vmax=5))
    h, w = tile.shape[:2]
    hits = [
        (y, x)
        for y in range(canvas.shape[0] - h)
        for x in range(canvas.shape[1] - w)
        if (canvas[y, x] == tile[0, 0]).all() and (canvas[y : y + h, x : x + w] == tile).all()
    ]
    assert len(hits) == 1
