"""predict's --source-nodata: a model trained on chips of an untagged DEM given its fill value
records that value, and predict reads an untagged scene with the declared value exactly as the
tagged file (one scene, several together, resampled, or read by several threads); an untagged
scene holding a common fill value, or the model's own, is warned of."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from predict_helpers import _spec, metadata
from test_nodata_override import VOID, _dem, _export, _fill_warning, _pair

import geopix2pix as g
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import build_generator as build
from geopix2pix.models import init_weights, save_model

TINY = dict(ngf=8, ndf=8, batch_size=4, workers=0, quiet=True, device="cpu")


def _trained(tmp_path_factory) -> Path:
    """A tiny Pix2Pix model of the untagged DEM exported with --source-nodata -9999."""
    folder = tmp_path_factory.mktemp("trained")
    untagged, target = _pair(folder, name="untagged")
    _export(untagged, target, folder / "chips", source_nodata=-9999, val_fraction=0.0)
    with pytest.warns(g.GeoPix2PixWarning, match="no val chips"):
        return g.train(folder / "chips", folder / "run", max_steps=2, **TINY).model_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return _trained(tmp_path_factory)


def test_the_model_records_the_nodata_used_and_predict_masks_the_void_alike(tmp_path, trained,
                                                                            capsys):
    assert g.load_model(trained).metadata["source"]["nodata"] == -9999
    tagged, _ = _pair(tmp_path, nodata=-9999, name="tagged")
    untagged, _ = _pair(tmp_path, name="untagged")
    g.predict(tagged, tmp_path / "a.tif", model=trained, progress=False, device="cpu")
    assert main(["predict", str(untagged), str(tmp_path / "b.tif"), "-m", str(trained), "-q",
                 "--device", "cpu", "--source-nodata", "-9999"]) == 0
    assert "warning" not in capsys.readouterr().err
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert a.nodata == b.nodata == 0 and a.dtypes == b.dtypes == ("uint8",)
        assert np.array_equal(a.read(), b.read())
        invalid = b.read_masks(1) == 0
        assert invalid.sum() == 1200 and invalid[VOID].all()
        assert (b.read(1)[VOID] == 0).all()


def test_predict_warns_of_an_untagged_scene_s_fill_value(tmp_path, trained, capsys):
    untagged, _ = _pair(tmp_path, name="untagged")
    assert main(["predict", str(untagged), str(tmp_path / "c.tif"), "-m", str(trained), "-q",
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().err.splitlines() == [f"warning: {_fill_warning(untagged)}"]
    with rasterio.open(tmp_path / "c.tif") as c:
        assert (c.read_masks(1) == 0).sum() == 0  # the void predicted as if it were ground


def test_predict_warns_of_the_model_s_own_fill_value_and_its_override_wins(tmp_path):
    """A model whose training sources were tagged -1 (no common fill value): an untagged scene
    holding -1 is warned of; --source-nodata gives the scene's nodata whatever the model's."""
    meta = metadata(in_ch=1)
    meta["source"].update(dtype="float32", nodata=-1.0)
    spec = _spec(1, 1, meta, ngf=4)
    torch.manual_seed(0)
    model = tmp_path / "m.safetensors"
    save_model(model, init_weights(build(spec)).eval(), spec, meta)
    dem = _dem()
    dem[VOID] = -1
    scene = write_raster(tmp_path / "scene.tif", dem, transform=rasterio.Affine(
        30.0, 0.0, 500000.0, 0.0, -30.0, 5200000.0))
    warned: list[str] = []
    g.predict(scene, tmp_path / "a.tif", model=model, progress=False, on_warning=warned.append)
    assert [w for w in warned if "nodata" in w] == [_fill_warning(
        scene, value="-1", why="the nodata value of the model's training sources")]
    warned.clear()
    g.predict(scene, tmp_path / "b.tif", model=model, progress=False, on_warning=warned.append,
              source_nodata=-1)
    assert not [w for w in warned if "nodata" in w]
    with rasterio.open(tmp_path / "b.tif") as b:
        assert (b.read_masks(1) == 0).sum() == 1200 and b.nodata == -9999
        assert (b.read(1)[VOID] == -9999).all()
    with pytest.raises(GeoPix2PixError, match="^--source-nodata 1e\\+40: "):
        g.predict(scene, tmp_path / "c.tif", model=model, progress=False, source_nodata=1e40)


def test_scenes_predicted_together_or_resampled_take_the_declared_value(tmp_path, trained):
    """Small scenes predicted in one run (`grouped`) and --resample-to-model (a warped view of
    the scene, reopened in the reader threads) read the declared value as the scene's tag."""
    coarse = rasterio.Affine(20.0, 0.0, 500000.0, 0.0, -20.0, 5200000.0)  # 2x the training's
    for name, transform in (("fine", None), ("coarse", coarse)):
        extra = {} if transform is None else {"transform": transform}
        write_raster(tmp_path / f"{name}_tagged.tif", _dem(), nodata=-9999, **extra)
        write_raster(tmp_path / f"{name}_untagged.tif", _dem(), **extra)
    fine = [tmp_path / "fine_tagged.tif", tmp_path / "fine_untagged.tif"]
    results = g.predict(fine, out_dir=tmp_path / "group", model=trained, progress=False,
                        device="cpu", source_nodata=-9999)
    assert all(r.ok and not r.warnings for r in results)
    for options in ({}, {"resample_to_model": True}):  # outputs *_0.tif, *_1.tif
        for name in ("coarse_tagged", "coarse_untagged"):
            g.predict(tmp_path / f"{name}.tif", tmp_path / f"{name}_{len(options)}.tif",
                      model=trained, progress=False, device="cpu", source_nodata=-9999,
                      on_warning=lambda w: None, **options)
    with rasterio.open(tmp_path / "group" / "fine_tagged.tif") as a, \
            rasterio.open(tmp_path / "group" / "fine_untagged.tif") as b:
        assert np.array_equal(a.read(), b.read()) and (b.read_masks(1) == 0).sum() == 1200
    for suffix in (0, 1):
        with rasterio.open(tmp_path / f"coarse_tagged_{suffix}.tif") as a, \
                rasterio.open(tmp_path / f"coarse_untagged_{suffix}.tif") as b:
            assert np.array_equal(a.read(), b.read())
            assert np.array_equal(a.read_masks(), b.read_masks())
            assert (b.read_masks(1) == 0).sum() == 1200


def test_reader_threads_reopen_the_scene_with_the_declared_value(tmp_path, trained,
                                                                 monkeypatch):
    """On a GPU each strip is read by several threads, each through its own handle on the
    scene (forced here on the CPU): every handle reads the declared value as the tag."""
    from geopix2pix.prediction.engine import reading

    blocks = dict(tiled=True, blockxsize=32, blockysize=32)
    dem = np.tile(_dem(), (1, 2))  # 128 x 256: strips of several blocks
    tagged = write_raster(tmp_path / "tagged.tif", dem, nodata=-9999, **blocks)
    untagged = write_raster(tmp_path / "untagged.tif", dem, **blocks)
    g.predict(tagged, tmp_path / "a.tif", model=trained, progress=False, device="cpu")
    monkeypatch.setenv(reading.WORKERS_VARIABLE, "3")
    g.predict(untagged, tmp_path / "b.tif", model=trained, progress=False, device="cpu",
              source_nodata=-9999)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert np.array_equal(a.read(), b.read())
        assert (b.read_masks(1) == 0).sum() == 2 * 1200
