"""The local generator (`--generator local`, issue 22): its zero-sum differences, its
description in model files, a real tiny run that predicts on the scene's exact grid; centre
scaling's fill of voids; and the bench's recipes being docs/train.md's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster

from geopix2pix.chips.export import export_chips
from geopix2pix.chips.scaling import Scaling
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import GeneratorSpec, build_generator, load_model
from geopix2pix.models.local import LocalNet
from geopix2pix.prediction import predict
from geopix2pix.training import TrainingStopped, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(generator="local", ngf=8, local_layers=2, batch_size=2, workers=0, quiet=True,
            device="cpu", samples=0, lr=1e-3, gan_warmup=1.0)


def test_a_fresh_local_generator_answers_differences_not_levels():
    """Its values path starts at zero and its 3x3 kernels sum to zero: a window raised by 500
    gives the same output; a slope changes it."""
    torch.manual_seed(0)
    net = LocalNet(1, 1, ngf=8, layers=3).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x + 500.0), net(x), rtol=0, atol=1e-4)
        ramp = torch.arange(16.0).expand(1, 1, 16, 16)
        assert (net(x + ramp) - net(x)).abs().max() > 1e-3
    assert net(torch.randn(1, 1, 13, 7)).shape == (1, 1, 13, 7)  # any size


def test_spec_describes_layers_for_the_local_generator_only():
    local = GeneratorSpec("local", 2, 3, 64, ngf=8, layers=4)
    assert local.to_dict()["layers"] == 4
    assert GeneratorSpec.from_dict(local.to_dict()) == local
    assert "layers" not in GeneratorSpec("unet", 2, 3, 64).to_dict()  # U-Net files unchanged
    convs = [m for m in build_generator(local).modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (1, 1), (1, 1), (1, 1), (1, 1)]
    with pytest.raises(ValueError, match="2 to 32 layers"):
        build_generator(GeneratorSpec("local", 2, 3, 64, layers=1))


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("local")
    y, x = np.mgrid[0:64, 0:96]
    dem = (300 + 40 * np.sin(x / 6.0) + 25 * np.cos(y / 4.0)).astype("float32")
    shade = np.clip(128 + 20 * np.gradient(dem, axis=1), 1, 255).astype("uint8")
    export_chips(write_raster(folder / "dem.tif", dem), write_raster(folder / "shade.tif", shade),
                 folder / "chips", chip_size=32, stride=16, val_fraction=0.25, seed=1,
                 workers=1, progress=False, source_scaling="centre")
    return folder


def test_local_generator_trains_saves_and_predicts_on_the_scenes_grid(scene, tmp_path):
    result = train(scene / "chips", tmp_path / "run", max_steps=3, **TINY)
    model = load_model(result.best_model_path)
    assert model.spec.name == "local" and model.spec.layers == 2
    predict(scene / "dem.tif", tmp_path / "pred.tif", model=result.model_path, progress=False,
            device="cpu")
    with rasterio.open(scene / "dem.tif") as src, rasterio.open(tmp_path / "pred.tif") as pred:
        assert (pred.transform, pred.crs, pred.shape) == (src.transform, src.crs, src.shape)
        assert pred.dtypes[0] == "uint8"


def test_local_layers_out_of_range_or_without_the_local_generator_are_refused(scene, tmp_path):
    with pytest.raises(GeoPix2PixError, match="^--local-layers 1: the local generator takes 2 "
                                              "to 32 layers$"):
        train(scene / "chips", tmp_path / "run", max_steps=1, **{**TINY, "local_layers": 1})
    with pytest.raises(GeoPix2PixError, match="^--local-layers is for --generator local, not "
                                              "unet: drop it$"):
        train(scene / "chips", tmp_path / "run", max_steps=1,
              **{**TINY, "generator": "unet", "local_layers": 4})
    # 3, the value every run records for its generator, is refused too when given
    with pytest.raises(GeoPix2PixError, match="^--local-layers is for --generator local, not "
                                              "unet: drop it$"):
        train(scene / "chips", tmp_path / "run", max_steps=1,
              **{**TINY, "generator": "unet", "local_layers": 3})
    with pytest.raises(GeoPix2PixError, match="^--local-layers is for --generator local, not "
                                              "resnet_6blocks: drop it$"):
        train(scene / "chips", tmp_path / "run", max_steps=1, model="cyclegan",
              **{**TINY, "generator": "resnet_6blocks", "local_layers": 3, "lr": None,
                 "gan_warmup": None})
    assert not (tmp_path / "run").exists()


def test_local_layers_given_on_resuming_another_generator_is_refused(scene, tmp_path):
    """A U-Net run records local_layers 3 as every run does; typing --local-layers 3 on its
    resume is refused as on a new run, and the resume without it goes on."""
    unet = {**TINY, "generator": "unet", "local_layers": None}
    with pytest.raises(TrainingStopped):
        train(scene / "chips", tmp_path / "run", max_steps=2, callback=lambda info: True, **unet)
    with pytest.raises(GeoPix2PixError, match="^--local-layers is for --generator local, not "
                                              "unet: drop it$"):
        train(scene / "chips", tmp_path / "run", resume=True, local_layers=3, quiet=True)
    assert train(scene / "chips", tmp_path / "run", resume=True, quiet=True).steps == 2


def test_centre_scaling_fills_a_void_from_its_neighbours():
    """A tilted plane with a void: the void is filled near the plane (no cliff down to the
    mean at its edge), valid pixels scale as before, a window without a valid pixel is 0."""
    y, x = np.mgrid[0:16, 0:16]
    plane = (1000.0 + 3.0 * x + 2.0 * y)[None]
    valid = np.ones((16, 16), bool)
    valid[6:9, 5:10] = False
    data = np.where(valid, plane, -9999.0)
    scaling = Scaling("centre", (-50.0,), (50.0,), 8.0)
    scaled = scaling.forward(data, valid)
    mean = plane[0][valid].mean()
    np.testing.assert_allclose(scaled[0][valid], ((plane[0] - mean) / 50.0)[valid], atol=1e-6)
    truth = (plane[0] - mean) / 50.0
    assert np.abs(scaled[0][~valid] - truth[~valid]).max() < 0.2  # 0-fill was off by up to 0.4
    assert not scaling.forward(data, np.zeros((16, 16), bool)).any()


def _bench():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "tools" /
                                                  "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_bench_runs_the_recipes_docs_train_md_gives():
    bench = _bench()
    docs = (ROOT / "docs" / "train.md").read_text()
    lines = [line for case in bench.CASES.values() for line in bench.recipe(case)]
    assert len(lines) == 2 * len(bench.CASES) == 8
    for line in lines:
        assert line in docs, line
