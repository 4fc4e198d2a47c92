"""Predicting with a categorical model: blended class probabilities -> one band of class codes.

Real GeoTIFFs through rasterio; stand-in generators (`predict_helpers.PixelLogits`, and here
`WindowHalves`) and a real untrained U-Net model file.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from predict_helpers import (
    CLASSES,
    PALETTE,
    PixelLogits,
    categorical_meta,
    loaded,
    unet_file,
    write_scene,
)
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from torch import nn

from geopix2pix.cli import main
from geopix2pix.models.metadata import ModelMetadata
from geopix2pix.prediction import grouped, pipeline, predict, resample
from geopix2pix.prediction.blend import window_weights
from geopix2pix.prediction.predictor import check_creation_options_for
from geopix2pix.prediction.resample import temporary_spec
from geopix2pix.prediction.runner import output_spec, predict_targets
from geopix2pix.prediction.windows import make_layout
from geopix2pix.prediction.writer import to_output
from geopix2pix.raster.io import read_window, warped_view
from geopix2pix.settings.predict import PredictOptions

NODATA = 255
WIDTH, HEIGHT = 301, 187  # odd, and neither a multiple of the window nor of its stride


def categorical(module: nn.Module, classes=CLASSES, **meta):
    """A loaded categorical model of the land cover target around a stand-in generator."""
    return loaded(module, out_ch=len(classes), **categorical_meta(classes, **meta))


def scene_with_holes(path, width=WIDTH, height=HEIGHT, **profile) -> str:
    """A 3-band uint8 scene (nodata 0) with an invalid block and invalid pixels of one band."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = (np.sin(xx / 17.0) + np.cos(yy / 23.0)) * 60 + 128
    data = np.clip(smooth[None] + rng.normal(0, 10, (3, height, width)), 1, 254).astype("uint8")
    data[:, 20:50, 100:160] = 0
    data[1, rng.integers(0, height, 40), rng.integers(0, width, 40)] = 0
    return write_scene(path, width, height, data=data, **profile)


def scene_pixels(scene) -> tuple[np.ndarray, np.ndarray]:
    """(band 1, validity) of the whole scene, read as prediction reads it."""
    with rasterio.open(scene) as src:
        data, valid = read_window(src, [1, 2, 3], None)
    return data[0], valid


def assert_class_map(out, scene, valid, more_nodata=0):
    """`out` is the land cover class map of `scene`: its exact grid, one uint8 band with nodata
    255 exactly where the scene is invalid (and at up to `more_nodata` other pixels), class codes
    elsewhere, description and palette."""
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.width, dst.height) == \
            (src.crs, src.transform, src.width, src.height)
        assert dst.count == 1 and dst.dtypes[0] == "uint8" and dst.nodata == NODATA
        assert dst.descriptions == ("land cover",)
        assert dst.colorinterp == (ColorInterp.palette,)
        table = dst.colormap(1)
        assert [table[i] for i in range(len(PALETTE))] == list(PALETTE)
        values = dst.read(1)
    assert (values[~valid] == NODATA).all()
    assert (values == NODATA).sum() <= (~valid).sum() + more_nodata
    assert set(np.unique(values[valid]).tolist()) <= {*CLASSES, *([NODATA] if more_nodata else [])}
    return values


@pytest.mark.parametrize("blend", ["hann", "none"])
@pytest.mark.parametrize("batch_size", [1, 5, 16])
def test_per_pixel_scores_give_their_argmax_code_everywhere(tmp_path, blend, batch_size):
    """Blending a pixel's identical probabilities changes nothing: the output is the code of
    each pixel's highest score, on any batching, Hann-blended or centre-cropped."""
    scene = scene_with_holes(tmp_path / "s.tif")
    out = tmp_path / "out.tif"
    predict(scene, out, model=categorical(PixelLogits()), progress=False, blend=blend,
            batch_size=batch_size)
    band1, valid = scene_pixels(scene)
    values = assert_class_map(out, scene, valid)
    expected = PixelLogits.expected(band1)
    assert len(np.unique(expected[valid])) == len(CLASSES)  # every class is there
    np.testing.assert_array_equal(values[valid], expected[valid])


@pytest.mark.parametrize("fold_on", [frozenset(), frozenset({"cpu"})])
def test_per_pixel_scores_folded_where_the_model_ran(tmp_path, monkeypatch, fold_on):
    """The same where the windows are weighted and summed where the model ran (on CUDA; forced
    here on the CPU), with batches crossing window rows and column chunks."""
    monkeypatch.setattr(pipeline, "FOLD_ON", fold_on)
    scene = scene_with_holes(tmp_path / "s.tif", width=1100)
    out = tmp_path / "out.tif"
    predict(scene, out, model=categorical(PixelLogits()), progress=False, batch_size=7,
            chunk_width=512)
    band1, valid = scene_pixels(scene)
    values = assert_class_map(out, scene, valid)
    np.testing.assert_array_equal(values[valid], PixelLogits.expected(band1)[valid])


