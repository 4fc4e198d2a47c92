"""export-chips' validity masks (issue 20): --target-mask / --source-mask on another grid and CRS,
--mask-values codes, a 0/1 mask, --pairs CSV columns; masked pixels are invalid in their side's
chip exactly like nodata (the same chips, statistics and counts; values under the mask change
nothing); bad masks are one line and exit 2."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import write_raster
from rasterio.warp import Resampling, calculate_default_transform, reproject

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.training.losses import masked_l1

SIZE, CHIP = 128, 32
ORIGIN = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
NODATA = -9999.0


def pair_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    source = rng.normal(size=(SIZE, SIZE)).astype(np.float32)
    return source, (2 * source + 1).astype(np.float32)


def holes() -> np.ndarray:
    """A 'cloud': a blob over a few chips, and a stripe over the left half of row 3 of chips."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    blob = (rows - 40) ** 2 + (cols - 50) ** 2 < 18 ** 2
    return blob | ((rows >= 100) & (cols < 64))


def export(source, target, out, **options):
    options.setdefault("max_nodata", 0.5)
    return export_chips(source, target, out, chip_size=CHIP, workers=0, progress=False,
                        **options)


def chip_bytes(out) -> dict[str, bytes]:
    return {f"{side}/{p.name}": p.read_bytes() for side in ("source", "target")
            for p in sorted((out / side).glob("*.tif"))}


def dataset_json(out) -> dict:
    return json.loads((out / "dataset.json").read_text())


def reprojected(data: np.ndarray, crs: str, resolution, path, nodata=None) -> None:
    """`data` (on the source grid) written in `crs` at `resolution`, with nearest."""
    bounds = (ORIGIN.c, ORIGIN.f - 10 * SIZE, ORIGIN.c + 10 * SIZE, ORIGIN.f)
    transform, width, height = calculate_default_transform(
        "EPSG:32633", crs, SIZE, SIZE, *bounds, resolution=resolution)
    out = np.full((height, width), 0 if nodata is None else nodata, data.dtype)
    reproject(data, out, src_transform=ORIGIN, src_crs="EPSG:32633", dst_transform=transform,
              dst_crs=crs, resampling=Resampling.nearest)
    write_raster(path, out, crs=crs, transform=transform, nodata=nodata)


@pytest.fixture(scope="module")
def holed(tmp_path_factory):
    """The pair with the holes as target nodata, exported without a mask: the reference."""
    folder = tmp_path_factory.mktemp("holed")
    source, target = pair_data()
    s = write_raster(folder / "s.tif", source, nodata=NODATA)
    t = write_raster(folder / "t.tif", np.where(holes(), NODATA, target), nodata=NODATA)
    export(s, t, folder / "chips")
    return folder


def test_a_target_mask_is_exactly_like_nodata_and_its_values_change_nothing(holed, tmp_path):
    source, target = pair_data()
    s = write_raster(tmp_path / "s.tif", source, nodata=NODATA)
    mask = write_raster(tmp_path / "mask.tif", holes().astype(np.uint8))
    for name, under in (("a", target), ("b", np.where(holes(), 50.0, target))):  # a cloud
        t = write_raster(tmp_path / f"t{name}.tif", under.astype(np.float32), nodata=NODATA)
        export(s, t, tmp_path / name, target_mask=mask)
        assert chip_bytes(tmp_path / name) == chip_bytes(holed / "chips")
        ours, reference = dataset_json(tmp_path / name), dataset_json(holed / "chips")
        for key in ("source", "target", "counts"):
            assert ours[key] == reference[key]
        assert ours["pairs"][0]["target_mask"] == str(mask.resolve())
        assert ours["options"]["target_mask"] == str(mask.resolve())
    assert reference["counts"]["skipped"]  # the stripe's chips are dropped (more than half)


def test_masked_pixels_are_invalid_in_the_target_chip_alone_and_left_out_of_the_loss(tmp_path):
    source, target = pair_data()
    s = write_raster(tmp_path / "s.tif", source)  # no nodata: the chips carry a mask
    t = write_raster(tmp_path / "t.tif", target)
    write_raster(tmp_path / "mask.tif", holes().astype(np.uint8))
    export(s, t, tmp_path / "chips", target_mask=tmp_path / "mask.tif")
    data = ChipDataset(tmp_path / "chips", split=None, validity_band=True)
    checked = 0
    for item in (data[i] for i in range(len(data))):
        row, col = (int(x[1:]) for x in item["id"].split("_")[-2:])
        expected = torch.from_numpy(~holes()[row:row + CHIP, col:col + CHIP])
        assert torch.equal(item["valid"][0], expected)
        with rasterio.open(tmp_path / "chips" / "source" / f"{item['id']}.tif") as chip:
            assert (chip.read_masks(1) == 255).all()  # the SAR under a cloud is a valid input
            assert np.array_equal(chip.read(1), source[row:row + CHIP, col:col + CHIP])
        with rasterio.open(tmp_path / "chips" / "target" / f"{item['id']}.tif") as chip:
            assert np.array_equal(chip.read_masks(1) == 255, expected.numpy())
        whole = data.source_scaling.forward(source[None, row:row + CHIP, col:col + CHIP],
                                            np.ones((CHIP, CHIP), bool))
        assert torch.equal(item["source"][:1], torch.from_numpy(whole))
        assert (item["source"][1] == 1).all()  # the validity band: the source's own
        cloud = torch.where(expected, item["target"], torch.full_like(item["target"], 9.0))
        prediction = torch.zeros_like(item["target"])
        assert torch.equal(masked_l1(prediction, cloud[None], item["valid"][None]),
                           masked_l1(prediction, item["target"][None], item["valid"][None]))
        checked += int((~expected).any())
    assert checked >= 2


