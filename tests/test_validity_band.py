"""`train --validity-band` (issue 22): the source's validity as one more input band, the local
generator's differences over valid neighbours only (gdaldem's convention beside a void), the
band in the model file's description, and predict adding it on the scene's exact grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from safetensors import safe_open

from geopix2pix.chips.export import export_chips
from geopix2pix.chips.scaling import with_validity
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import GeneratorSpec, build_generator, load_model
from geopix2pix.models.local import LocalDifferences, LocalNet
from geopix2pix.models.metadata import ModelMetadata
from geopix2pix.prediction import predict
from geopix2pix.training import train

TINY = dict(generator="local", ngf=8, local_layers=3, batch_size=2, workers=0, quiet=True,
            device="cpu", samples=1, lr=1e-3, gan_warmup=1.0, validity_band=True)
NODATA = -9999.0


def _gdaldem_differences(layer: LocalDifferences, z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The layer's differences as gdaldem takes them: each pixel's 3x3 patch (reflected past the
    edges) with every invalid neighbour replaced by the centre pixel's value, through the
    zero-sum kernels; (out, rows, cols) for z (bands, rows, cols)."""
    kernel = layer.differences.weight.detach()
    kernel = (kernel - kernel.mean((2, 3), keepdim=True)).numpy()
    bands, rows, cols = z.shape
    zp = np.pad(z, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    vp = np.pad(valid, 1, mode="reflect")
    out = np.zeros((kernel.shape[0], rows, cols))
    for r in range(rows):
        for c in range(cols):
            patch = np.where(vp[r:r + 3, c:c + 3], zp[:, r:r + 3, c:c + 3], z[:, r:r + 1, c:c + 1])
            mask = vp[r:r + 3, c:c + 3].astype(float)[None]
            out[:, r, c] = (np.einsum("obij,bij->o", kernel[:, :bands], patch)
                            + np.einsum("obij,bij->o", kernel[:, bands:], mask))
    return out + layer.differences.bias.detach().numpy()[:, None, None]


def test_local_differences_take_a_void_neighbour_at_the_centre_value_as_gdaldem_does():
    torch.manual_seed(0)
    layer = LocalDifferences(3, 5, validity=True)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 9, 11))
    valid = rng.random((9, 11)) > 0.3
    x = torch.from_numpy(with_validity(z.astype("float32"), valid))[None]
    with torch.no_grad():
        got = layer(x)[0] - layer.values(x)[0]
    np.testing.assert_allclose(got.numpy(), _gdaldem_differences(layer, z, valid), atol=1e-5)


def test_a_void_value_never_reaches_its_valid_neighbours():
    """Whatever a void holds (a fill, garbage), the output at every valid pixel is the same;
    without the validity band the fill shows beside the void."""
    torch.manual_seed(0)
    net = LocalNet(2, 1, ngf=8, layers=3, validity=True).eval()
    plain = LocalNet(2, 1, ngf=8, layers=3).eval()
    plain.load_state_dict(net.state_dict())
    z = torch.randn(1, 1, 12, 12)
    valid = torch.ones(1, 1, 12, 12)
    valid[..., 4:7, 5:8] = 0
    other = torch.where(valid > 0, z, torch.full_like(z, 40.0))
    with torch.no_grad():
        a, b = net(torch.cat([z, valid], 1)), net(torch.cat([other, valid], 1))
        torch.testing.assert_close(a[valid > 0], b[valid > 0], rtol=0, atol=1e-6)
        leak = plain(torch.cat([z, valid], 1)) - plain(torch.cat([other, valid], 1))
        assert leak.abs().max() > 1e-2
        whole = torch.cat([z, torch.ones_like(valid)], 1)  # all valid: the plain differences
        torch.testing.assert_close(net(whole), plain(whole))


def test_spec_describes_the_validity_band_only_when_set():
    spec = GeneratorSpec("local", 3, 1, 64, ngf=8, validity=True)
    assert spec.to_dict()["validity"] is True and spec.source_bands == 2
    assert GeneratorSpec.from_dict(spec.to_dict()) == spec
    assert "validity" not in GeneratorSpec("local", 3, 1, 64).to_dict()  # older files unchanged
    assert GeneratorSpec("unet", 3, 1, 64, validity=True).source_bands == 2
    assert build_generator(GeneratorSpec("unet", 3, 1, 64, validity=True))(
        torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="validity must be true or false"):
        GeneratorSpec("local", 3, 1, 64, validity="yes")
    with pytest.raises(ValueError, match="in_channels must be at least 2"):
        GeneratorSpec("local", 1, 1, 64, validity=True)


@pytest.fixture(scope="module")
def dem_scene(tmp_path_factory) -> Path:
    """A DEM with voids (nodata -9999) and its shade, exported with percentile scaling (pixel-wise,
    so that a whole-scene forward pass is the reference of predict's)."""
    folder = tmp_path_factory.mktemp("validity")
    y, x = np.mgrid[0:64, 0:96]
    dem = (300 + 40 * np.sin(x / 6.0) + 25 * np.cos(y / 4.0)).astype("float32")
    shade = np.clip(128 + 20 * np.gradient(dem, axis=1), 1, 255).astype("uint8")
    for r, c in ((10, 12), (40, 50), (30, 80)):
        dem[r:r + 3, c:c + 4] = NODATA
    shade[dem == NODATA] = 0
    export_chips(write_raster(folder / "dem.tif", dem, nodata=NODATA),
                 write_raster(folder / "shade.tif", shade, nodata=0), folder / "chips",
                 chip_size=32, stride=16, val_fraction=0.25, seed=1, workers=1, progress=False)
    return folder


