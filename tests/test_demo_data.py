"""Tests of the demo's procedural scenes (geopix2pix.demo): determinism, georeferencing, dtypes and
nodata, and that each task's target is a learnable function of its source."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.crs import CRS

from geopix2pix.demo import TASKS, make_demo_scenes
from geopix2pix.demo.terrain import CLASS_NAMES, fractal_noise, make_landscape
from geopix2pix.errors import GeoPix2PixError

SMALL = dict(n_train=1, train_size=128, heldout_size=96, progress=False)


def read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def all_paths(scenes) -> list:
    return [p for pair in scenes.train for p in pair] + [scenes.heldout_source,
                                                         scenes.heldout_target]


@pytest.fixture(scope="module")
def scenes_256(tmp_path_factory):
    """Every task at a size where statistics mean something (one train, one held-out scene)."""
    root = tmp_path_factory.mktemp("demo")
    return {task: make_demo_scenes(root / task, task, seed=3, n_train=1, train_size=256,
                                   heldout_size=256, progress=False) for task in TASKS}


# --- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_pixels_other_seed_other_pixels(tmp_path, task):
    a = make_demo_scenes(tmp_path / "a", task, seed=7, **SMALL)
    b = make_demo_scenes(tmp_path / "b", task, seed=7, **SMALL)
    c = make_demo_scenes(tmp_path / "c", task, seed=8, **SMALL)
    for pa, pb, pc in zip(all_paths(a), all_paths(b), all_paths(c)):
        np.testing.assert_array_equal(read(pa), read(pb))
        assert not np.array_equal(read(pa), read(pc), equal_nan=True)
    # the held-out scene is a different landscape from the training scene
    assert not np.array_equal(read(a.train[0][1])[:, :96, :96], read(a.heldout_target))


def test_noise_is_normalised_and_seeded():
    a = fractal_noise((64, 80), np.random.default_rng(1), beta=3.0)
    assert a.shape == (64, 80) and a.dtype == np.float32
    assert abs(a.mean()) < 1e-5 and abs(a.std() - 1) < 1e-4
    np.testing.assert_array_equal(a, fractal_noise((64, 80), np.random.default_rng(1), beta=3.0))


def test_landscape_has_every_class():
    land = make_landscape((256, 256), seed=5)
    present = set(np.unique(land.cover))
    assert present == set(CLASS_NAMES), present
    assert land.dem.dtype == np.float32 and 200 < land.dem.mean() < 1000


# --- georeferencing and formats --------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_scenes_are_georeferenced_exactly(tmp_path, task):
    scenes = make_demo_scenes(tmp_path, task, seed=0, n_train=2, train_size=128,
                              heldout_size=96, progress=False)
    expected = {
        scenes.train[0]: Affine(10.0, 0.0, 440000.0, 0.0, -10.0, 5120000.0),
        scenes.train[1]: Affine(10.0, 0.0, 450000.0, 0.0, -10.0, 5120000.0),
        (scenes.heldout_source, scenes.heldout_target):
            Affine(10.0, 0.0, 440000.0, 0.0, -10.0, 5100000.0),
    }
    bounds = []
    for (source, target), transform in expected.items():
        size = 96 if source == scenes.heldout_source else 128
        for path in (source, target):
            with rasterio.open(path) as ds:
                assert ds.crs == CRS.from_epsg(32633)
                assert ds.transform == transform
                assert (ds.width, ds.height) == (size, size)
                assert ds.compression is not None
                assert all(b[0] % 16 == 0 and b[1] % 16 == 0 for b in ds.block_shapes)  # tiles
                bounds.append(ds.bounds)
    # no two scenes overlap: the held-out scene is ground the model never saw
    assert bounds[0] == bounds[1] and bounds[0].right <= bounds[2].left
    assert bounds[4].top <= bounds[0].bottom
    assert scenes.pairs_csv.read_text().splitlines() == [
        "source,target", f"{scenes.train[0][0].name},{scenes.train[0][1].name}",
        f"{scenes.train[1][0].name},{scenes.train[1][1].name}"]


def test_dsm2image_formats(scenes_256):
    scenes = scenes_256["dsm2image"]
    with rasterio.open(scenes.heldout_source) as dem, rasterio.open(scenes.heldout_target) as hs:
        assert dem.dtypes == ("float32",) and dem.nodata == -9999.0 and dem.units == ("metre",)
        assert hs.dtypes == ("uint8",) and hs.nodata == 0
        z, shade = dem.read(1), hs.read(1)
    void = z == -9999.0
    assert 0.002 < void.mean() < 0.05
    assert (shade[void] == 0).all() and (shade[~void] > 0).mean() > 0.97
    assert z[~void].min() > 100 and z[~void].max() < 2000


def test_sar2optical_formats(scenes_256):
    scenes = scenes_256["sar2optical"]
    with rasterio.open(scenes.heldout_source) as sar, rasterio.open(scenes.heldout_target) as opt:
        assert sar.dtypes == ("float32", "float32") and np.isnan(sar.nodata)
        assert sar.descriptions == ("VV", "VH") and sar.units == ("dB", "dB")
        assert opt.dtypes == ("uint8",) * 3 and opt.nodata is None
        assert opt.colorinterp[0].name == "red"
        db = sar.read()
    missing = np.isnan(db).all(0)
    assert 0.005 < missing.mean() < 0.2 and (np.isnan(db).any(0) == missing).all()
    assert np.nanmin(db) > -45 and np.nanmax(db) < 20
    # multiplicative speckle: neighbouring pixels of one surface differ by decibels
    assert np.nanmedian(np.abs(np.diff(db[0], axis=1))) > 1.0


def test_sat2map_formats(scenes_256):
    scenes = scenes_256["sat2map"]
    image, chart = read(scenes.heldout_source), read(scenes.heldout_target)
    assert image.dtype == chart.dtype == np.uint8 and image.shape[0] == chart.shape[0] == 3
    colours = np.unique(chart.reshape(3, -1).T, axis=0)
    assert 3 <= len(colours) <= len(CLASS_NAMES)  # flat fills: one colour per class
    assert len(np.unique(image.reshape(3, -1).T, axis=0)) > 1000  # a texture, not fills


def test_bad_task_and_existing_files(tmp_path):
    with pytest.raises(GeoPix2PixError, match="--task"):
        make_demo_scenes(tmp_path, "dem2map", **SMALL)
    make_demo_scenes(tmp_path, "sat2map", **SMALL)
    with pytest.raises(GeoPix2PixError, match="--overwrite"):
        make_demo_scenes(tmp_path, "sat2map", **SMALL)
    make_demo_scenes(tmp_path, "sat2map", overwrite=True, **SMALL)


# --- learnability: the target follows from the source ----------------------------------------


def box(a: np.ndarray, k: int) -> np.ndarray:
    """k x k mean filter of (bands, rows, cols), edges replicated."""
    pad = np.pad(a, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)), mode="edge")
    return sliding_window_view(pad, (k, k), axis=(1, 2)).mean(axis=(-1, -2))


def binned_r2(x: np.ndarray, y: np.ndarray, x2: np.ndarray, y2: np.ndarray, levels: int) -> float:
    """R^2 on (x2, y2) of a lookup table of mean y per cell of quantile bins of x (n, d) fitted on
    the training scene: how much of the held-out target a pixel-local feature explains."""
    edges = [np.quantile(x[:, j], np.linspace(0, 1, levels + 1)[1:-1]) for j in range(x.shape[1])]

    def cell(f):
        index = np.zeros(len(f), dtype=np.int64)
        for j, e in enumerate(edges):
            index = index * levels + np.searchsorted(e, f[:, j])
        return index

    n_cells = levels ** x.shape[1]
    sums = np.bincount(cell(x), weights=y, minlength=n_cells)
    counts = np.bincount(cell(x), minlength=n_cells)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), y.mean())
    return 1 - ((y2 - means[cell(x2)]) ** 2).mean() / y2.var()


def test_hillshade_follows_the_slope_towards_the_sun(scenes_256):
    scenes = scenes_256["dsm2image"]
    z, shade = read(scenes.heldout_source)[0].astype(float), read(scenes.heldout_target)[0]
    z[z == -9999] = np.nan
    d_row, d_col = np.gradient(z)
    # the sun is in the north-west: ground rising away from it (to the south-east) faces it
    facing_sun = d_row + d_col
    ok = np.isfinite(facing_sun) & (shade > 0)
    assert np.corrcoef(facing_sun[ok], shade[ok])[0, 1] > 0.9


def test_map_follows_the_image_on_unseen_ground(scenes_256):
    scenes = scenes_256["sat2map"]
    (source, target), = [(read(s).astype(float), read(t).astype(float)) for s, t in scenes.train]
    source2, target2 = read(scenes.heldout_source), read(scenes.heldout_target).astype(float)
    x, x2 = box(source, 3).reshape(3, -1).T, box(source2.astype(float), 3).reshape(3, -1).T
    r2 = [binned_r2(x, target[b].ravel(), x2, target2[b].ravel(), 8) for b in range(3)]
    assert min(r2) > 0.3, r2  # a shuffled source would give about 0


def test_optical_follows_the_sar_on_unseen_ground(scenes_256):
    scenes = scenes_256["sar2optical"]

    def features(path):
        db = read(path).astype(float)
        valid = np.isfinite(db).all(0).ravel()
        smooth = box(np.nan_to_num(10 ** (db / 10)), 7)  # average intensity, not dB
        return 10 * np.log10(np.maximum(smooth, 1e-6)).reshape(2, -1).T, valid

    x, valid = features(scenes.train[0][0])
    x2, valid2 = features(scenes.heldout_source)
    target, target2 = read(scenes.train[0][1]), read(scenes.heldout_target)
    r2 = [binned_r2(x[valid], target[b].ravel()[valid].astype(float), x2[valid2],
                    target2[b].ravel()[valid2].astype(float), 12) for b in range(3)]
    assert min(r2) > 0.08, r2  # speckle hides much; a model sees context