# Scores of the left and the right half of every window: averaging the logits of the two halves
# favours class 2, averaging their probabilities class 0 or 1.
LEFT, RIGHT = (10.0, 0.0, 9.0), (0.0, 10.5, 9.0)


class WindowHalves(nn.Module):
    """Scores by column within the window, whatever the input: `LEFT` in the left half of each
    window, `RIGHT` in the right half, so overlapping windows disagree at every pixel."""

    def __init__(self):
        super().__init__()
        self.scores = nn.Parameter(torch.tensor([LEFT, RIGHT]), requires_grad=False)

    def forward(self, x):
        n, _, h, w = x.shape
        right = (torch.arange(w) >= w // 2).long()
        return self.scores[right].T[None, :, None, :].expand(n, -1, h, w)


def reference_blend(per_window: np.ndarray, height: int, width: int) -> np.ndarray:
    """Every window of the predict lattice (64 pixels, overlap 0.5, Hann) adding the same
    (channels, 64, 64) `per_window`, weighted, over the scene: the weighted mean per pixel."""
    layout = make_layout(height, width, 64, 0.5, "hann")
    weights = window_weights(64, layout.stride, layout.margin, "hann").astype(float)
    sums = np.zeros((per_window.shape[0], height, width))
    total = np.zeros((height, width))
    for row in layout.rows:
        for col in layout.cols:
            r0, r1, c0, c1 = max(row, 0), min(row + 64, height), max(col, 0), min(col + 64, width)
            if r0 < r1 and c0 < c1:
                inside = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
                sums[:, r0:r1, c0:c1] += (weights * per_window)[(slice(None), *inside)]
                total[r0:r1, c0:c1] += weights[inside]
    return sums / total


@pytest.mark.parametrize("fold_on", [frozenset(), frozenset({"cpu"})])
def test_probabilities_not_logits_are_blended(tmp_path, monkeypatch, fold_on):
    """Where windows disagree, the output is the argmax of the Hann-weighted mean of their class
    probabilities (softmax before blending), which here differs from that of their logits."""
    monkeypatch.setattr(pipeline, "FOLD_ON", fold_on)
    scene = scene_with_holes(tmp_path / "s.tif")
    out = tmp_path / "out.tif"
    model = categorical(WindowHalves(), classes=CLASSES[:3])
    predict(scene, out, model=model, progress=False, batch_size=6)
    _, valid = scene_pixels(scene)
    with rasterio.open(out) as dst:
        values = dst.read(1)
    logits = WindowHalves()(torch.zeros(1, 3, 64, 64))[0].numpy().astype(float)
    probabilities = torch.softmax(torch.from_numpy(logits), 0).numpy()
    by_probability = reference_blend(probabilities, HEIGHT, WIDTH)
    by_logit = reference_blend(logits, HEIGHT, WIDTH).argmax(0)
    top = np.sort(by_probability, axis=0)
    clear = valid & (top[-1] - top[-2] > 1e-4)  # not at a tie of float rounding
    assert clear.sum() > 0.95 * valid.sum()
    expected = np.array(CLASSES)[by_probability.argmax(0)]
    assert (expected[clear] != np.array(CLASSES)[by_logit][clear]).mean() > 0.3
    np.testing.assert_array_equal(values[clear], expected[clear])
    assert (values[~valid] == NODATA).all()


def test_class_codes_of_blended_probabilities():
    """`to_output` of a categorical spec: the code of the highest probability (the first of
    equals), nodata where invalid."""
    spec = output_spec(categorical(PixelLogits()), ModelMetadata.of(categorical(PixelLogits())))
    probabilities = np.array([[[0.1, 0.5, 0.25]], [[0.6, 0.2, 0.25]], [[0.2, 0.2, 0.25]],
                              [[0.1, 0.1, 0.25]]], dtype=np.float32)
    valid = np.array([[True, True, False]])
    np.testing.assert_array_equal(to_output(probabilities, valid, spec), [[[20, 10, NODATA]]])


def test_output_spec_counts_one_band_of_the_targets_codes():
    model = categorical(PixelLogits())
    spec = output_spec(model, ModelMetadata.of(model))
    assert spec.categorical and spec.count == 1 and spec.channels == len(CLASSES)
    assert (spec.dtype, spec.nodata, spec.classes) == ("uint8", NODATA, tuple(CLASSES))
    assert spec.descriptions == ("land cover",) and spec.band_metadata.colormap == PALETTE
    for cog in (False, True):  # the output's profile, one band with its palette, is accepted
        check_creation_options_for(PredictOptions.from_options(cog=cog), model)
    temporary = temporary_spec(spec)
    assert (temporary.dtype, temporary.count, temporary.classes) == ("float32", 1, spec.classes)
    wide = categorical(PixelLogits(), classes=[1, 2, 3, 2**24 + 1], target_dtype="int32")
    assert temporary_spec(output_spec(wide, ModelMetadata.of(wide))).dtype == "float64"


def test_untrained_unet_file_via_the_cli_as_a_cog(tmp_path):
    """A real categorical U-Net file (logits generator) through `geopix2pix predict --cog`
    (128-pixel blocks, so that this small scene gets overviews)."""
    model = unet_file(tmp_path / "m.safetensors", out_ch=len(CLASSES), **categorical_meta())
    scene = scene_with_holes(tmp_path / "s.tif")
    out = tmp_path / "out.tif"
    assert main(["predict", scene, str(out), "-m", model, "-q", "--cog",
                 "--co", "BLOCKSIZE=128"]) == 0
    _, valid = scene_pixels(scene)
    assert_class_map(out, scene, valid)
    with rasterio.open(out) as dst:
        assert dst.overviews(1) and dst.profile["tiled"]
    with rasterio.open(out, overview_level=0) as overview:  # codes picked (nearest), not averaged
        assert set(np.unique(overview.read(1)).tolist()) <= {*CLASSES, NODATA}


@pytest.mark.parametrize("pixel_size", [20.0, 45.0])
def test_resample_to_model_writes_codes_on_the_scenes_grid(tmp_path, monkeypatch, pixel_size):
    """--resample-to-model predicts at the training 30 m into a temporary of class codes, warped
    back with nearest: only codes on the scene's exact grid, nodata where it is invalid."""
    warps = []
    monkeypatch.setattr(resample, "warped_view", lambda dataset, grid, resampling: warps.append(
        (grid.width, resampling)) or warped_view(dataset, grid, resampling))
    scene = scene_with_holes(tmp_path / "s.tif",
                             transform=from_origin(500000.0, 4_000_000.0, pixel_size, pixel_size))
    out = tmp_path / "out.tif"
    predict(scene, out, model=categorical(PixelLogits()), progress=False, resample_to_model=True)
    coarse = int(np.ceil(WIDTH * pixel_size / 30))  # the scene's width in 30 m pixels
    # the scene in (averaged onto larger model pixels), the codes back
    scene_in = {20.0: "average", 45.0: "bilinear"}[pixel_size]  # onto larger / smaller pixels
    assert warps == [(coarse, scene_in), (WIDTH, "nearest")]
    band1, valid = scene_pixels(scene)
    # nodata exactly where the scene is invalid: never spread from the 30 m temporary
    values = assert_class_map(out, scene, valid)
    assert set(CLASSES) <= set(np.unique(values[valid]).tolist())
    # the class map at 30 m, back on the scene's pixels: mostly each pixel's own class
    assert (values[valid] == PixelLogits.expected(band1)[valid]).mean() > 0.6


def test_small_scenes_predicted_together_are_each_class_maps(tmp_path, monkeypatch):
    """Several small scenes go through one pipeline run (`grouped`): each its own class map."""
    runs = []
    monkeypatch.setattr(grouped, "predict_targets", lambda targets, *args: runs.append(
        len(targets)) or predict_targets(targets, *args))
    scenes = [scene_with_holes(tmp_path / f"s{k}.tif", width=90 + 13 * k, height=70)
              for k in range(3)]
    results = predict(scenes, out_dir=tmp_path / "out", model=categorical(PixelLogits()),
                      progress=False)
    assert all(r.ok for r in results) and runs == [3]
    for scene, result in zip(scenes, results):
        band1, valid = scene_pixels(scene)
        values = assert_class_map(result.out, scene, valid)
        np.testing.assert_array_equal(values[valid], PixelLogits.expected(band1)[valid])


@pytest.mark.parametrize("chip", [64, 256, 512])
def test_many_classes_blend_in_narrower_chunks(chip):
    """One probability per class is blended: the column chunks narrow as the classes grow, so
    the blend buffers stay about the size of a 4-band regression's, but never below 8 windows,
    so that the windows computed twice at the chunks' edges stay within 1/8 of the scene's."""
    from geopix2pix.prediction.windows import DEFAULT_CHUNK_WIDTH, chunk_width_for

    layout = make_layout(10_000, 10_000, chip, 0.5, "hann")
    whole = layout.count(layout.chunks(10_000))  # one chunk: every window computed once
    for channels in (1, 4, 5, 12, 44, 256):
        width = chunk_width_for(DEFAULT_CHUNK_WIDTH, channels, chip)
        assert layout.count(layout.chunks(width)) <= whole * 1.125
        assert width * channels <= 4 * DEFAULT_CHUNK_WIDTH or width <= max(8 * chip, 512)
        if channels <= 4:
            assert width == DEFAULT_CHUNK_WIDTH
    assert chunk_width_for(DEFAULT_CHUNK_WIDTH, 256, chip) == max(8 * chip, 512)
    assert chunk_width_for(512, 44, chip) == 512  # never wider than asked
