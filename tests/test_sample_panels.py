"""What the pictures show where only one side is invalid: each panel of samples/*.png, of
`show_results` and of the demo's quicklook is black where its own raster is invalid, not where
the other one is (a cloud mask on the target must not blank the input the model still sees)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_raster
from PIL import Image

from geopix2pix import GeoPix2PixError, export_chips, train, write_quicklook
from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.raster.render import GAP
from geopix2pix.training.data import augment_batch

SIZE, CHIP = 128, 32
STRIPES = slice(0, None, 8)  # every 8th column of the target is nodata (chips start on them)


@pytest.fixture(scope="module")
def striped_chips(tmp_path_factory):
    """A source valid everywhere and a target with a nodata stripe every 8 columns."""
    folder = tmp_path_factory.mktemp("striped")
    rng = np.random.default_rng(0)
    source = rng.integers(60, 200, (3, SIZE, SIZE)).astype(np.uint8)
    target = (255 - source).astype(np.uint8)
    target[:, :, STRIPES] = 0
    write_raster(folder / "source.tif", source)
    write_raster(folder / "target.tif", target, nodata=0)
    export_chips(folder / "source.tif", folder / "target.tif", folder / "chips", chip_size=CHIP,
                 stride=CHIP, max_nodata=0.5, split_block=64, progress=False)
    return folder / "chips"


def panel(image: np.ndarray, row: int, column: int) -> np.ndarray:
    """The (CHIP, CHIP, 3) panel `column` (0 input, 1 prediction, 2 target) of sample `row`."""
    top, left = row * (CHIP + GAP), column * (CHIP + GAP)
    return image[top:top + CHIP, left:left + CHIP]


def test_a_paired_item_holds_each_sides_validity_and_augments_them_alike(striped_chips):
    dataset = ChipDataset(striped_chips, "train")
    item = dataset[0]
    assert item["source_valid"].all()
    assert not item["target_valid"][0, :, STRIPES].any() and item["target_valid"][0, :, 1].all()
    assert torch.equal(item["valid"], item["source_valid"] & item["target_valid"])
    batch = {key: torch.stack([dataset[i][key] for i in range(4)])
             for key in ("source", "target", "valid", "source_valid", "target_valid")}
    moved = augment_batch(batch, "d4", seed=3, step=1)
    assert not torch.equal(moved["target_valid"], batch["target_valid"])  # some chip turned
    for key in ("valid", "target_valid"):  # the masks travel with the target's zeros
        assert torch.equal(moved["target"].eq(0).all(1, keepdim=True) | moved[key],
                           torch.ones_like(moved[key]))
    assert torch.equal(moved["valid"], moved["source_valid"] & moved["target_valid"])


def test_training_samples_blank_only_the_target_where_the_target_is_invalid(striped_chips,
                                                                            tmp_path):
    # the linear start predicts this target (255 - source) at once: a prediction to look at
    result = train(striped_chips, tmp_path / "run", max_steps=2, ngf=8, ndf=8, batch_size=2,
                   workers=0, quiet=True, residual="linear")
    image = np.asarray(Image.open(result.run_dir / "samples" / "epoch_001.png").convert("RGB"))
    for column in (0, 1):  # the input and the prediction: the source is valid everywhere
        stripes = panel(image, 0, column)[:, STRIPES]
        assert stripes.max(axis=2).mean() > 20, column
    target = panel(image, 0, 2)
    assert (target[:, STRIPES] == 0).all()
    assert target[:, 1::8].max(axis=2).mean() > 20


def test_training_samples_show_the_truth_where_only_the_input_is_invalid(tmp_path):
    """The other side (a reviewer's find): beyond a SAR swath the target panel shows the
    target, not a flat fill, while the input and the prediction are blank there."""
    rng = np.random.default_rng(2)
    source = rng.integers(60, 200, (3, SIZE, SIZE)).astype(np.uint8)
    target = (255 - source).astype(np.uint8)
    source[:, :, STRIPES] = 0
    write_raster(tmp_path / "source.tif", source, nodata=0)
    write_raster(tmp_path / "target.tif", target)
    export_chips(tmp_path / "source.tif", tmp_path / "target.tif", tmp_path / "chips",
                 chip_size=CHIP, stride=CHIP, max_nodata=0.5, split_block=64, progress=False)
    item = ChipDataset(tmp_path / "chips", "val")[0]
    assert item["target_valid"].all() and not item["source_valid"][0, :, STRIPES].any()
    assert not (item["target"][:, :, STRIPES] == 0).all()  # the target's own values
    result = train(tmp_path / "chips", tmp_path / "run", max_steps=2, ngf=8, ndf=8, batch_size=2,
                   workers=0, quiet=True, residual="linear")
    image = np.asarray(Image.open(result.run_dir / "samples" / "epoch_001.png").convert("RGB"))
    for column in (0, 1):
        assert (panel(image, 0, column)[:, STRIPES] == 0).all(), column
    truth = panel(image, 0, 2)[:, STRIPES].astype(float)
    assert truth.max(axis=2).mean() > 20 and truth.std() > 10  # the target, not one grey

def test_the_quicklook_shows_the_truth_where_the_input_is_missing(tmp_path):
    rng = np.random.default_rng(1)
    source = rng.normal(-10, 2, (2, 64, 64)).astype(np.float32)
    source[:, :, :16] = np.nan  # beyond the SAR swath
    prediction = rng.integers(1, 255, (3, 64, 64)).astype(np.uint8)
    prediction[:, :, :16] = 0
    truth = rng.integers(1, 255, (3, 64, 64)).astype(np.uint8)
    paths = [write_raster(tmp_path / f"{name}.tif", data, nodata=nodata) for name, data, nodata
             in (("sar", source, float("nan")), ("pred", prediction, 0), ("truth", truth, None))]
    image = np.asarray(Image.open(write_quicklook(*paths, tmp_path / "quicklook.png")))
    left = [image[:, k * (64 + GAP): k * (64 + GAP) + 16] for k in range(3)]
    assert (left[0] == 0).all() and (left[1] == 0).all()
    assert left[2].max(axis=2).mean() > 50  # the truth exists there


def test_a_quicklook_is_replaced_only_with_overwrite_and_needs_one_grid(tmp_path):
    """`geopix2pix.write_quicklook` is public (the notebook draws its own): an existing PNG is
    kept unless `overwrite`, and rasters of other sizes are refused in one line."""
    rng = np.random.default_rng(2)
    paths = [write_raster(tmp_path / f"{name}.tif", rng.integers(1, 255, (3, 32, 32)).astype(
        np.uint8)) for name in ("image", "pred", "truth")]
    out = tmp_path / "quicklook.png"
    out.write_bytes(b"mine")
    with pytest.raises(GeoPix2PixError, match="--overwrite"):
        write_quicklook(*paths, out)
    assert out.read_bytes() == b"mine"
    assert write_quicklook(*paths, str(out), overwrite=True) == out
    assert np.asarray(Image.open(out)).shape == (32, 3 * 32 + 2 * GAP, 3)
    small = write_raster(tmp_path / "small.tif", rng.integers(1, 255, (3, 16, 32)).astype(
        np.uint8))
    with pytest.raises(GeoPix2PixError, match=r"differ in size \(image.tif 32 x 32, pred.tif "
                       r"32 x 32, small.tif 32 x 16\)"):
        write_quicklook(paths[0], paths[1], small, tmp_path / "other.png")
    assert not (tmp_path / "other.png").exists()


def test_nan_values_are_drawn_as_invalid_without_a_warning():
    """A tester's plot_footprints over a float SAR scene with NaN and no nodata tag gave numpy's
    'invalid value encountered in cast'."""
    import warnings

    from geopix2pix.raster.render import render

    chip = np.random.default_rng(0).random((2, 8, 8))
    chip[:, :3] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = render(chip, np.ones((8, 8), bool))
        assert render(np.full((1, 4, 4), np.nan), np.ones((4, 4), bool)).max() == 0
    assert image[:3].max() == 0 and image[3:].max() == 255
