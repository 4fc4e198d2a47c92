"""The Python API's options are checked as the command line's are: a wrong name or a value of
the wrong type is one GeoPix2PixError naming it, before any work."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_raster
from predict_helpers import write_scene

import geopix2pix as g
from geopix2pix.errors import GeoPix2PixError


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    data = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    return write_raster(folder / "s.tif", data), write_raster(folder / "t.tif", data[:1])


@pytest.mark.parametrize("options, message", [
    (dict(source_bands=1), "source_bands=1: expected a list of integers or None"),
    (dict(source_bands="1"), "source_bands='1': expected a list of integers or None"),
    (dict(chip_size="64"), "chip_size='64': expected an integer"),
    (dict(max_nodata="0.1"), "max_nodata='0.1': expected a number"),
    (dict(overwrite="yes"), "overwrite='yes': expected True or False"),
])
def test_export_options_of_the_wrong_type_are_one_line(pair, tmp_path, options, message):
    with pytest.raises(GeoPix2PixError) as caught:
        g.export_chips(*pair, tmp_path / "chips", progress=False, **options)
    assert str(caught.value) == message
    assert not (tmp_path / "chips").exists()


@pytest.mark.parametrize("options, message", [
    (dict(overlap="0.5"), "overlap='0.5': expected a number"),
    (dict(bands=1), "bands=1: expected a list of integers or None"),
    (dict(creation_options=["ZLEVEL=1"]),
     "creation_options=['ZLEVEL=1']: expected a dict of strings to strings"),
    (dict(co={"ZLEVEL": "1"}), "unknown predict option(s): co; valid: allow_no_crs, bands, "),
    (dict(device="gpu"), "--device gpu: use auto, cpu, cuda or cuda:N"),
    (dict(device="mps"), "--device mps: use auto, cpu, cuda or cuda:N"),
])
def test_predict_options_of_the_wrong_type_or_name_are_one_line(tmp_path, model_file, options,
                                                                 message):
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    with pytest.raises(GeoPix2PixError) as caught:
        g.predict(scene, tmp_path / "o.tif", model=model_file, progress=False, **options)
    assert str(caught.value).startswith(message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_train_options_of_the_wrong_type_are_one_line(tmp_path):
    with pytest.raises(GeoPix2PixError, match=r"^max_steps='4': expected an integer or None$"):
        g.train(tmp_path / "chips", tmp_path / "run", max_steps="4")
    with pytest.raises(GeoPix2PixError, match=r"^lr='1e-3': expected a number$"):
        g.train(tmp_path / "chips", tmp_path / "run", lr="1e-3")
    assert not (tmp_path / "run").exists()
    from geopix2pix.training import TrainConfig

    assert TrainConfig.from_options(epochs=None, max_steps=None).epochs == 100  # None: default


@pytest.mark.parametrize("options, message", [
    (dict(block=0), "block=0: expected a block size of at least 1 pixel"),
    (dict(block="512"), "block='512': expected an integer"),
    (dict(categorical="yes"), "categorical='yes': expected True or False"),
])
def test_evaluate_options_of_the_wrong_type_or_value_are_one_line(pair, options, message):
    with pytest.raises(GeoPix2PixError) as caught:
        g.evaluate(pair[1], pair[1], **options)
    assert str(caught.value) == message


def test_numbers_of_any_kind_and_tuples_are_accepted(pair, tmp_path):
    summary = g.export_chips(*pair, tmp_path / "chips", chip_size=np.int64(32),
                             source_bands=(1, 2), max_nodata=np.float32(0.5), progress=False)
    assert summary.kept["train"] + summary.kept.get("val", 0) > 0
