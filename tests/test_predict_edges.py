"""`geopix2pix predict` at a scene's edges and levels: centre-scaled windows ignore the absolute
level, and the padding past the edges extrapolates the scene (point reflection)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from predict_helpers import (
    IDENTITY,
    ConvModel,
    loaded,
    write_scene,
)

from geopix2pix.chips.scaling import Scaling
from geopix2pix.prediction import predict
from geopix2pix.prediction.engine.windows import point_reflect, read_strip


def test_centre_scaled_input_ignores_the_absolute_level(tmp_path):
    """With ``centre`` source scaling (DEM inputs) each window is centred on its own mean, so a
    scene raised by a constant predicts the same; the window rows cross batches (batch 7)."""
    rng = np.random.default_rng(3)
    base = np.clip(rng.normal(100, 20, (1, 150, 211)), 40, 160).astype("float32")
    low = write_scene(tmp_path / "low.tif", 211, 150, count=1, dtype="float32", data=base)
    high = write_scene(tmp_path / "high.tif", 211, 150, count=1, dtype="float32",
                       data=base + 500)
    model = loaded(ConvModel(in_ch=1), in_ch=1, target_scaling=IDENTITY,
                   source_scaling=Scaling("centre", (-50.0,), (50.0,)))
    outs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for scene, out in zip((low, high), outs):
        predict(scene, out, model=model, progress=False, batch_size=7)
    with rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        first, second = a.read(1), b.read(1)
    assert np.isfinite(first).all() and first.std() > 0.01
    np.testing.assert_allclose(first, second, atol=1e-5)
    # the percentile scaling of the same model does see the level (the test can fail)
    model = loaded(ConvModel(in_ch=1), in_ch=1, target_scaling=IDENTITY,
                   source_scaling=Scaling("percentile", (0.0,), (700.0,)))
    for scene, out in zip((low, high), outs):
        predict(scene, out, model=model, progress=False, batch_size=7, overwrite=True)
    with rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        assert np.abs(a.read(1) - b.read(1)).mean() > 1e-2


class Gradient(torch.nn.Module):
    """The east-west difference of band 1 (zero-sum 3x3 kernel): constant on a tilted plane."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]]]) / 8)

    def forward(self, x):
        return self.conv(x)


def test_centre_scaled_input_is_extrapolated_past_the_scene_edges(tmp_path):
    """A centre-scaled (elevation) source is padded past the scene's edges by point reflection,
    2 * edge - mirror, which continues the terrain's slope as `gdaldem -compute_edges` does: on a
    tilted plane the slope comes out the same on the edge pixels as inside, where the mirror
    would make it flat there (the test can fail: the mirror's edge columns are 0)."""
    rows, cols = np.mgrid[0:90, 0:130]
    plane = (1000 + 0.3 * cols + 0.15 * rows).astype("float32")[None]
    scene = write_scene(tmp_path / "plane.tif", 130, 90, count=1, dtype="float32", data=plane,
                        nodata=None)
    model = loaded(Gradient(), in_ch=1, target_scaling=IDENTITY,
                   source_scaling=Scaling("centre", (-50.0,), (50.0,)))
    predict(scene, tmp_path / "slope.tif", model=model, progress=False, blend="none",
            overlap=0.5)
    with rasterio.open(tmp_path / "slope.tif") as out:
        slope = out.read(1)
    inside = slope[10:-10, 10:-10]
    assert inside.std() < 1e-6 and abs(inside.mean()) > 1e-3
    np.testing.assert_allclose(slope, inside.mean(), atol=1e-5)


def test_point_reflection_extrapolates_past_a_scene_smaller_than_the_padding(tmp_path):
    """Padding wider than the scene (a 4 x 5 scene in 16-pixel windows): the point reflection
    goes on extrapolating the plane (a mirror of a mirror would zig-zag); a pixel computed
    from a void is invalid."""
    rows, cols = np.mgrid[0:4, 0:5]
    plane = (100 + 2.0 * cols + 3.0 * rows).astype("float32")
    scene = write_scene(tmp_path / "tiny.tif", 5, 4, count=1, dtype="float32",
                        data=plane[None], nodata=None)
    with rasterio.open(scene) as dataset:
        strip = read_strip(dataset, [1], -10, [-10, -2, 6], 16)
    data, valid = point_reflect(strip, 4, 5)
    rr, cc = np.mgrid[-10:6, -10:22]
    np.testing.assert_allclose(data[0], 100 + 2.0 * cc + 3.0 * rr)
    assert valid.all()
    voided = plane.copy()
    voided[1, 1] = -9999
    scene = write_scene(tmp_path / "void.tif", 5, 4, count=1, dtype="float32",
                        data=voided[None], nodata=-9999)
    with rasterio.open(scene) as dataset:
        strip = read_strip(dataset, [1], -10, [-10, -2, 6], 16)
    valid = point_reflect(strip, 4, 5)[1]

    def at(pixel: tuple[int, int]) -> bool:  # scene coordinates (the strip starts at -10, -10)
        return bool(valid[pixel[0] + 10, pixel[1] + 10])

    assert not at((1, 1)) and at((0, 0)) and at((2, 2))
    assert not at((-1, 1)) and not at((1, -1))  # 2 * edge - the void
    assert at((-1, 3)) and at((3, -1)) and at((-3, 3))


@pytest.mark.parametrize("height, width, row, cols, size", [
    (37, 45, -12, [-12, 4, 20], 32),  # the first window row: in part inside the scene
    (37, 45, 20, [-12, 4, 20], 32),  # the last: past its bottom and right edges
    (70, 40, -48, [-48, -16], 64),  # padding wider than the strip's part inside the scene
    (70, 40, 40, [-48, 8], 64),  # ... at the bottom and right
    (37, 45, -4, [-4, 12, 28], 16),  # padding narrower than the scene's part in the strip
    (300, 40, 192, [-8, 24], 128),  # a tall scene's last row of windows
    (5, 4, 4, [-12, 2], 16),  # starts inside a scene smaller than its padding
])
def test_point_reflection_is_the_whole_scenes_odd_reflection(tmp_path, height, width, row,
                                                              cols, size):
    """Every strip, wherever it starts, is padded exactly as numpy's odd reflection of the whole
    scene (values and validity; a terrain that is no plane, with voids near the edges)."""
    rng = np.random.default_rng(height)
    rows, columns = np.mgrid[0:height, 0:width]
    scene = (0.05 * (rows - 9.0) ** 2 + 0.03 * columns ** 2 + rng.normal(0, 1, (height, width))
             ).astype("float64")
    valid = np.ones((height, width), bool)
    valid[min(2, height - 1), min(1, width - 1)] = valid[-2, -1] = False
    path = write_scene(tmp_path / "s.tif", width, height, count=1, dtype="float64",
                       data=np.where(valid, scene, -9999)[None], nodata=-9999)
    with rasterio.open(path) as dataset:
        strip = read_strip(dataset, [1], row, cols, size)
    data, got_valid = point_reflect(strip, height, width)
    pad = 3 * size
    whole = np.pad(np.where(valid, scene, np.nan), pad, mode="reflect", reflect_type="odd")
    window = (slice(row + pad, row + pad + size), slice(cols[0] + pad, cols[0] + pad + strip.span))
    expected = whole[window]
    np.testing.assert_array_equal(got_valid, np.isfinite(expected))
    np.testing.assert_allclose(data[0][got_valid], expected[got_valid], rtol=1e-12, atol=1e-9)
