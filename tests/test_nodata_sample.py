"""The sample an untagged raster's fill values are looked for in: a large tiled raster without
overviews is read as a fixed grid of small windows from edge to edge, each inside one tile (a
decimated read would decode every tile of the file), and still warned of a void covering a share
of it, in a corner or as a frame along the edges; a raster with overviews, in strips, or small is
read decimated as before."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import write_raster
from rasterio.enums import Resampling
from rasterio.windows import Window

from geopix2pix.raster import nodata
from geopix2pix.raster.nodata import fill_value_lines

BIG = 8192  # a side of the large raster: 67 million pixels
TILE = 256


def _large(path: Path, corner: int, fill=65535, dtype="uint16", tiled=True,
           frame: int = 0, tile: int = TILE) -> Path:
    """A BIG x BIG compressed raster of 300s (tiled TILE, or in strips) whose top-left
    `corner` x `corner` pixels, and a `frame` of pixels along every edge, are `fill`, written a
    band of rows at a time."""
    layout = dict(tiled=True, blockxsize=tile, blockysize=tile) if tiled else {}
    profile = dict(driver="GTiff", width=BIG, height=BIG, count=1, dtype=dtype,
                   compress="deflate", crs="EPSG:32633",
                   transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0), **layout)
    rows = 1024
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, BIG, rows):
            band = np.full((rows, BIG), 300, dtype)
            band[:max(0, min(rows, corner - top)), :corner] = fill
            if frame:
                band[:, :frame] = band[:, BIG - frame:] = fill
                band[:max(0, frame - top)] = fill
                band[max(0, BIG - frame - top):] = fill
            dst.write(band, 1, window=Window(0, top, BIG, rows))
    return path


def _lines_and_reads(path: Path, monkeypatch, bands=(1,)) -> tuple[list[str], list[dict]]:
    """`fill_value_lines` of the raster's `bands`, and the keyword arguments of each read it
    made."""
    reads = []
    with rasterio.open(path) as dataset:
        real = dataset.read

        def read(*args, **kwargs):
            reads.append(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(dataset, "read", read)
        lines = fill_value_lines(dataset, path, list(bands), "--source-nodata")
    return lines, reads


def _share(line: str) -> float:
    """The share (in %) a warning gives."""
    return float(line.split(" but ")[1].split(" % ")[0])


@pytest.mark.parametrize("tiled", [True, False])
def test_a_large_raster_s_void_is_warned_of_reading_a_bounded_sample(tmp_path, monkeypatch,
                                                                     tiled):
    path = _large(tmp_path / "reflectance.tif", corner=2600, tiled=tiled)  # 10.07 %
    lines, reads = _lines_and_reads(path, monkeypatch)
    assert len(lines) == 1 and "are 65535, a common fill value" in lines[0]
    assert 8 <= _share(lines[0]) <= 12  # a fair estimate of 10.07 %
    if not tiled:  # a window would decode its rows' strips whole: one decimated read, as cheap
        assert len(reads) == 1 and max(reads[0]["out_shape"][1:]) <= nodata.SAMPLE_SIDE
        return
    assert reads and all(isinstance(r.get("window"), Window) for r in reads)  # none whole
    windows = [r["window"] for r in reads]
    read = sum(w.width * w.height for w in windows)
    assert read <= (nodata.SAMPLE_WINDOWS * nodata.SAMPLE_WINDOW) ** 2 < BIG * BIG // 200
    assert max(w.width * w.height for w in windows) <= nodata.SAMPLE_WINDOW ** 2
    for w in windows:  # each decodes one tile
        assert w.row_off // TILE == (w.row_off + w.height - 1) // TILE
        assert w.col_off // TILE == (w.col_off + w.width - 1) // TILE
    spread = {(w.row_off * 4 // BIG, w.col_off * 4 // BIG) for w in windows}
    assert len(spread) == 16  # every quarter of the rows by every quarter of the columns


@pytest.mark.parametrize("tiled", [True, False])
def test_a_frame_of_fill_values_along_the_edges_is_warned_of(tmp_path, monkeypatch, tiled):
    """A frame left by a reprojection or a clip, 230 px wide (10.9 % of the pixels): the sample
    reaches the edges (windows spread over the middles of 16 parts read none of it)."""
    path = _large(tmp_path / "framed.tif", corner=0, frame=230, tiled=tiled)
    share = 100 * (1 - (BIG - 2 * 230) ** 2 / BIG ** 2)
    lines, _ = _lines_and_reads(path, monkeypatch)
    assert len(lines) == 1 and "are 65535, a common fill value" in lines[0]
    assert share * 0.6 <= _share(lines[0]) <= share * 1.6, (share, lines[0])


def test_a_float_dem_s_void_corner_is_warned_of(tmp_path, monkeypatch):
    path = _large(tmp_path / "dem.tif", corner=2600, fill=-9999, dtype="float32")
    lines, reads = _lines_and_reads(path, monkeypatch)
    assert len(lines) == 1 and "are -9999, a common fill value" in lines[0]
    assert 8 <= _share(lines[0]) <= 12
    assert all(isinstance(r.get("window"), Window) for r in reads)


def test_a_fill_value_in_under_the_share_warned_of_is_not_warned_of(tmp_path, monkeypatch):
    corner = 512  # 0.39 % of the pixels: the top-left window of the sample lies inside it
    path = _large(tmp_path / "few.tif", corner=corner)
    assert corner * corner / BIG ** 2 < nodata.FILL_SHARE
    lines, reads = _lines_and_reads(path, monkeypatch)
    assert lines == []
    assert any(r["window"].row_off < corner and r["window"].col_off < corner for r in reads)


def test_a_large_raster_with_overviews_is_read_once_decimated(tmp_path, monkeypatch):
    path = _large(tmp_path / "overviews.tif", corner=2600)
    with rasterio.open(path, "r+") as dataset:
        dataset.build_overviews([4, 16], Resampling.nearest)
    lines, reads = _lines_and_reads(path, monkeypatch)
    assert len(lines) == 1 and "are 65535, a common fill value" in lines[0]
    assert len(reads) == 1 and reads[0].get("window") is None
    assert reads[0]["out_shape"] == (1, nodata.SAMPLE_SIDE, nodata.SAMPLE_SIDE)


def test_an_overview_too_fine_to_save_reads_is_passed_over_for_windows(tmp_path, monkeypatch):
    """A 2x overview alone: the decimated read would decode it whole, a quarter of the file's
    pixels (16.8 million here); the windows decode a tile of 128 x 128 each (4.2 million)."""
    path = _large(tmp_path / "fine.tif", corner=2600, tile=128)
    with rasterio.open(path, "r+") as dataset:
        dataset.build_overviews([2], Resampling.nearest)
    lines, reads = _lines_and_reads(path, monkeypatch)
    assert len(lines) == 1 and 8 <= _share(lines[0]) <= 12
    assert reads and all(isinstance(r.get("window"), Window) for r in reads)


@pytest.mark.parametrize("factor", [16, 18])
def test_an_overview_gdal_reads_for_the_sample_is_read_once(tmp_path, monkeypatch, factor):
    """An overview as coarse as the sample asks (16x of 8192 px), or a little coarser, which
    GDAL takes all the same for a nearest read (up to 1.2x): one decimated read of it."""
    path = _large(tmp_path / "coarse.tif", corner=2600)
    with rasterio.open(path, "r+") as dataset:
        dataset.build_overviews([factor], Resampling.nearest)
    lines, reads = _lines_and_reads(path, monkeypatch)
    assert len(lines) == 1 and 8 <= _share(lines[0]) <= 12
    assert len(reads) == 1 and reads[0].get("window") is None


def test_a_tiled_raster_just_over_the_sample_side_is_read_once(tmp_path, monkeypatch):
    """1000 x 1000 pixels, tiled, no overviews: decoding it whole is cheap, one read instead of
    a grid of 256 windows."""
    data = np.full((1, 1000, 1000), 300, "uint16")
    data[0, :100] = 65535
    path = write_raster(tmp_path / "tiled.tif", data, tiled=True, blockxsize=256,
                        blockysize=256)
    lines, reads = _lines_and_reads(path, monkeypatch)
    assert len(lines) == 1 and 8 <= _share(lines[0]) <= 12
    assert len(reads) == 1 and reads[0].get("window") is None


def _decimated(dataset, bands):
    """The sample as it was before windows: the raster decimated to SAMPLE_SIDE a side."""
    step = max(1, math.ceil(max(dataset.height, dataset.width) / nodata.SAMPLE_SIDE))
    shape = (len(bands), max(1, dataset.height // step), max(1, dataset.width // step))
    return dataset.read(list(bands), out_shape=shape, resampling=Resampling.nearest)


@pytest.mark.parametrize("rows, cols, dtype, fill", [
    (128, 128, "uint16", 65535), (512, 300, "int16", -32768), (512, 512, "float32", -9999),
    (200, 512, "uint16", 0),
])
def test_a_small_raster_is_warned_of_as_before(tmp_path, monkeypatch, rows, cols, dtype, fill):
    data = np.full((2, rows, cols), 300, dtype)
    top = rows // 40 + 1  # band 1's first rows (over 2.5 %), 10 pixels of band 2's next: the
    data[0, :top, :] = fill  # pixels either band holds the value at
    data[1, top, :10] = fill
    path = write_raster(tmp_path / "small.tif", data, tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path) as dataset:
        now = fill_value_lines(dataset, path, [1, 2], "--target-nodata")
        monkeypatch.setattr(nodata, "sample_pixels", _decimated)
        before = fill_value_lines(dataset, path, [1, 2], "--target-nodata")
    assert now == before and len(now) == 1
    assert _share(now[0]) == float(f"{100 * (top * cols + 10) / (rows * cols):.3g}")


def _stacked(path: Path, source: Path, overview: Path) -> Path:
    """A VRT of two bands, each band 1 of `source`, the first with `overview` as its own (a VRT
    may give each band its overviews; a GeoTIFF's cover every band)."""
    with rasterio.open(source) as first:
        size = first.width
        transform = ", ".join(map(repr, first.transform.to_gdal()))
    with rasterio.open(overview) as small:
        small_size = small.width

    def band(i: int) -> str:
        extra = (f'<Overview><SourceFilename relativeToVRT="0">{overview}</SourceFilename>'
                 "<SourceBand>1</SourceBand></Overview>") if i == 1 else ""
        return (f'<VRTRasterBand dataType="UInt16" band="{i}"><SimpleSource>'
                f'<SourceFilename relativeToVRT="0">{source}</SourceFilename>'
                f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="{size}" '
                f'ySize="{size}"/><DstRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>'
                f"</SimpleSource>{extra}</VRTRasterBand>")

    path.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><GeoTransform>'
                    f"{transform}</GeoTransform>{band(1)}{band(2)}</VRTDataset>")
    assert small_size * 16 == size
    return path


def test_a_band_without_overviews_is_not_read_decimated_for_a_first_band_with_them(
        tmp_path, monkeypatch):
    """A VRT whose first band has a 16x overview and whose second has none: the decimated read
    would decode the second band's file whole, so the sample reads windows (the first band's
    overviews used to stand for every band's); the first band alone is read decimated."""
    plain = _large(tmp_path / "plain.tif", corner=2600)
    with rasterio.open(plain) as src:
        small = src.read(1, out_shape=(BIG // 16, BIG // 16), resampling=Resampling.nearest)
    vrt = _stacked(tmp_path / "stack.vrt", plain,
                   write_raster(tmp_path / "small.tif", small, crs="EPSG:32633"))
    with rasterio.open(vrt) as dataset:
        assert (dataset.overviews(1), dataset.overviews(2)) == ([16], [])
    for bands, windowed in (([1], False), ([1, 2], True), ([2], True)):
        lines, reads = _lines_and_reads(vrt, monkeypatch, bands)
        assert len(lines) == 1 and 8 <= _share(lines[0]) <= 12
        assert all(isinstance(r.get("window"), Window) for r in reads) is windowed, bands