@pytest.fixture(scope="module")
def validity_run(dem_scene, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("validity_run") / "run"
    train(dem_scene / "chips", run, max_steps=4, **TINY)
    return run


def test_a_validity_band_run_writes_its_band_into_the_model_file(validity_run):
    model = load_model(validity_run / "model.safetensors")
    assert model.spec.validity and model.spec.in_channels == 2 and model.spec.source_bands == 1
    with safe_open(validity_run / "model.safetensors", "pt") as f:
        meta = json.loads(f.metadata()["geopix2pix"])
    assert meta["generator"]["validity"] is True and meta["training"]["validity_band"] is True
    assert len(meta["source"]["bands"]) == 1
    assert len(meta["baselines"]["linear"]["weight"]) == 1  # the source band's alone
    assert len(meta["baselines"]["linear"]["weight"][0]) == 1
    assert list((validity_run / "samples").glob("*.png"))


def test_predict_adds_the_validity_band_on_the_scenes_exact_grid(dem_scene, validity_run,
                                                                 tmp_path):
    """The output equals the generator run on the whole scene with its validity band (away from
    the scene's edge, where windows are padded), on the scene's grid, nodata at the voids."""
    out = tmp_path / "pred.tif"
    predict(dem_scene / "dem.tif", out, model=validity_run / "model.safetensors",
            progress=False, device="cpu", blend="none")
    model = load_model(validity_run / "model.safetensors")
    meta = ModelMetadata.of(model)
    with rasterio.open(dem_scene / "dem.tif") as src, rasterio.open(out) as pred:
        assert (pred.transform, pred.crs, pred.shape) == (src.transform, src.crs, src.shape)
        assert (pred.dtypes[0], pred.nodata) == ("uint8", 0.0)
        dem, got = src.read(), pred.read(1)
    valid = dem[0] != NODATA
    x = with_validity(meta.source.scaling.forward(dem, valid), valid)
    with torch.no_grad():
        scaled = model.generator(torch.from_numpy(x)[None])[0].numpy()
    want = np.clip(np.rint(meta.target.scaling.inverse(scaled)[0]), 1, 255)
    inner = np.zeros_like(valid)
    inner[1:-1, 1:-1] = True
    assert (got[~valid] == 0).all()
    np.testing.assert_allclose(got[valid & inner], want[valid & inner], atol=1)


def test_predict_baseline_linear_of_a_validity_band_model(dem_scene, validity_run, tmp_path):
    predict(dem_scene / "dem.tif", tmp_path / "linear.tif",
            model=validity_run / "model.safetensors", baseline="linear", progress=False,
            device="cpu")
    with rasterio.open(tmp_path / "linear.tif") as pred:
        assert pred.shape == (64, 96) and pred.read(1)[pred.read_masks(1) > 0].std() > 0


def test_residual_over_linear_with_a_validity_band_starts_at_the_linear_map(dem_scene, tmp_path):
    run = tmp_path / "run"
    train(dem_scene / "chips", run, max_steps=1, residual="linear", **{**TINY, "lr": 1e-12})
    predict(dem_scene / "dem.tif", tmp_path / "model.tif", model=run / "model.safetensors",
            progress=False, device="cpu")
    predict(dem_scene / "dem.tif", tmp_path / "linear.tif", model=run / "model.safetensors",
            baseline="linear", progress=False, device="cpu")
    with rasterio.open(tmp_path / "model.tif") as a, rasterio.open(tmp_path / "linear.tif") as b:
        assert np.abs(a.read(1).astype(int) - b.read(1).astype(int)).max() <= 1


def test_the_validity_band_is_refused_for_cyclegan(dem_scene, tmp_path):
    with pytest.raises(GeoPix2PixError, match="^--validity-band is an option of --model pix2pix"):
        train(dem_scene / "chips", tmp_path / "run", model="cyclegan", validity_band=True,
              max_steps=1, workers=0, quiet=True)



def test_show_results_of_a_validity_band_model_feeds_it_the_band(dem_scene, validity_run):
    """The notebook helpers read chips as training did: with the band (the chip's source
    validity), for the model and its linear baseline alike."""
    pytest.importorskip("matplotlib")
    from geopix2pix.chips.dataset import chip_ids
    from geopix2pix.plot import predict_chips, show_results

    model = load_model(validity_run / "model.safetensors")
    ids = chip_ids(dem_scene / "chips", "val")[:2]
    for _source, pred, target, *_valid in predict_chips(model, dem_scene / "chips", ids):
        assert pred.shape == target.shape == (1, 32, 32) and np.isfinite(pred).all()
    assert show_results(model, dem_scene / "chips", n=2, split="val") is not None
