"""export-chips says what opening the rasters found (an untagged fill value; in an unpaired
export the domains' pixel sizes far apart) before it cuts any chip: here an export refused after
opening (its AOI holds no chip) has already said it, through the API and on the command line,
and a finished one says each warning once."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from conftest import write_raster
from shapely.geometry import box

from geopix2pix import GeoPix2PixError, GeoPix2PixWarning, export_chips
from geopix2pix.cli import main

FILL = "a common fill value: if those are voids, pass --source-nodata -9999"


def _pair(folder):
    """An untagged float32 DEM with a -9999 void, and a uint8 shading of it."""
    y, x = np.mgrid[0:128, 0:128]
    dem = (400 + 2 * x + np.sin(y / 9.0) * 30).astype("float32")
    dem[40:80, 40:80] = -9999
    shade = np.clip((dem - 400) / 3, 1, 250).astype("uint8")
    return (write_raster(folder / "dem.tif", dem),
            write_raster(folder / "shade.tif", shade, nodata=0))


def _aoi_beside(folder):
    """A polygon 10 km east of the rasters (EPSG:32633): no chip lies in it."""
    path = folder / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[box(520000, 5190000, 521000, 5191000)],
                     crs="EPSG:32633").to_file(path)
    return path


def test_the_api_warns_before_an_export_is_refused(tmp_path):
    source, target = _pair(tmp_path)
    with pytest.warns(GeoPix2PixWarning) as caught, pytest.raises(GeoPix2PixError):
        export_chips(source, target, tmp_path / "chips", chip_size=32, aoi=_aoi_beside(tmp_path),
                     workers=0, progress=False)
    assert [str(w.message) for w in caught if FILL in str(w.message)] and \
        all(str(source) in str(w.message) for w in caught if FILL in str(w.message))
    assert not (tmp_path / "chips").exists()


def test_the_command_line_says_it_before_the_refusal(tmp_path, capsys):
    source, target = _pair(tmp_path)
    assert main(["export-chips", str(source), str(target), "-o", str(tmp_path / "chips"),
                 "--chip-size", "32", "--aoi", str(_aoi_beside(tmp_path)), "--workers", "0",
                 "-q"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("warning: ") and FILL in lines[0]
    assert "warning" not in lines[1]  # the refusal, after


def test_a_finished_export_says_each_warning_once(tmp_path, capsys):
    source, target = _pair(tmp_path)
    with pytest.warns(GeoPix2PixWarning) as caught:
        summary = export_chips(source, target, tmp_path / "a", chip_size=32, workers=0,
                               progress=False)
    said = [str(w.message) for w in caught]
    assert sorted(said) == sorted(summary.warnings) and len(set(said)) == len(said)
    assert any(FILL in w for w in said)
    assert main(["export-chips", str(source), str(target), "-o", str(tmp_path / "b"),
                 "--chip-size", "32", "--workers", "0", "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert sorted(err) == sorted(f"warning: {w}" for w in summary.warnings)


def test_an_unpaired_export_warns_of_pixel_sizes_before_it_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    source = write_raster(tmp_path / "s.tif", rng.random((1, 96, 96), dtype=np.float32))
    coarse = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 5200000.0)  # 3x the source's 10 m
    target = write_raster(tmp_path / "t.tif", rng.random((1, 96, 96), dtype=np.float32),
                          transform=coarse)
    with pytest.warns(GeoPix2PixWarning, match="3.0x apart") as caught, \
            pytest.raises(GeoPix2PixError):
        export_chips(unpaired=True, sources=[source], targets=[target], chip_size=32,
                     out_dir=tmp_path / "chips", aoi=_aoi_beside(tmp_path), workers=0,
                     progress=False)
    assert sum("3.0x apart" in str(w.message) for w in caught) == 1


def test_pairs_whose_sources_have_pixels_far_apart_are_warned_of(tmp_path):
    """10 m and 30 m sources mixed in one chips folder, silently: a chip covers 9x the ground in
    one, and dataset.json records the first pair's pixel size only."""
    rng = np.random.default_rng(0)
    rows = ["source,target"]
    for name, size in (("fine", 10.0), ("coarse", 30.0)):
        grid = Affine(size, 0.0, 500000.0, 0.0, -size, 5200000.0)
        for side in ("s", "t"):
            write_raster(tmp_path / f"{name}_{side}.tif",
                         rng.random((1, 64, 64), dtype=np.float32), transform=grid)
        rows.append(f"{name}_s.tif,{name}_t.tif")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(GeoPix2PixWarning, match="3.0x apart"):
        summary = export_chips(pairs=tmp_path / "pairs.csv", out_dir=tmp_path / "chips",
                               chip_size=32, workers=0, progress=False, shift_check=False)
    said = [w for w in summary.warnings if "ground pixels" in w]
    assert len(said) == 1 and said[0].startswith("the pairs' sources have ground pixels from 10 m")
    assert "fine_s.tif" in said[0] and "to 30 m" in said[0] and "coarse_s.tif" in said[0]
