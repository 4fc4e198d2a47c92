"""`train --categorical` on targets that are not fit class maps: float, multi-band, one-class or
too-many-valued targets and a class code that is also the nodata are refused in one line, and
chips whose class codes were averaged (bilinear onto a shifted grid) get a warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shared, write_raster
from rasterio.transform import from_origin
from test_train_categorical import TINY

from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.training import train


def _chips_of(folder: Path, target: np.ndarray, nodata=None, **options) -> Path:
    source = np.random.default_rng(0).random((1,) + target.shape[-2:], dtype=np.float32)
    export_chips(write_raster(folder / "s.tif", source),
                 write_raster(folder / "t.tif", target, nodata=nodata), folder / "chips",
                 chip_size=64, workers=0, progress=False, **options)
    return folder / "chips"


@pytest.mark.parametrize("kind, message", [
    ("float", "is float32; class codes are integers: store the class map as integers"),
    ("many", "holds more than 256 values, too many for a class map"),
    ("bands", "has 2 bands; a class map has one (export it with --target-bands N)"),
    ("one class", "hold one class only (5); export chips that cover several classes"),
])
def test_targets_that_are_not_class_maps_are_refused_in_one_line(tmp_path, kind, message):
    rng = np.random.default_rng(1)
    target = {"float": rng.random((1, 128, 128), dtype=np.float32),
              "bands": rng.integers(1, 4, (2, 128, 128)).astype("uint8"),
              "one class": np.full((1, 128, 128), 5, "uint8"),
              "many": rng.integers(0, 1000, (1, 128, 128)).astype("uint16")}[kind]
    chips = _chips_of(tmp_path, target)
    with pytest.raises(GeoPix2PixError) as caught:
        train(chips, tmp_path / "run", categorical=True, max_steps=1, **TINY)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("shifted", [False, True])
def test_chips_whose_codes_were_averaged_get_a_warning(tmp_path, capsys, shifted):
    """A class map resampled with bilinear onto its source's grid (a half-pixel shift) gets a
    warning; on the source's own grid nothing is resampled whatever the option: no warning."""
    rng = np.random.default_rng(2)
    target = rng.integers(1, 4, (1, 128, 128)).astype("uint8")
    source = rng.random((1, 128, 128), dtype=np.float32)
    shift = 5.0 if shifted else 0.0
    summary = export_chips(write_raster(tmp_path / "s.tif", source),
                           write_raster(tmp_path / "t.tif", target, transform=from_origin(
                               500000.0 + shift, 5200000.0, 10.0, 10.0)), tmp_path / "chips",
                           chip_size=64, workers=0, progress=False,
                           target_resampling="bilinear")
    pairs = json.loads((tmp_path / "chips" / "dataset.json").read_text())["pairs"]
    assert pairs[0]["target_resampled"] is shifted
    # the export says it too, of a target without a colour table, from a sample of its values
    said = [w for w in summary.warnings if "looks like a class map" in w]
    assert said == ([f"the target {tmp_path / 't.tif'} looks like a class map (3 integer values "
                     "in a sample: 1, 2, 3) resampled onto its source's grid with "
                     "--target-resampling bilinear, which averages neighbouring codes into "
                     "codes of other classes or none; if it is one, re-export with "
                     "--target-resampling nearest"] if shifted else [])
    main(["train", str(tmp_path / "chips"), "-o", str(tmp_path / "run"), "--categorical",
          "--max-steps", "1", "--ngf", "8", "--ndf", "8", "--workers", "0", "--device", "cpu",
          "-q"])
    err = capsys.readouterr().err
    # (one step on random classes may lose to the simple baselines: a warning of its own)
    warned = [line for line in err.splitlines() if line.startswith("warning: ")
              and "does not beat the best simple baseline" not in line]
    assert bool(warned) is shifted, err
    if shifted:
        assert "--target-resampling bilinear and a target resampled" in err


def test_a_class_code_that_is_also_the_nodata_is_refused(tmp_path):
    """Two pairs disagreeing on nodata: the first declares 0, the second has valid 0s, so the
    class table holds 0, which prediction would write as nodata."""
    rng = np.random.default_rng(4)
    first = rng.integers(0, 3, (1, 128, 128)).astype("uint8")
    second = rng.integers(0, 3, (1, 128, 128)).astype("uint8")
    source = rng.random((1, 128, 128), dtype=np.float32)
    pairs = []
    for k, (target, nodata) in enumerate([(first, 0), (second, None)]):
        transform = from_origin(500000.0 + 5000 * k, 5200000.0, 10.0, 10.0)
        pairs.append((write_raster(tmp_path / f"s{k}.tif", source, transform=transform),
                      write_raster(tmp_path / f"t{k}.tif", target, nodata=nodata,
                                   transform=transform)))
    export_chips(pairs=pairs, out_dir=tmp_path / "chips", chip_size=64, workers=0,
                 progress=False, max_nodata=1.0)
    with pytest.raises(GeoPix2PixError, match="class code 0 of .* is also its target's nodata"):
        train(tmp_path / "chips", tmp_path / "run", categorical=True, max_steps=1, **TINY)


def test_a_band_that_states_a_unit_holds_quantities_not_codes(tmp_path):
    """A flat area's integer DEM has few values too; its unit says it is no class map."""
    import rasterio

    from geopix2pix.raster.codes import class_codes

    heights = np.random.default_rng(0).integers(100, 110, (1, 64, 64)).astype("int16")
    path = write_raster(tmp_path / "dem.tif", heights)
    with rasterio.open(path) as dataset:
        assert class_codes(dataset, 1) == list(range(100, 110))
    with rasterio.open(path, "r+") as dataset:
        dataset.set_band_unit(1, "metre")
    with rasterio.open(path) as dataset:
        assert class_codes(dataset, 1) is None


@pytest.mark.parametrize("folder, name, codes", [
    ("image_map_eolearn_slovenia", "lulc.tif", [1, 2, 3, 4, 8]),
    ("image_map_spacenet3_vegas_roads", "road_mask.tif", [0, 255]),
    ("dem_hillshade_exploradores", "exploradores_aster_hillshade_gdal_az315_alt45.tif", None),
    ("image_map_spacenet3_vegas_roads", "road_image_pan.tif", None),
])
def test_real_class_maps_look_like_class_maps_and_real_images_do_not(folder, name, codes):
    """On ../shared/data: the land-cover map and the road mask (neither has a colour table) are
    told by their values, the hillshade (uint8) and the panchromatic image (uint16) are not."""
    import rasterio

    from geopix2pix.raster.codes import class_codes

    with rasterio.open(shared(folder, name)) as dataset:
        assert class_codes(dataset, 1) == codes