def test_a_mask_on_another_grid_and_crs_is_warped_with_nearest(tmp_path):
    source, target = pair_data()
    s = write_raster(tmp_path / "s.tif", source)
    t = write_raster(tmp_path / "t.tif", target)
    left = np.zeros((SIZE, SIZE), np.uint8)
    left[:, :64] = 1
    reprojected(left, "EPSG:4326", 2e-5, tmp_path / "mask.tif")  # ~2 m pixels, in degrees
    export(s, t, tmp_path / "chips", target_mask=tmp_path / "mask.tif", max_nodata=0.1,
           val_fraction=0)
    chips = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    assert sorted(set(chips.col)) == [64, 96] and len(chips) == 8
    assert (chips.valid_fraction >= 1 - 1 / CHIP).all()
    with rasterio.open(tmp_path / "chips" / "target" / f"{chips.id[0]}.tif") as chip:
        assert chip.crs == "EPSG:32633"  # the chips stay on the source grid


def test_mask_values_mark_codes_invalid_on_a_coarser_grid_and_a_source_mask_too(tmp_path):
    source, target = pair_data()
    s = write_raster(tmp_path / "s.tif", source)
    t = write_raster(tmp_path / "t.tif", target)
    scl = np.full((SIZE // 2, SIZE // 2), 4, np.uint8)  # 20 m pixels: vegetation
    scl[:16, :16] = 9  # cloud high probability over chip (0, 0)
    scl[48:, 48:] = 3  # cloud shadow over chip (96, 96)
    scl[:16, 48:] = 8  # kept: not among the codes given
    write_raster(tmp_path / "scl.tif", scl, transform=ORIGIN @ Affine.scale(2))
    source_mask = np.zeros((SIZE, SIZE), np.uint8)
    source_mask[96:, :32] = 1  # a 0/1 source mask would hold 1 here, but codes are given
    write_raster(tmp_path / "smask.tif", np.where(source_mask == 1, 10, 0).astype(np.uint8))
    assert main(["export-chips", str(s), str(t), "-o", str(tmp_path / "chips"), "-q",
                 "--chip-size", str(CHIP), "--workers", "0", "--target-mask",
                 str(tmp_path / "scl.tif"), "--source-mask", str(tmp_path / "smask.tif"),
                 "--mask-values", "3,9,10"]) == 0
    chips = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    kept = set(zip(chips.row, chips.col))
    dropped = {(0, 0), (96, 96), (96, 0)}
    assert kept == {(r, c) for r in range(0, SIZE, CHIP) for c in range(0, SIZE, CHIP)} - dropped
    assert (chips.valid_fraction == 1).all()


def test_pairs_csv_mask_columns_apply_per_pair(tmp_path):
    source, target = pair_data()
    write_raster(tmp_path / "s.tif", source)
    write_raster(tmp_path / "t.tif", target)
    write_raster(tmp_path / "t2.tif", target)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, :32] = 1
    write_raster(tmp_path / "m.tif", mask)
    (tmp_path / "pairs.csv").write_text("source,target,target_mask\ns.tif,t.tif,m.tif\n"
                                        "s.tif,t2.tif,\n")
    export_chips(pairs=tmp_path / "pairs.csv", out_dir=tmp_path / "chips", chip_size=CHIP,
                 workers=0, progress=False)
    chips = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    assert set(chips[chips.pair == 0].col) == {32, 64, 96}
    assert set(chips[chips.pair == 1].col) == {0, 32, 64, 96}
    pairs = dataset_json(tmp_path / "chips")["pairs"]
    assert pairs[0]["target_mask"] == str((tmp_path / "m.tif").resolve())
    assert "target_mask" not in pairs[1] and "source_mask" not in pairs[0]


@pytest.fixture
def plain(tmp_path):
    source, target = pair_data()
    return write_raster(tmp_path / "s.tif", source), write_raster(tmp_path / "t.tif", target)


def bad_mask(tmp_path, case: str) -> tuple[list[str], str]:
    """The extra arguments of a bad mask case and the start of the line it must give."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    path = tmp_path / "mask.tif"
    if case == "missing":
        return ["--target-mask", str(tmp_path / "none.tif")], f"--target-mask {tmp_path}"
    if case == "far":
        write_raster(path, mask, transform=ORIGIN @ Affine.translation(5000, 0))
        return ["--target-mask", str(path)], f"--target-mask {path} does not overlap the source"
    if case == "no crs":
        write_raster(path, mask, crs=None)
        return ["--source-mask", str(path)], "--source-mask: "
    if case == "code too big":
        write_raster(path, mask)
        return ["--target-mask", str(path), "--mask-values", "3,300"], \
            f"--target-mask {path} holds uint8 values, which cannot be 300 (--mask-values)"
    if case == "fraction":
        write_raster(path, mask)
        return ["--target-mask", str(path), "--mask-values", "2.5"], \
            f"--target-mask {path} holds uint8 values, which cannot be 2.5"
    if case == "bad codes":
        return ["--mask-values", "3,cloud"], "--mask-values 3,cloud: give the mask codes"
    if case == "codes alone":
        return ["--mask-values", "3"], "--mask-values needs a mask: give --target-mask"
    mask[5, 5] = 255  # a GDAL-style 0/255 mask without --mask-values
    write_raster(path, mask)
    return ["--target-mask", str(path)], f"--target-mask {path} holds 255 where a 0/1 mask"


@pytest.mark.parametrize("case", ["missing", "far", "no crs", "code too big", "fraction",
                                  "bad codes", "codes alone", "not 0/1"])
def test_a_bad_mask_is_one_line_and_exit_2(plain, tmp_path, capsys, case):
    extra, message = bad_mask(tmp_path, case)
    out = tmp_path / "chips"
    code = main(["export-chips", str(plain[0]), str(plain[1]), "-o", str(out), "-q",
                 "--chip-size", str(CHIP), "--workers", "0", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message in err
    assert not out.exists()


def test_source_nodata_is_invalid_in_the_source_chip_alone(tmp_path):
    """A source void: the target chip keeps its values there, the source chip and its validity
    band say nodata, the loss leaves the pixel out."""
    source, target = pair_data()
    s = write_raster(tmp_path / "s.tif", np.where(holes(), NODATA, source), nodata=NODATA)
    t = write_raster(tmp_path / "t.tif", target)
    export(s, t, tmp_path / "chips")
    data = ChipDataset(tmp_path / "chips", split=None, validity_band=True)
    voids = 0
    for item in (data[i] for i in range(len(data))):
        row, col = (int(x[1:]) for x in item["id"].split("_")[-2:])
        valid = ~holes()[row:row + CHIP, col:col + CHIP]
        with rasterio.open(tmp_path / "chips" / "target" / f"{item['id']}.tif") as chip:
            assert (chip.read_masks(1) == 255).all()
            assert np.array_equal(chip.read(1), target[row:row + CHIP, col:col + CHIP])
        with rasterio.open(tmp_path / "chips" / "source" / f"{item['id']}.tif") as chip:
            assert chip.nodata == NODATA
            assert np.array_equal(chip.read(1) != NODATA, valid)
        assert torch.equal(item["valid"][0], torch.from_numpy(valid))
        assert torch.equal(item["source"][1], torch.from_numpy(valid.astype(np.float32)))
        voids += int((~valid).any())
    assert voids >= 2


def test_show_chips_shows_each_chip_with_its_own_validity(tmp_path):
    """The source panel keeps the pixels under a target's cloud (the model sees them); the
    target panel is black there."""
    import matplotlib

    matplotlib.use("Agg")
    from geopix2pix.plot import show_chips

    source, target = pair_data()
    s = write_raster(tmp_path / "s.tif", np.abs(source) + 1)  # no pixel renders black
    t = write_raster(tmp_path / "t.tif", np.where(holes(), NODATA, target), nodata=NODATA)
    export(s, t, tmp_path / "chips")
    data = ChipDataset(tmp_path / "chips", split=None)
    clouded = next(i for i in range(len(data)) if not data[i]["valid"].all())
    row, col = (int(x[1:]) for x in data.ids[clouded].split("_")[-2:])
    cloud = holes()[row:row + CHIP, col:col + CHIP]
    figure = show_chips(tmp_path / "chips", n=len(data), split=None)
    panels = {ax.texts[0].get_text(): ax for ax in figure.axes if ax.texts}
    index = figure.axes.index(panels[data.ids[clouded]])
    source_panel = figure.axes[index].images[0].get_array()
    target_panel = figure.axes[index + 1].images[0].get_array()
    assert (source_panel[cloud].max(axis=-1) > 0).mean() > 0.9
    assert (target_panel[cloud] == 0).all()
